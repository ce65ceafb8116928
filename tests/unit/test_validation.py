"""Tests of the great-expectations suites (src/mentoring/validation.py).

Each suite runs on a good frame, then on frames broken one way at a time: the failure must be the
expected expectation, and its description must show the offending values and where they are.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mentoring.config import ConfigError, Params, parse_params
from mentoring.data.stats import STATS
from mentoring.feedback.schema import (
    AreaVerdict,
    FeedbackFile,
    ImageFeedback,
    MiningTasks,
)
from mentoring.validation import (
    SuiteResult,
    ValidationError,
    batch_frames,
    check_batch,
    check_drift,
    check_feedback,
    check_manifest,
    check_metrics,
    drift_band,
    feedback_frames,
    manifest_frames,
    manifest_suites,
    metrics_frames,
    run_suites,
    validate_feedback,
    validate_ingested,
    validate_metrics,
    write_data_docs,
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
    assert set(result.results) == {"manifest", "manifest_classes", "manifest_sources"}
    assert "passed" in result.report() and result.warnings == []


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


def _zero_orig_width(df: pd.DataFrame) -> None:
    df["orig_width"] = df["width"]
    df.loc[13, "orig_width"] = 0


def _same_content_twice_in_a_split(df: pd.DataFrame) -> None:
    df.loc[15, "sha256"] = df.loc[14, "sha256"]


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
    "wrong channels": (
        _set(12, "channels", 3),
        "expect_column_values_to_be_in_set",
        "channels",
        ["3 (image_id=new-pool-000004)", "channels is line.channels"],
    ),
    "zero original width": (
        _zero_orig_width,
        "expect_column_values_to_be_between",
        "orig_width",
        ["0 (image_id=new-pool-000005)", "width is > 0"],
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


# -- sources (warning) ------------------------------------------------------------------------


def _ingested(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` as if ingested: each row from its own source object."""
    return df.assign(
        source_uri=[f"s3://line/{i}.tif" for i in df["image_id"]],
        source_sha256=[f"{i + 1000:064x}" for i in range(len(df))],
    )


def test_same_source_content_under_two_keys_is_a_warning(
    params: Params, good_manifest: pd.DataFrame
) -> None:
    df = _ingested(good_manifest)
    df.loc[9, "source_sha256"] = df.loc[8, "source_sha256"]  # a copy uploaded under a new key
    result = check_manifest(params, df)
    assert result.success and result.failures == []
    (warning,) = result.warnings
    assert warning.expectation == "expect_column_values_to_be_unique"
    assert warning.column == "source_sha256"
    text = warning.description
    assert "source_uri=s3://line/new-pool-000000.tif" in text
    assert "source_uri=s3://line/new-pool-000001.tif" in text
    assert "1 warning(s)" in result.report() and "! warning:" in result.report()
    saved = json.loads(json.dumps(result.to_dict()))
    assert saved["success"] is True and saved["n_warnings"] == 1


def test_the_same_content_twice_in_a_split_is_a_warning_not_a_failure(
    params: Params, good_manifest: pd.DataFrame
) -> None:
    """An exact copy under two names (or two identical blank tiles) is kept, with a warning:
    as a failure it blocked validate and every later ingest of the split (issue 23, item 4)."""
    df = good_manifest.copy()
    _same_content_twice_in_a_split(df)
    result = check_manifest(params, df)
    assert result.success and result.failures == [], result.report()
    (warning,) = result.warnings
    assert warning.expectation == "expect_compound_columns_to_be_unique"
    assert warning.column == "domain, split, sha256"
    for text in ("2 of 16 rows unexpected", "image_id=new-pool-000006", "image_id=new-pool-000007"):
        assert text in warning.description, warning.description


def test_pieces_of_one_source_are_not_duplicates(
    params: Params, good_manifest: pd.DataFrame
) -> None:
    """Tiles of one camera image share its URI and sha256: one source, no warning."""
    df = _ingested(good_manifest)
    df.loc[9, ["source_sha256", "source_uri"]] = df.loc[8, ["source_sha256", "source_uri"]]
    result = check_manifest(params, df)
    assert result.success and result.warnings == []
    assert len(manifest_frames(df)["manifest_sources"]) == len(df) - 1


def test_the_same_content_in_two_splits_is_not_a_duplicate(
    params: Params, good_manifest: pd.DataFrame
) -> None:
    df = good_manifest.copy()
    df.loc[8, "sha256"] = df.loc[0, "sha256"]  # original/train and new/pool
    assert check_manifest(params, df).success


# -- batch ------------------------------------------------------------------------------------


def _batch(good_manifest: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(a batch of 4 new/pool rows, the manifest without them)."""
    pool = good_manifest["split"] == "pool"
    batch = _ingested(good_manifest[pool].head(4)).assign(orig_width=640, orig_height=480)
    return batch.reset_index(drop=True), good_manifest.drop(batch.index)


def test_good_batch_passes_with_or_without_its_rows_in_the_manifest(
    params: Params, good_manifest: pd.DataFrame
) -> None:
    batch, before = _batch(good_manifest)
    after = pd.concat([before, batch], ignore_index=True)
    for manifest in (before, after):
        result = check_batch(params, batch, manifest)
        assert result.success and result.warnings == [], result.report()
        assert set(result.results) == {"batch", "batch_classes", "batch_keys", "batch_sources"}
    assert len(batch_frames(batch, after)["batch_keys"]) == len(good_manifest)


BROKEN_BATCHES = {
    # name: (change of the batch, failed expectation, column, texts the description must show)
    "an id already in the manifest": (
        _set(0, "image_id", "original-train-000000"),
        "expect_column_values_to_be_unique",
        "image_id",
        ["'original-train-000000' (path=line/original/train/images/original-train-000000.png)"],
    ),
    "not fitted to image_size": (
        _set(2, "width", 640),
        "expect_column_values_to_be_in_set",
        "width",
        ["640 (image_id=new-pool-000002)"],
    ),
    "unknown class": (
        _set(3, "defect_classes", "scratch,blob"),
        "expect_column_values_to_be_in_set",
        "defect_class",
        ["'blob' (image_id=new-pool-000003)"],
    ),
    "no original height": (
        _set(3, "orig_height", None),
        "expect_column_values_to_not_be_null",
        "orig_height",
        ["image_id=new-pool-000003"],
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN_BATCHES))
def test_broken_batch_reports_the_offending_values(
    params: Params, good_manifest: pd.DataFrame, case: str
) -> None:
    change, expectation, column, texts = BROKEN_BATCHES[case]
    batch, before = _batch(good_manifest)
    change(batch)
    result = check_batch(params, batch, before)
    assert _failed(result) == {(expectation, column)}, result.report()
    (failure,) = result.failures
    for text in texts:
        assert text in failure.description, failure.description


def test_a_batch_with_content_already_in_its_split_passes_with_a_warning(
    params: Params, good_manifest: pd.DataFrame
) -> None:
    """Every later ingest of the split would fail on the manifest's own copy otherwise."""
    batch, before = _batch(good_manifest)
    _set(1, "sha256", f"{12:064x}")(batch)  # the sha256 of new-pool-000004, not in the batch
    result = check_batch(params, batch, before)
    assert result.success, result.report()
    (warning,) = result.warnings
    assert warning.column == "domain, split, sha256"
    assert "image_id=new-pool-000001" in warning.description
    assert "image_id=new-pool-000004" in warning.description


# -- metrics ----------------------------------------------------------------------------------


def _metrics() -> dict[str, object]:
    per_class = {
        "scratch": {"ap": 0.5, "n_positive": 10, "precision": 0.4, "recall": 0.6},
        "hole": {"ap": None, "n_positive": 0, "precision": 0.0, "recall": 0.0},  # no positives
    }
    domain = {
        "map": 0.5,
        "precision": 0.4,
        "recall": 0.6,
        "f1": 0.48,
        "false_reject_rate": 0.1,
        "escape_rate": 0.0,
        "n_images": 40,
        "per_class": per_class,
    }
    return {
        "model": "baseline",
        "domains": {"original": domain, "new": json.loads(json.dumps(domain))},
    }


def test_good_metrics_pass(params: Params) -> None:
    result = check_metrics(params, _metrics())
    assert result.success, result.report()
    frame = metrics_frames(_metrics())["metrics"]
    assert len(frame) == 2 * (6 + 3 + 2)  # a class without positives has no AP
    assert list(frame.columns) == ["domain", "class", "metric", "value"]


def test_the_evaluation_metrics_format_passes(params: Params) -> None:
    """What evaluation.area_metrics returns (the evaluate stage's metrics.json per domain)."""
    from mentoring.evaluation import area_metrics

    rng = np.random.default_rng(0)
    targets = (rng.random((4, 6, 4, 4)) < 0.1).astype(np.uint8)
    targets[:, 5] = 0  # a class without positives: AP None
    probs = rng.random(targets.shape).astype(np.float32)
    metrics = {"domains": {"new": area_metrics(probs, targets, params.line.classes)}}
    assert metrics["domains"]["new"]["per_class"]["chip"]["ap"] is None
    result = check_metrics(params, metrics)
    assert result.success, result.report()
    assert len(metrics_frames(metrics)["metrics"]) == 6 + 6 * 3 - 1


def test_nan_and_out_of_range_metrics_fail(params: Params, tmp_path: Path) -> None:
    metrics = _metrics()
    domains = metrics["domains"]
    assert isinstance(domains, dict)
    domains["new"]["recall"] = float("nan")
    domains["new"]["per_class"]["scratch"]["ap"] = None  # positives but no AP
    domains["original"]["escape_rate"] = 1.5
    out = tmp_path / "metrics_validation.json"
    with pytest.raises(ValidationError) as exc:
        validate_metrics(params, metrics, out)
    result = exc.value.result
    assert _failed(result) == {
        ("expect_column_values_to_not_be_null", "value"),
        ("expect_column_values_to_be_between", "value"),
    }
    failures = {f.expectation: f for f in result.failures}
    null = failures["expect_column_values_to_not_be_null"].description
    assert "2 of 22 rows unexpected" in null
    assert "domain=new, class=, metric=recall" in null and "class=scratch, metric=ap" in null
    between = failures["expect_column_values_to_be_between"].description
    assert "1.5 (domain=original, class=, metric=escape_rate)" in between
    assert json.loads(out.read_text())["n_failed"] == 2


# -- acquisition drift ------------------------------------------------------------------------


def _stats(
    n: int, seed: int, brightness: float = 0.35, contrast_spread: float = 1.0
) -> pd.DataFrame:
    """Acquisition statistics of ``n`` images drawn around the original line's figures."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "image_id": [f"im{seed}-{i}" for i in range(n)],
            "brightness": rng.normal(brightness, 0.05, n),
            "contrast": 0.21 + rng.normal(0, 0.04 * contrast_spread, n),
            "sharpness": rng.normal(0.015, 0.005, n),
        }
    )


def test_drift_band_is_the_reference_percentiles_widened_by_the_tolerance() -> None:
    reference = pd.DataFrame(
        {s: np.arange(101, dtype=float) * k for k, s in enumerate(STATS, start=1)}
    )
    band = drift_band(reference, 0.25)
    assert band["brightness"] == {"p10": 10.0, "p50": 50.0, "p90": 90.0, "half_width": 20.0}
    assert band["sharpness"]["p90"] == 270.0 and band["sharpness"]["half_width"] == 60.0


def test_no_drift_warning_on_a_batch_of_the_reference_distribution(params: Params) -> None:
    report = check_drift(params, _stats(1500, 0), {"original/eval": _stats(400, 1)})
    assert report.result is not None and report.result.success
    assert report.drifted == [] and report.result.warnings == []
    assert report.result.n_expectations == 6  # per statistic: median + (p10, p90)
    assert "no acquisition drift from original/train" in report.summary()


def test_drift_warning_on_a_shifted_batch_with_the_figures(params: Params) -> None:
    report = check_drift(
        params,
        _stats(1500, 0),
        {"new/pool": _stats(400, 2, brightness=0.45), "original/eval": _stats(400, 1)},
    )
    assert report.result is not None
    assert report.result.success  # a warning, never a failure
    assert report.drifted == ["new/pool"]
    figures = report.batches["new/pool"]["statistics"]
    assert figures["brightness"]["drifted"] and not figures["contrast"]["drifted"]
    p50 = figures["brightness"]["percentiles"]["p50"]
    ref = report.band["brightness"]
    assert p50["reference"] == pytest.approx(ref["p50"])
    assert p50["allowed"] == pytest.approx(
        [ref["p50"] - ref["half_width"], ref["p50"] + ref["half_width"]]
    )
    assert p50["batch"] == pytest.approx(0.45, abs=0.01) and p50["within"] is False
    # ~0.05 x 2.56 x 0.25 = 0.032 of half-width: a 0.1 shift is far outside
    assert ref["half_width"] == pytest.approx(0.032, abs=0.004)
    warned = {(w.frame, w.expectation, w.column) for w in report.result.warnings}
    assert warned == {
        ("drift new/pool", "expect_column_median_to_be_between", "brightness"),
        ("drift new/pool", "expect_column_quantile_values_to_be_between", "brightness"),
    }
    summary = report.summary()
    assert summary.startswith(
        "acquisition drift: new/pool (400 images) differs from original/train"
    )
    assert "\n  brightness: p10 0.3" in summary and ", p50 0.4" in summary
    assert "contrast" not in summary
    saved = json.loads(json.dumps(report.to_dict()))
    assert saved["drifted"] == ["new/pool"] and saved["suite"]["n_warnings"] == 2


def test_a_wider_spread_is_caught_by_the_outer_percentiles(params: Params) -> None:
    """Same median, twice the spread: only the quantile expectation warns (its success is a
    numpy bool in great-expectations' result, which must not read as a pass)."""
    report = check_drift(params, _stats(1500, 0), {"new/eval": _stats(400, 3, contrast_spread=2)})
    assert report.result is not None
    (warning,) = report.result.warnings
    assert warning.expectation == "expect_column_quantile_values_to_be_between"
    assert warning.column == "contrast" and "p10 " in warning.description
    contrast = report.batches["new/eval"]["statistics"]["contrast"]["percentiles"]
    assert contrast["p50"]["within"] and not contrast["p10"]["within"]
    assert not contrast["p90"]["within"]


def test_drift_tolerance_widens_the_band(params: Params) -> None:
    loose = parse_params({"validate": {"drift_tolerance": 2.0}})
    shifted = {"new/pool": _stats(400, 2, brightness=0.45)}
    assert check_drift(params, _stats(1500, 0), shifted).drifted == ["new/pool"]
    assert check_drift(loose, _stats(1500, 0), shifted).drifted == []


def test_drift_without_reference_is_not_measured(params: Params) -> None:
    report = check_drift(params, _stats(0, 0), {"new/pool": _stats(10, 1)})
    assert report.result is None and report.drifted == []
    assert "no image in the reference original/train" in report.summary()


# -- data docs, ingested batches --------------------------------------------------------------


def test_data_docs_show_every_frame(
    params: Params, good_manifest: pd.DataFrame, tmp_path: Path
) -> None:
    manifest = check_manifest(params, good_manifest.assign(width=64))
    drift = check_drift(params, _stats(200, 0), {"new/pool": _stats(100, 2, brightness=0.45)})
    assert drift.result is not None
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "stale.html").write_text("from an earlier run")
    index = write_data_docs([manifest, drift.result], tmp_path / "docs")
    assert index == tmp_path / "docs" / "index.html" and index.exists()
    assert not (tmp_path / "docs" / "stale.html").exists()
    pages = {p.stem: p for p in (tmp_path / "docs" / "validations").rglob("*.html")}
    assert set(pages) == {"manifest", "manifest_classes", "manifest_sources", "drift_new_pool"}
    assert "width is line.image_size" in pages["manifest"].read_text()
    assert "brightness median in [" in pages["drift_new_pool"].read_text()


def _png(root: Path, row: dict[str, object], level: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    pixels = np.clip(rng.normal(level, 30, (32, 32)), 0, 255).astype(np.uint8)
    path = root / str(row["path"])
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def _ingest_rows(root: Path, domain: str, split: str, n: int, level: int) -> pd.DataFrame:
    rows = []
    for i in range(n):
        image_id = f"{domain}-{split}-{i:03d}"
        row = {
            "image_id": image_id,
            "path": f"line/{domain}/{split}/images/{image_id}.png",
            "mask_path": "",
            "domain": domain,
            "split": split,
            "part_ref": "",
            "width": 32,
            "height": 32,
            "channels": 1,
            "sha256": hashlib.sha256(image_id.encode()).hexdigest(),
            "defect_classes": "",
            "n_defects": 0,
            "n_nuisances": 0,
            "source_uri": f"s3://plant/{domain}/{split}/{i}.tif",
            "source_sha256": hashlib.sha256(f"source {image_id}".encode()).hexdigest(),
            "orig_width": 640,
            "orig_height": 480,
        }
        _png(root, row, level, seed=level * 1000 + i)
        rows.append(row)
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def small_line(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame, pd.DataFrame]:
    """(data root, a manifest of 40 original/train images, a brighter batch of 20 new/pool)."""
    root = tmp_path_factory.mktemp("data")
    manifest = _ingest_rows(root, "original", "train", 40, level=80)
    batch = _ingest_rows(root, "new", "pool", 20, level=130)
    return root, manifest, batch


SMALL = parse_params({"line": {"image_size": 32}})


def test_validate_ingested_writes_results_and_warns_of_drift(
    small_line: tuple[Path, pd.DataFrame, pd.DataFrame], tmp_path: Path
) -> None:
    root, manifest, batch = small_line
    out = tmp_path / "ingest-validation"
    summary = validate_ingested(batch, pd.concat([manifest, batch]), root, SMALL, out)
    assert summary["success"] is True and summary["n_failed"] == 0
    assert summary["n_images"] == 20 and summary["drifted"] == {"new/pool": True}
    assert summary["n_warnings"] >= 2 and summary["n_expectations"] > 20
    assert any("brightness median" in w for w in summary["warnings"])
    assert (
        "acquisition drift: new/pool (20 images) differs from original/train (40"
        in (summary["report"])
    )
    assert set(summary["files"]) == {"batch", "drift", "data_docs", "summary"}
    for path in summary["files"].values():
        assert Path(path).exists(), path
    assert json.loads((out / "summary.json").read_text()) == summary
    drift = json.loads((out / "drift.json").read_text())
    assert drift["n_reference"] == 40 and drift["drifted"] == ["new/pool"]
    assert json.loads((out / "batch.json").read_text())["success"] is True


def test_validate_ingested_reports_failures_and_skips_drift(
    small_line: tuple[Path, pd.DataFrame, pd.DataFrame], tmp_path: Path
) -> None:
    root, manifest, batch = small_line
    broken = batch.copy()
    broken.loc[1, "defect_classes"] = "blob"
    summary = validate_ingested(broken, manifest, root, SMALL, tmp_path)
    assert summary["success"] is False and summary["n_failed"] == 1
    assert "'blob' (image_id=new-pool-001)" in summary["failures"][0]
    assert summary["drifted"] == {}
    assert "not measured: the batch failed its suite" in summary["report"]


def test_validate_ingested_of_no_rows(
    small_line: tuple[Path, pd.DataFrame, pd.DataFrame], tmp_path: Path
) -> None:
    root, manifest, batch = small_line
    for nothing in (batch.iloc[:0], pd.DataFrame([])):  # the latter: no columns either
        summary = validate_ingested(nothing, manifest, root, SMALL, tmp_path)
        assert summary["success"] is True, summary["report"]
        assert summary["n_images"] == 0 and summary["drifted"] == {}
        assert "not measured: no image ingested" in summary["report"]


def test_drift_params_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"\[validate\].*drift_reference must be"):
        parse_params({"validate": {"drift_reference": "original"}})
    with pytest.raises(ConfigError, match=r"\[validate\].*drift_tolerance"):
        parse_params({"validate": {"drift_tolerance": -0.1}})
    assert parse_params({"validate": {"drift_reference": "new/eval"}}).validate.reference == (
        "new",
        "eval",
    )


def test_defect_level_rates_are_checked_too(params: Params, tmp_path: Path) -> None:
    """A ``defect`` block adds ``defect.<rate>`` rows; false alarms per image may exceed 1."""
    metrics = _metrics()
    domains = metrics["domains"]
    assert isinstance(domains, dict)
    defect = {
        "map": 0.7,
        "precision": 0.8,
        "recall": 0.9,
        "f1": 0.85,
        "false_alarms_per_image": 2.5,  # a count per image, not a rate
        "per_class": {
            "scratch": {"ap": 0.7, "n_defects": 4, "precision": 0.8, "recall": 0.9},
            "hole": {"ap": None, "n_defects": 0, "precision": 0.0, "recall": 0.0},
        },
    }
    for d in domains.values():
        d["defect"] = json.loads(json.dumps(defect))
    assert check_metrics(params, metrics).success
    frame = metrics_frames(metrics)["metrics"]
    assert len(frame) == 2 * (6 + 3 + 2) + 2 * (4 + 3 + 2)
    assert {"defect.map", "defect.f1"} <= set(frame["metric"])
    domains["new"]["defect"]["map"] = 1.2
    with pytest.raises(ValidationError) as exc:
        validate_metrics(params, metrics, tmp_path / "v.json")
    assert "1.2 (domain=new, class=, metric=defect.map)" in exc.value.result.report()
