"""The export: the database as a feedback file, imported by the real `mentor` stage into partial
labels that are checked entry by entry; exporting twice gives the same file, importing it twice
changes nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mentoring.annotate.db import AnnotationDB
from mentoring.annotate.export import build_feedback, export_feedback
from mentoring.config import load_params
from mentoring.data.manifest import write_manifest
from mentoring.feedback.partial import PartialLabels
from mentoring.feedback.schema import dump, read_feedback
from mentoring.io import sha256_file
from mentoring.stages import mentor
from tests.unit.annotate.conftest import LEASE_S, Clock, small_tasks

REPO = Path(__file__).resolve().parents[3]
SCRATCH, STAIN = 0, 1


def _manifest(root: Path, ids: list[str]) -> Path:
    rows = [
        {
            "image_id": i,
            "path": f"line/new/pool/images/{i}.png",
            "mask_path": "",
            "domain": "new",
            "split": "pool",
            "part_ref": "p1",
            "width": 32,
            "height": 32,
            "channels": 1,
            "sha256": "0" * 64,
            "defect_classes": "",
            "n_defects": 0,
            "n_nuisances": 0,
        }
        for i in ids
    ]
    path = root / "manifests/line.parquet"
    write_manifest(pd.DataFrame(rows), path)
    return path


@pytest.fixture
def session(tmp_path: Path) -> tuple[AnnotationDB, Path, Clock]:
    """Three operators over the small task set; returns the database, the tasks file, clock."""
    tasks = small_tasks()
    tasks_path = tmp_path / "data/mining/tasks.json"
    tasks_path.parent.mkdir(parents=True)
    tasks_path.write_text(dump(tasks))
    clock = Clock()
    # no image leased ahead: the scenario hands out images one at a time (leases: test_db.py)
    db = AnnotationDB(
        tmp_path / "data/annotate/s.sqlite", lease_s=LEASE_S, clock=clock, lease_ahead=0
    )
    db.load_tasks(tasks, sha256_file(tasks_path), str(tasks_path))
    # op-1 corrects img-a's scratch into a stain, then leaves; op-3 takes img-a over
    assert db.next_image("op-1").image.image_id == "img-a"  # type: ignore[union-attr]
    db.change_class("op-1", "r-a1", "img-a", "img-a/scratch/0", "stain")
    assert db.next_image("op-2").image.image_id == "img-b"  # type: ignore[union-attr]
    clock.advance(LEASE_S + 1)
    assert db.next_image("op-3").image.image_id == "img-a"  # type: ignore[union-attr]
    db.verdict("op-3", "r-a2", "img-a", "img-a/stain/0", "defect")
    clock.advance(1)
    db.verdict("op-3", "r-a3", "img-a", "img-a/stain/0", "healthy")  # changes their mind
    # op-2: confirms img-b's stain and draws a missed scratch (rows 2-3, cols 0-1)
    assert db.next_image("op-2").image.image_id == "img-b"  # type: ignore[union-attr]
    db.verdict("op-2", "r-b1", "img-b", "img-b/stain/0", "defect")
    db.draw("op-2", "r-b2", "img-b", "scratch", (0, 16, 16, 32))
    db.draw("op-2", "r-b3", "img-b", "stain", (24, 24, 32, 32))
    db.undo("op-2", "u-b3")  # the stain box is gone
    # op-1 comes back: img-c has no area, a missed stain at cell (0, 3); img-d flagged healthy
    assert db.next_image("op-1").image.image_id == "img-c"  # type: ignore[union-attr]
    db.draw("op-1", "r-c1", "img-c", "stain", (24, 0, 32, 8))
    db.finish("op-1", "r-c2", "img-c")
    assert db.next_image("op-1").image.image_id == "img-d"  # type: ignore[union-attr]
    db.verdict("op-1", "r-d1", "img-d", "img-d/scratch/1", "healthy")
    db.flag_healthy("op-1", "r-d2", "img-d")
    return db, tasks_path, clock


def test_export_items_per_image_and_operator(session: tuple[AnnotationDB, Path, Clock]) -> None:
    db, tasks_path, clock = session
    fb = build_feedback(db)
    assert fb.tasks_sha256 == sha256_file(tasks_path)
    got = [
        (
            i.image_id,
            i.operator,
            i.healthy,
            [(a.area_id, a.verdict, a.corrected_class) for a in i.areas],
            [(d.area_id, d.cls, d.bbox) for d in i.drawn],
        )
        for i in fb.items
    ]
    assert got == [
        ("img-a", "op-1", None, [("img-a/scratch/0", "defect", "stain")], []),
        ("img-a", "op-3", None, [("img-a/stain/0", "healthy", None)], []),
        ("img-b", "op-2", None, [("img-b/stain/0", "defect", None)],
         [("img-b/drawn/0", "scratch", (0, 16, 16, 32))]),
        ("img-c", "op-1", None, [], [("img-c/drawn/0", "stain", (24, 0, 32, 8))]),
        ("img-d", "op-1", True,
         [("img-d/scratch/0", "healthy", None), ("img-d/scratch/1", "healthy", None)], []),
    ]  # fmt: skip
    # each item's timestamp: its operator's latest contributing action on the image
    t0 = clock() - LEASE_S - 2
    stamps = [i.timestamp.timestamp() for i in fb.items]
    assert stamps[0] == t0 and stamps[1] == t0 + LEASE_S + 2


def test_export_twice_gives_the_same_file(
    session: tuple[AnnotationDB, Path, Clock], tmp_path: Path
) -> None:
    db, _, _ = session
    out = tmp_path / "data/feedback/s.json"
    first = export_feedback(db, out)
    data = out.read_bytes()
    second = export_feedback(db, out)
    assert out.read_bytes() == data and first == second
    assert (first.items, first.images, first.areas, first.corrected) == (5, 4, 5, 1)
    assert (first.healthy_images, first.drawn) == (1, 2)
    assert read_feedback(out) == build_feedback(db)
    assert not [p for p in out.parent.iterdir() if p.name != "s.json"]  # no temp file left


def test_mentor_import_of_the_export_entry_by_entry(
    session: tuple[AnnotationDB, Path, Clock], tmp_path: Path
) -> None:
    db, tasks_path, _ = session
    root = tmp_path / "data"
    manifest = _manifest(root, ["img-a", "img-b", "img-c", "img-d"])
    feedback = root / "feedback"
    export_feedback(db, feedback / "s.json")
    params = load_params(REPO / "params.yaml", {"mentor.source": "import"})
    labels_path = root / "mentor/partial_labels.npz"

    def run() -> dict[str, object]:
        return mentor.run(
            params, manifest, tasks_path, feedback, labels_path, tmp_path / "results/mentor"
        )

    metrics = run()
    assert metrics["stale_files"] == [] and metrics["conflicts"] == []
    assert (metrics["n_confirmed"], metrics["n_corrected"], metrics["n_infirmed"]) == (2, 1, 3)
    assert (metrics["n_drawn"], metrics["n_healthy_images"]) == (2, 1)
    labels = PartialLabels.load(labels_path)
    assert labels.ids == ["img-a", "img-b", "img-c", "img-d"]
    # expected (M, C, h, w) targets and annotated masks, entry by entry
    targets = np.zeros((4, 2, 4, 4), np.uint8)
    annotated = np.zeros((4, 2, 4, 4), bool)
    # img-a: scratch/0 at (0, 0) confirmed as a stain (scratch channel annotated healthy there);
    # stain/0 at (2, 2), (2, 3) rejected on every channel
    targets[0, STAIN, 0, 0] = 1
    annotated[0, :, 0, 0] = True
    annotated[0, :, 2, 2:4] = True
    # img-b: the stain at (1, 1) confirmed; the drawn scratch box covers rows 2-3, cols 0-1
    targets[1, STAIN, 1, 1] = 1
    annotated[1, STAIN, 1, 1] = True
    targets[1, SCRATCH, 2:4, 0:2] = 1
    annotated[1, SCRATCH, 2:4, 0:2] = True
    # img-c: the drawn stain at (0, 3)
    targets[2, STAIN, 0, 3] = 1
    annotated[2, STAIN, 0, 3] = True
    # img-d: flagged healthy: both areas rejected
    annotated[3, :, 3, 0] = True
    annotated[3, :, 3, 3] = True
    assert np.array_equal(labels.annotated, annotated)
    assert np.array_equal(labels.targets * labels.annotated, targets)
    assert labels.healthy.tolist() == [False, False, False, True]
    # importing it twice (a second copy of the same export) changes nothing
    shutil.copy(feedback / "s.json", feedback / "s-copy.json")
    again = run()
    assert again["n_duplicates"] == again["n_records"] // 2 > 0 and again["conflicts"] == []
    second = PartialLabels.load(labels_path)
    assert second.ids == labels.ids
    for key in ("targets", "annotated", "healthy"):
        assert np.array_equal(getattr(second, key), getattr(labels, key)), key
    validation = json.loads((tmp_path / "results/mentor/validation.json").read_text())
    assert validation["success"] is True
