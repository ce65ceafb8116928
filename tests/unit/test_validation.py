"""Tests of the great-expectations suites (src/mentoring/validation.py).

Each suite runs on a good frame, then on frames broken one way at a time: the failure must be the
expected expectation, and its description must show the offending values and where they are.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from mentoring.config import ConfigError, Params, parse_params
from mentoring.feedback.schema import (
    AreaVerdict,
    FeedbackFile,
    ImageFeedback,
    MiningTasks,
)
from mentoring.validation import (
    SuiteResult,
    ValidationError,
    check_feedback,
    check_manifest,
    feedback_frames,
    manifest_frames,
    manifest_suites,
    run_suites,
    validate_feedback,
)
from tests.factories import T0, area, make_tasks


def _failed(result: SuiteResult) -> set[tuple[str, str | None]]:
    return {(f.expectation, f.column) for f in result.failures}


def _text(result: SuiteResult) -> str:
    return "\n".join(f.description for f in result.failures)


# -- manifest ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def params() -> Params:
    return Params()


@pytest.fixture(scope="module")
def good_manifest() -> pd.DataFrame:
    """8 images per domain, 2 of them defective: a defect rate of 0.25 on both domains."""
    rows = []
    splits = {("original", "train"): 4, ("original", "eval"): 4, ("new", "pool"): 8}
    for (domain, split), n in splits.items():
        for i in range(n):
            j = sum(r["domain"] == domain for r in rows)  # index within the domain
            image_id = f"{domain}-{split}-{i:06d}"
            classes = {0: "scratch", 1: "crack,stain"}.get(j, "")
            rows.append(
                {
                    "image_id": image_id,
                    "path": f"line/{domain}/{split}/images/{image_id}.png",
                    "mask_path": f"line/{domain}/{split}/masks/{image_id}.png",
                    "domain": domain,
                    "split": split,
                    "part_ref": "disc",
                    "width": 128,
                    "height": 128,
                    "channels": 1,
                    "sha256": f"{len(rows):064x}",
                    "defect_classes": classes,
                    "n_defects": len(classes.split(",")) if classes else 0,
                    "n_nuisances": 0,
                }
            )
    df = pd.DataFrame(rows)
    defective = (df["defect_classes"] != "").groupby(df["domain"]).mean().to_dict()
    assert defective == {"new": 0.25, "original": 0.25}
    return df


def test_good_manifest_passes(params: Params, good_manifest: pd.DataFrame) -> None:
    result = check_manifest(params, good_manifest)
    assert result.success, result.report()
    assert result.failures == [] and result.n_failed == 0
    assert result.n_expectations >= 15
    assert set(result.results) == {"manifest", "manifest_classes"}
    assert "passed" in result.report()


def test_classes_frame_has_one_row_per_image_and_class(good_manifest: pd.DataFrame) -> None:
    classes = manifest_frames(good_manifest)["manifest_classes"]
    assert list(classes.columns) == ["image_id", "defect_class"]
    n_listed = sum(len(c.split(",")) for c in good_manifest["defect_classes"] if c)
    assert len(classes) == n_listed == 6
    assert set(classes["defect_class"]) == {"scratch", "crack", "stain"}


def _set(row: int, column: str, value: object) -> Callable[[pd.DataFrame], None]:
    def change(df: pd.DataFrame) -> None:
        df.loc[row, column] = value

    return change


def _duplicate_id(df: pd.DataFrame) -> None:
    df.loc[5, "image_id"] = df.loc[4, "image_id"]


def _all_new_defective(df: pd.DataFrame) -> None:
    df.loc[df["domain"] == "new", "defect_classes"] = "stain"


BROKEN_MANIFESTS = {
    # name: (change, failed expectation, column, texts the description must show)
    "duplicate id": (
        _duplicate_id,
        "expect_column_values_to_be_unique",
        "image_id",
        ["'original-eval-000000'", "path=line/original/eval/images/original-eval-000001.png"],
    ),
    "null id": (
        _set(2, "image_id", None),
        "expect_column_values_to_not_be_null",
        "image_id",
        ["None", "path=line/original/train/images/original-train-000002.png"],
    ),
    "unknown domain": (
        _set(3, "domain", "mars"),
        "expect_column_values_to_be_in_set",
        "domain",
        ["'mars'", "image_id=original-train-000003"],
    ),
    "wrong width": (
        _set(9, "width", 96),
        "expect_column_values_to_be_in_set",
        "width",
        ["96", "image_id=new-pool-000001"],
    ),
    "bad sha": (
        _set(10, "sha256", "ABCDEF"),
        "expect_column_values_to_match_regex",
        "sha256",
        ["'ABCDEF'", "image_id=new-pool-000002"],
    ),
    "uppercase sha": (
        _set(11, "sha256", "F" * 64),
        "expect_column_values_to_match_regex",
        "sha256",
        ["'FFFF", "image_id=new-pool-000003"],
    ),
    "defect rate outside the band": (
        _all_new_defective,
        "expect_column_mean_to_be_between",
        "defective",
        ["domain == 'new'", "observed 1.0", "[0.1, 0.5]"],
    ),
    "unknown class": (
        _set(1, "defect_classes", "crack,blob"),
        "expect_column_values_to_be_in_set",
        "defect_class",
        ["'blob'", "image_id=original-train-000001"],
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN_MANIFESTS))
def test_broken_manifest_reports_the_offending_values(
    params: Params, good_manifest: pd.DataFrame, case: str
) -> None:
    change, expectation, column, texts = BROKEN_MANIFESTS[case]
    df = good_manifest.copy()
    change(df)
    result = check_manifest(params, df)
    assert not result.success
    assert _failed(result) == {(expectation, column)}, result.report()
    (failure,) = result.failures
    for text in texts:
        assert text in failure.description, failure.description
    assert expectation in failure.description and column in failure.description


def test_every_failure_is_reported_at_once(params: Params, good_manifest: pd.DataFrame) -> None:
    df = good_manifest.copy()
    for change, *_ in BROKEN_MANIFESTS.values():
        change(df)
    result = check_manifest(params, df)
    assert _failed(result) == {(e, c) for _, e, c, _ in BROKEN_MANIFESTS.values()}
    report = result.report(Path("results/validate/manifest.json"))
    assert f"{result.n_failed} of {result.n_expectations} expectations" in report
    assert report.count("\n  - ") == result.n_failed
    assert report.endswith("full results: results/validate/manifest.json")


def test_examples_are_capped_by_max_examples(good_manifest: pd.DataFrame) -> None:
    df = good_manifest.assign(width=64)
    params = parse_params({"validate": {"max_examples": 2}})
    (failure,) = check_manifest(params, df).failures
    assert failure.unexpected == [64, 64]
    assert f"{len(df)} of {len(df)} rows unexpected" in failure.description


def test_a_domain_without_images_fails_its_defect_rate(
    params: Params, good_manifest: pd.DataFrame
) -> None:
    df = good_manifest[good_manifest["domain"] == "original"]
    (failure,) = check_manifest(params, df).failures
    assert "domain == 'new'" in failure.description and "observed no rows" in failure.description


def test_per_domain_band_replaces_the_global_one(good_manifest: pd.DataFrame) -> None:
    params = parse_params({"validate": {"defect_rate_by_domain": {"new": [0.5, 1.0]}}})
    (failure,) = check_manifest(params, good_manifest).failures
    assert "'new' in [0.5, 1.0]" in failure.description
    assert "observed 0.25" in failure.description


def test_results_are_json(params: Params, good_manifest: pd.DataFrame) -> None:
    df = good_manifest.assign(height=7)
    data = json.loads(json.dumps(check_manifest(params, df).to_dict()))
    assert data["success"] is False and data["n_failed"] == 1
    assert data["failures"][0]["unexpected"][:1] == [7]
    ge = data["results"]["manifest"]
    assert ge["statistics"]["unsuccessful_expectations"] == 1
    assert {r["expectation_config"]["type"] for r in ge["results"]} >= {
        "expect_column_values_to_be_unique",
        "expect_column_mean_to_be_between",
    }


def test_an_expectation_that_cannot_run_is_a_failure(params: Params) -> None:
    suites = manifest_suites(params)
    frames = {"manifest_classes": pd.DataFrame({"image_id": ["a"]})}  # no defect_class column
    result = run_suites("manifest", frames, {"manifest_classes": suites["manifest_classes"]})
    (failure,) = result.failures
    assert "could not run" in failure.description and "defect_class" in failure.description


def test_validate_params_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"\[validate\].*defect_rate"):
        parse_params({"validate": {"defect_rate": [0.6, 0.2]}})
    with pytest.raises(ConfigError, match=r"\[validate\].*max_examples"):
        parse_params({"validate": {"max_examples": 0}})
    with pytest.raises(ConfigError, match=r"unknown domain\(s\) \['mars'\]"):
        parse_params({"validate": {"defect_rate_by_domain": {"mars": [0.0, 1.0]}}})


# -- feedback ---------------------------------------------------------------------------------


def _tasks(extra_cells: list[tuple[int, int]] | None = None) -> MiningTasks:
    return make_tasks(
        {
            "img-a": [
                area("img-a/scratch/0", "scratch", [(0, 0), (0, 1)]),
                area("img-a/stain/0", "stain", [(3, 3), *(extra_cells or [])]),
            ],
            "img-b": [area("img-b/stain/0", "stain", [(1, 1)])],
        }
    )


MANIFEST_IDS = ["img-a", "img-b", "img-c"]


def _file(*items: ImageFeedback) -> FeedbackFile:
    return FeedbackFile(items=list(items))


def _item(image_id: str, *verdicts: AreaVerdict, healthy: bool | None = None) -> ImageFeedback:
    return ImageFeedback(
        image_id=image_id, operator="op-1", timestamp=T0, healthy=healthy, areas=list(verdicts)
    )


GOOD = _file(
    _item(
        "img-a",
        AreaVerdict(area_id="img-a/scratch/0", verdict="defect"),
        AreaVerdict(area_id="img-a/stain/0", verdict="defect", corrected_class="scratch"),
    ),
    _item("img-b", healthy=True),
)


def test_good_feedback_passes(params: Params) -> None:
    tasks = _tasks()
    result = check_feedback(params, tasks, [(Path("ok.json"), GOOD)], MANIFEST_IDS)
    assert result.success, result.report()
    assert set(result.results) == {"feedback", "feedback_cells"}


def test_feedback_frames(params: Params) -> None:
    frames = feedback_frames(_tasks(), [(Path("fb/ok.json"), GOOD)])
    fb = frames["feedback"]
    assert list(fb["file"]) == ["ok.json"] * 3
    assert list(fb["area_id"].isna()) == [False, False, True]  # the image-level flag's row
    cells = frames["feedback_cells"]
    assert sorted(zip(cells["row"], cells["col"], strict=True)) == [(0, 0), (0, 1), (3, 3)]


def test_no_feedback_passes(params: Params) -> None:
    assert check_feedback(params, _tasks(), [], MANIFEST_IDS).success


def test_bad_verdict_is_reported(params: Params) -> None:
    # the schema rejects it when a file is read; a model built in code bypasses the schema
    bad = AreaVerdict.model_construct(area_id="img-a/scratch/0", verdict="maybe")
    result = check_feedback(params, _tasks(), [(Path("x.json"), _file(_item("img-a", bad)))], [])
    failures = {f.column: f for f in result.failures}
    text = failures["verdict"].description
    assert "'maybe'" in text and "file=x.json" in text and "area_id=img-a/scratch/0" in text


def test_cells_outside_the_grid_are_reported(params: Params) -> None:
    tasks = _tasks(extra_cells=[(4, 1), (2, -1)])
    fb = _file(_item("img-a", AreaVerdict(area_id="img-a/stain/0", verdict="healthy")))
    result = check_feedback(params, tasks, [(Path("x.json"), fb)], MANIFEST_IDS)
    assert _failed(result) == {
        ("expect_column_values_to_be_between", "row"),
        ("expect_column_values_to_be_between", "col"),
    }
    failures = {f.column: f for f in result.failures}
    assert failures["row"].unexpected == [4] and failures["col"].unexpected == [-1]
    assert "[0, 3]" in failures["row"].description
    assert "area_id=img-a/stain/0" in failures["col"].description


def test_unknown_image_is_reported(params: Params) -> None:
    fb = _file(_item("img-z", healthy=True), _item("img-c", healthy=True))
    result = check_feedback(params, _tasks(), [(Path("x.json"), fb)], MANIFEST_IDS)
    failures = {f.title: f for f in result.failures}
    assert set(failures) == {"images are in the mining tasks", "images are in the manifest"}
    tasks_failure = failures["images are in the mining tasks"]
    assert tasks_failure.unexpected == ["img-z", "img-c"]  # img-c: in the manifest, not mined
    assert "'img-z' (file=x.json)" in tasks_failure.description
    assert failures["images are in the manifest"].unexpected == ["img-z"]


def test_image_missing_from_the_manifest_is_reported(params: Params) -> None:
    result = check_feedback(params, _tasks(), [(Path("x.json"), GOOD)], ["img-a"])
    (failure,) = result.failures
    assert failure.title == "images are in the manifest" and failure.unexpected == ["img-b"]


def test_unknown_area_is_reported(params: Params) -> None:
    fb = _file(
        _item(
            "img-a",
            AreaVerdict(area_id="img-a/stain/9", verdict="defect"),  # no such area
            AreaVerdict(area_id="img-b/stain/0", verdict="healthy"),  # another image's area
            AreaVerdict(area_id="img-a/scratch/0", verdict="healthy"),
        )
    )
    result = check_feedback(params, _tasks(), [(Path("x.json"), fb)], MANIFEST_IDS)
    (failure,) = result.failures
    assert failure.expectation == "expect_column_pair_values_to_be_in_set"
    assert failure.column == "image_id, area_id"
    assert failure.unexpected == [["img-a", "img-a/stain/9"], ["img-a", "img-b/stain/0"]]
    assert "['img-a', 'img-a/stain/9'] (file=x.json)" in failure.description


def test_unknown_corrected_class_is_reported(params: Params) -> None:
    av = AreaVerdict(area_id="img-a/scratch/0", verdict="defect", corrected_class="blob")
    result = check_feedback(params, _tasks(), [(Path("x.json"), _file(_item("img-a", av)))], [])
    assert "'blob'" in {f.column: f for f in result.failures}["corrected_class"].description


def test_validate_feedback_writes_results_and_raises(params: Params, tmp_path: Path) -> None:
    out = tmp_path / "mentor" / "validation.json"
    result = validate_feedback(params, _tasks(), [(Path("ok.json"), GOOD)], MANIFEST_IDS, out)
    assert result.success and json.loads(out.read_text())["success"] is True

    fb = _file(_item("img-z", healthy=True))
    with pytest.raises(ValidationError) as exc:
        validate_feedback(params, _tasks(), [(Path("bad.json"), fb)], MANIFEST_IDS, out)
    assert isinstance(exc.value, ValueError)  # the CLI prints ValueErrors as one clear error
    msg = str(exc.value)
    assert msg.startswith("feedback validation failed: 2 of")
    assert "'img-z' (file=bad.json)" in msg and str(out) in msg
    saved = json.loads(out.read_text())
    assert saved["success"] is False and saved["n_failed"] == 2
    assert exc.value.result.n_failed == 2 and exc.value.saved == out
