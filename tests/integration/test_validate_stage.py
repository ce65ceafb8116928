"""The validate stage and the mentor stage's feedback validation on a tiny generated line."""

from __future__ import annotations

import json
import logging
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from mentoring.config import Params, parse_params
from mentoring.data.manifest import ManifestError, read_manifest, write_manifest
from mentoring.feedback.schema import (
    AreaVerdict,
    FeedbackFile,
    ImageFeedback,
    dump,
)
from mentoring.line.generate import generate_line
from mentoring.stages import mentor, validate
from mentoring.validation import ValidationError
from tests.factories import area, make_tasks
from tests.integration.test_baseline_cli import REPO, mentoring


@pytest.fixture(scope="module")
def params() -> Params:
    return parse_params({"base": {"profile": "tiny"}, "mentor": {"source": "import"}})


@pytest.fixture(scope="module")
def line(params: Params, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny line (112 images); returns its manifest."""
    return generate_line(params, tmp_path_factory.mktemp("line") / "data")


def _broken_copy(manifest: Path, tmp_path: Path) -> Path:
    df = read_manifest(manifest, check_files=False)
    df.loc[3, "image_id"] = df.loc[2, "image_id"]
    df.loc[7, "width"] = 64
    path = tmp_path / "manifests" / "line.parquet"
    write_manifest(df, path)
    return path


def _tampered_copy(manifest: Path, tmp_path: Path) -> tuple[Path, pd.DataFrame]:
    """The line copied under ``tmp_path`` (manifest and files), to edit."""
    shutil.copytree(manifest.parent.parent, tmp_path / "data")
    copy = tmp_path / "data" / "manifests" / manifest.name
    return copy, read_manifest(copy)


def test_a_file_edited_after_the_manifest_fails_naming_it(
    params: Params, line: Path, tmp_path: Path
) -> None:
    copy, df = _tampered_copy(line, tmp_path)
    root = copy.parent.parent
    edited = root / df.loc[5, "path"]
    edited.write_bytes(edited.read_bytes() + b"\0")  # still a readable PNG: only the bytes tell
    (root / df.loc[9, "mask_path"]).unlink()
    results = tmp_path / "validate"
    with pytest.raises(ManifestError) as exc:
        validate.run(params, copy, results)
    message = str(exc.value)
    assert str(copy) in message
    assert f"1 file(s) missing: ['{df.loc[9, 'image_id']}: {root / df.loc[9, 'mask_path']}']" in (
        message
    )
    assert f"1 file(s) differ from it: ['{df.loc[5, 'image_id']}: {edited} (sha256 " in message
    assert not results.exists()  # nothing written: the stage never half-succeeds


def test_a_manifest_from_before_mask_checksums_checks_the_images(
    params: Params, line: Path, tmp_path: Path
) -> None:
    copy, df = _tampered_copy(line, tmp_path)
    pd.read_parquet(copy).drop(columns="mask_sha256").to_parquet(copy)
    (copy.parent.parent / df.loc[4, "mask_path"]).write_bytes(b"not checked")
    assert validate.run(params, copy, tmp_path / "validate")["n_files_verified"] == 112


def test_generated_line_passes_and_warns_of_the_new_domains_drift(
    params: Params, line: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    results = tmp_path / "validate"
    with caplog.at_level(logging.WARNING, logger="mentoring.stages.validate"):
        metrics = validate.run(params, line, results)
    assert metrics == {
        "n_images": 112,
        "n_files_verified": 2 * 112,  # every image and mask matched its sha256
        "n_expectations": 25 + 3 * 6,  # the manifest suite; 3 batches x 3 statistics x 2
        "n_failed": 0,
        "n_warnings": metrics["n_warnings"],
        "success": True,
        "n_drifted": 2,
        # the tiny line measures as the demo line: another camera and lighting in `new`
        "drift": {"new/eval": True, "new/pool": True, "original/eval": False},
    }
    assert metrics["n_warnings"] >= 4  # at least brightness median and percentiles, x 2
    assert json.loads((results / "metrics.json").read_text()) == metrics
    saved = json.loads((results / "manifest.json").read_text())
    assert saved["success"] is True and saved["failures"] == [] and saved["warnings"] == []
    assert set(saved["results"]) == {"manifest", "manifest_classes", "manifest_sources"}

    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert message.count("acquisition drift: ") == 2 and "original/eval" not in message
    assert "new/pool (32 images) differs from original/train (48 images, tolerance 0.25)" in (
        message
    )
    assert "\n  brightness: p10 " in message and ", p50 " in message

    drift = json.loads((results / "drift.json").read_text())
    assert drift["reference"] == "original/train" and drift["n_reference"] == 48
    assert drift["drifted"] == ["new/eval", "new/pool"]
    brightness = drift["batches"]["new/pool"]["statistics"]["brightness"]["percentiles"]["p50"]
    low, high = brightness["allowed"]
    assert brightness["batch"] > high > brightness["reference"] > low  # brighter
    assert drift["suite"]["success"] is True and drift["suite"]["n_failed"] == 0

    pages = {p.stem for p in (results / "data_docs" / "validations").rglob("*.html")}
    assert (results / "data_docs" / "index.html").exists()
    assert pages == {
        "manifest",
        "manifest_classes",
        "manifest_sources",
        "drift_original_eval",
        "drift_new_pool",
        "drift_new_eval",
    }


def test_broken_manifest_fails_after_writing_results(
    params: Params, line: Path, tmp_path: Path
) -> None:
    broken = _broken_copy(line, tmp_path)
    results = tmp_path / "validate"
    with pytest.raises(ValidationError) as exc:
        validate.run(params, broken, results)
    msg = str(exc.value)
    duplicated = read_manifest(broken, check_files=False)["image_id"].iloc[2]
    assert "manifest validation failed: 2 of 25 expectations" in msg
    assert f"'{duplicated}'" in msg and "64 (image_id=" in msg
    assert str(results / "manifest.json") in msg
    metrics = json.loads((results / "metrics.json").read_text())
    assert metrics["success"] is False and metrics["n_failed"] == 2
    assert metrics["n_drifted"] == 0 and metrics["drift"] == {}
    assert json.loads((results / "manifest.json").read_text())["n_failed"] == 2
    drift = json.loads((results / "drift.json").read_text())
    assert drift["skipped"] == "the manifest failed its suite"
    assert (results / "data_docs" / "index.html").exists()


def _tasks_and_feedback(manifest: Path, root: Path, area_id: str) -> tuple[Path, Path]:
    """tasks.json with one area on a pool image, and feedback on ``area_id`` of that image."""
    df = read_manifest(manifest, check_files=False)
    row = df[df["split"] == "pool"].iloc[0]
    t0 = datetime(2026, 5, 1, tzinfo=UTC)
    tasks = make_tasks(
        {row.image_id: [area(f"{row.image_id}/stain/0", "stain", [(1, 2)], (16, 8, 24, 16))]},
        classes=["scratch", "crack", "dent", "stain", "hole", "chip"],
        grid=(16, 16),
        paths={row.image_id: row.path},
    )
    item = ImageFeedback(
        image_id=row.image_id,
        operator="op-1",
        timestamp=t0,
        areas=[AreaVerdict(area_id=area_id.format(id=row.image_id), verdict="defect")],
    )
    tasks_path, fb_dir = root / "mining/tasks.json", root / "feedback"
    tasks_path.parent.mkdir(parents=True)
    tasks_path.write_text(dump(tasks))
    fb_dir.mkdir()
    (fb_dir / "op.json").write_text(dump(FeedbackFile(items=[item])))
    return tasks_path, fb_dir


def test_mentor_validates_feedback_before_import(
    params: Params, line: Path, tmp_path: Path
) -> None:
    tasks, fb = _tasks_and_feedback(line, tmp_path, "{id}/stain/0")
    labels, results = tmp_path / "labels.npz", tmp_path / "mentor"
    metrics = mentor.run(params, line, tasks, fb, labels, results)
    assert metrics["n_confirmed"] == 1 and labels.exists()
    assert json.loads((results / "validation.json").read_text())["success"] is True


def test_mentor_rejects_unknown_area_with_the_report(
    params: Params, line: Path, tmp_path: Path
) -> None:
    tasks, fb = _tasks_and_feedback(line, tmp_path, "{id}/crack/7")
    labels, results = tmp_path / "labels.npz", tmp_path / "mentor"
    with pytest.raises(ValidationError) as exc:
        mentor.run(params, line, tasks, fb, labels, results)
    assert "/crack/7'] (file=op.json)" in str(exc.value)
    assert not labels.exists()
    assert json.loads((results / "validation.json").read_text())["n_failed"] == 1


def _has_validate_command() -> bool:
    from typer.main import get_command

    from mentoring.cli import app

    return "validate" in get_command(app).commands


@pytest.mark.skipif(not _has_validate_command(), reason="cli.py has no `validate` command yet")
def test_cli_validate(line: Path, tmp_path: Path) -> None:
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    ok = mentoring(tmp_path, "validate", "-S", "base.profile=tiny", "--manifest", str(line))
    assert (tmp_path / "results/validate/manifest.json").exists(), ok.stdout
    assert (tmp_path / "results/validate/data_docs/index.html").exists()
    assert "acquisition drift: new/eval" in ok.stderr
    broken = _broken_copy(line, tmp_path / "broken")
    proc = mentoring(tmp_path, "validate", "--manifest", str(broken), check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "manifest validation failed" in proc.stderr and "width" in proc.stderr
