"""Tests of the Label Studio round trip (src/mentoring/formats/labelstudio.py) and its CLI.

Every fixture is built here: a data root with a manifest of three images (one stored as is, one
padded from a 64 x 48 original, one tile of a 48 x 32 original), the originals on disk (or in a
moto S3 bucket), mining tasks, and hand-built Label Studio exports in the shape Label Studio 1.23
writes (``exportType=JSON``: per region a ``rectanglelabels`` result and, with a verdict, a
``choices`` result of the same id; the embedded prediction; ``completed_by`` as a user id).
"""

from __future__ import annotations

import base64
import io
import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from mentoring.cli import app
from mentoring.data.images import Mapping, encode_png
from mentoring.data.manifest import read_manifest, write_manifest
from mentoring.feedback.partial import build_partial_labels
from mentoring.feedback.schema import (
    MiningTasks,
    ModelRef,
    TaskArea,
    TaskImage,
    dump,
    read_feedback,
)
from mentoring.formats.labelstudio import (
    LabelStudioError,
    LabelStudioExport,
    export_tasks,
    import_annotations,
    labeling_config,
    parse_export,
    read_mapping,
    region_id,
    write_export,
)
from mentoring.io import sha256_file
from tests.servers import aws_client_kwargs

CLASSES = ["scratch", "stain"]
SCRATCH, STAIN = 0, 1
SIZE, STRIDE = 32, 8  # stored images: 32 x 32, a 4 x 4 grid
T_SUBMIT = "2026-11-24T10:00:00.123456Z"
MODEL = ModelRef(name="baseline", path="models/baseline.pt", sha256="ab" * 32)
VERSION = "baseline@" + "ab" * 6

# img-a: stored as is (synthetic); its five areas cover every verdict
A_AREAS = [
    ("img-a/scratch/0", "scratch", (0, 0, 8, 8), [(0, 0)]),  # kept, verdict "defect"
    ("img-a/stain/0", "stain", (8, 0, 16, 8), [(0, 1)]),  # kept, no verdict
    ("img-a/stain/1", "stain", (16, 0, 24, 8), [(0, 2)]),  # verdict "healthy"
    ("img-a/scratch/1", "scratch", (24, 0, 32, 8), [(0, 3)]),  # relabelled stain
    ("img-a/stain/2", "stain", (0, 24, 8, 32), [(3, 0)]),  # deleted
]
# img-p: a 64 x 48 original padded into 32 x 32 (scale 2, 8 pixels of padding above and below)
PAD = Mapping("pad", 64, 48, 2.0, 2.0, 0.0, -8.0)
# img-t: the second tile (x 16..48) of a 48 x 32 original
TILE = Mapping("tile", 48, 32, 1, 1, 16, 0)


def _png(path: Path, array: np.ndarray) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = encode_png(array)
    path.write_bytes(data)
    return path.as_posix()


def _decode_uri(uri: str) -> np.ndarray:
    head, _, b64 = uri.partition(",")
    assert head == "data:image/png;base64"
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


@dataclass
class Line:
    root: Path
    manifest: Path
    tasks_path: Path
    tasks: MiningTasks
    originals: dict[str, Path]


def _row(image_id: str, mapping: Mapping | None, source: str = "", source_sha: str = "") -> dict:
    return {
        "image_id": image_id,
        "path": f"line/new/pool/images/{image_id}.png",
        "mask_path": "",
        "domain": "new",
        "split": "pool",
        "part_ref": "p1",
        "width": SIZE,
        "height": SIZE,
        "channels": 1,
        "sha256": "0" * 64,
        "defect_classes": "",
        "n_defects": 0,
        "n_nuisances": 0,
        "source_uri": source,
        "source_sha256": source_sha,
        "orig_width": mapping.orig_width if mapping else -1,
        "orig_height": mapping.orig_height if mapping else -1,
        "mapping": mapping.to_json() if mapping else "",
    }


def make_line(tmp_path: Path, source_prefix: str | None = None) -> Line:
    """The three images; originals under ``tmp_path/ingest`` (or ``source_prefix``'s URIs)."""
    root = tmp_path / "data"
    rng = np.random.default_rng(0)
    originals = {
        "img-p": rng.integers(0, 255, (48, 64), dtype=np.uint8),
        "img-t": rng.integers(0, 255, (32, 48), dtype=np.uint8),
    }
    paths = {k: tmp_path / "ingest" / f"{k}-orig.png" for k in originals}
    for k, arr in originals.items():
        _png(paths[k], arr)
    for image_id in ("img-a", "img-p", "img-t"):
        _png(root / f"line/new/pool/images/{image_id}.png", np.full((SIZE, SIZE), 7, np.uint8))

    def uri(k: str) -> str:
        return f"{source_prefix}/{k}-orig.png" if source_prefix else paths[k].as_posix()

    rows = [
        _row("img-a", None),
        _row("img-p", PAD, uri("img-p"), sha256_file(paths["img-p"])),
        _row("img-t", TILE, uri("img-t"), sha256_file(paths["img-t"])),
    ]
    manifest = root / "manifests/line.parquet"
    write_manifest(pd.DataFrame(rows), manifest)
    images = [
        TaskImage(
            image_id="img-a",
            path=rows[0]["path"],
            score=0.9,
            areas=[
                TaskArea(area_id=a, cls=c, cells=cells, bbox=b, score=0.8)
                for a, c, b, cells in A_AREAS
            ],
        ),
        TaskImage(
            image_id="img-p",
            path=rows[1]["path"],
            score=0.7,
            areas=[
                TaskArea(
                    area_id="img-p/stain/0",
                    cls="stain",
                    cells=[(1, 1)],
                    bbox=(8, 8, 16, 16),
                    score=0.6,
                    orig_bbox=PAD.to_original((8, 8, 16, 16)),
                )
            ],
            orig_size=(64, 48),
            source_uri=uri("img-p"),
        ),
        TaskImage(
            image_id="img-t",
            path=rows[2]["path"],
            score=0.5,
            areas=[
                TaskArea(
                    area_id="img-t/scratch/0",
                    cls="scratch",
                    cells=[(0, 0)],
                    bbox=(0, 0, 8, 8),
                    score=0.5,
                    orig_bbox=TILE.to_original((0, 0, 8, 8)),
                )
            ],
            orig_size=(48, 32),
            source_uri=uri("img-t"),
        ),
    ]
    tasks = MiningTasks(
        model=MODEL,
        heuristic="detections",
        threshold=0.5,
        stride=STRIDE,
        grid=(SIZE // STRIDE, SIZE // STRIDE),
        classes=CLASSES,
        created_at=datetime(2026, 11, 20, tzinfo=UTC),
        images=images,
    )
    tasks_path = root / "mining/tasks.json"
    tasks_path.parent.mkdir(parents=True)
    tasks_path.write_text(dump(tasks))
    return Line(root, manifest, tasks_path, tasks, {k: paths[k] for k in paths})


@pytest.fixture
def line(tmp_path: Path) -> Line:
    return make_line(tmp_path)


def _export(line: Line) -> LabelStudioExport:
    return export_tasks(
        line.tasks,
        read_manifest(line.manifest, check_files=False),
        line.root,
        tasks_sha256=sha256_file(line.tasks_path),
    )


@pytest.fixture
def exported(line: Line) -> LabelStudioExport:
    return _export(line)


# -- hand-built Label Studio results -----------------------------------------------------------


def rect(
    rid: str, label: str, box: tuple[float, float, float, float], size: tuple[int, int]
) -> dict[str, Any]:
    """A ``rectanglelabels`` result of a box in the shown image's pixels."""
    w, h = size
    x0, y0, x1, y1 = box
    return {
        "id": rid,
        "type": "rectanglelabels",
        "from_name": "label",
        "to_name": "image",
        "original_width": w,
        "original_height": h,
        "image_rotation": 0,
        "origin": "manual",
        "value": {
            "x": 100 * x0 / w,
            "y": 100 * y0 / h,
            "width": 100 * (x1 - x0) / w,
            "height": 100 * (y1 - y0) / h,
            "rotation": 0,
            "rectanglelabels": [label],
        },
    }


def verdict(region: dict[str, Any], choice: str) -> dict[str, Any]:
    """The per-region ``choices`` result Label Studio writes beside a region (same id)."""
    value = {k: v for k, v in region["value"].items() if k != "rectanglelabels"}
    value["choices"] = [choice]
    return {**region, "type": "choices", "from_name": "verdict", "value": value}


def healthy_image() -> dict[str, Any]:
    return {
        "id": "img-flag01",
        "type": "choices",
        "from_name": "image_verdict",
        "to_name": "image",
        "value": {"choices": ["healthy image"]},
    }


def annotation(
    result: list[dict[str, Any]],
    ann_id: int = 1,
    user: int | dict[str, Any] = 1,
    updated: str = T_SUBMIT,
    prediction: dict[str, Any] | None = None,
    parent_prediction: int | None = 11,
    cancelled: bool = False,
) -> dict[str, Any]:
    return {
        "id": ann_id,
        "completed_by": user,
        "result": result,
        "was_cancelled": cancelled,
        "ground_truth": False,
        "created_at": "2026-11-24T09:59:00.000000Z",
        "updated_at": updated,
        "lead_time": 12.5,
        "prediction": prediction if prediction is not None else {},
        "result_count": len(result),
        "parent_prediction": parent_prediction,
        "parent_annotation": None,
        "task": 1,
        "project": 1,
    }


def task(
    tid: int, image_id: str, annotations: list[dict[str, Any]], ex: LabelStudioExport
) -> dict[str, Any]:
    data = next(t["data"] for t in ex.tasks if t["data"]["image_id"] == image_id)
    return {
        "id": tid,
        "data": {**data, "image": "data:image/png;base64,AAAA"},
        "annotations": annotations,
        "drafts": [],
        "predictions": [tid + 10],
        "meta": {},
        "created_at": "2026-11-24T09:00:00.000000Z",
        "updated_at": T_SUBMIT,
        "inner_id": tid,
        "total_annotations": len(annotations),
        "cancelled_annotations": 0,
        "total_predictions": 1,
        "comment_count": 0,
        "unresolved_comment_count": 0,
        "last_comment_updated_at": None,
        "project": 1,
        "updated_by": 1,
        "comment_authors": [],
        "file_upload": None,
    }


def predicted(ex: LabelStudioExport, image_id: str, area_id: str) -> dict[str, Any]:
    """The prediction's region of a detected area, as Label Studio copies it into an annotation."""
    result = next(t for t in ex.tasks if t["data"]["image_id"] == image_id)["predictions"][0]
    region = next(r for r in result["result"] if r["id"] == region_id(image_id, area_id))
    return {k: v for k, v in region.items() if k != "score"} | {"origin": "prediction"}


def relabel(region: dict[str, Any], label: str) -> dict[str, Any]:
    return {**region, "value": {**region["value"], "rectanglelabels": [label]}}


def operator_export(ex: LabelStudioExport) -> list[dict[str, Any]]:
    """An operator's work on img-a (every verdict case, one drawn box) and img-p (flagged
    healthy, a drawn box in the original's pixels), img-t not annotated."""
    a = {area_id: predicted(ex, "img-a", area_id) for area_id, *_ in A_AREAS}
    a_result = [
        a["img-a/scratch/0"],
        verdict(a["img-a/scratch/0"], "defect"),
        a["img-a/stain/0"],
        a["img-a/stain/1"],
        verdict(a["img-a/stain/1"], "healthy"),
        relabel(a["img-a/scratch/1"], "stain"),
        # img-a/stain/2 deleted
        rect("Drawn00001", "scratch", (8, 16, 24, 24), (SIZE, SIZE)),
    ]
    p_result = [
        predicted(ex, "img-p", "img-p/stain/0"),
        rect("Drawn00002", "stain", (32, 16, 48, 40), (64, 48)),  # original pixels
        healthy_image(),
    ]
    return [
        task(1, "img-a", [annotation(a_result)], ex),
        task(2, "img-p", [annotation(p_result, ann_id=2, user={"id": 4, "email": "op@x"})], ex),
        task(3, "img-t", [], ex),
    ]


# -- the labeling config -----------------------------------------------------------------------


def test_config_has_a_label_per_class_and_both_verdicts() -> None:
    root = ET.fromstring(labeling_config(["scratch", 'odd "name" & <b>']))
    labels = root.find("RectangleLabels")
    assert labels is not None
    assert labels.get("name") == "label" and labels.get("toName") == "image"
    assert [e.get("value") for e in labels] == ["scratch", 'odd "name" & <b>']
    assert root.find("Image").get("value") == "$image"  # type: ignore[union-attr]
    verdict_ = root.find(".//Choices[@name='verdict']")
    assert verdict_ is not None and verdict_.get("perRegion") == "true"
    assert [c.get("value") for c in verdict_] == ["defect", "healthy"]
    image_verdict = root.find("Choices[@name='image_verdict']")
    assert image_verdict is not None
    assert [c.get("value") for c in image_verdict] == ["healthy image"]


# -- export ------------------------------------------------------------------------------------


def test_export_shows_the_originals_with_percent_boxes(
    line: Line, exported: LabelStudioExport
) -> None:
    by_id = {t["data"]["image_id"]: t for t in exported.tasks}
    assert list(by_id) == ["img-a", "img-p", "img-t"]
    assert exported.notes == []
    # the original of img-p (64 x 48), decoded like ingestion; the stored img-a (32 x 32)
    shown = _decode_uri(by_id["img-p"]["data"]["image"])
    assert np.array_equal(shown, np.asarray(Image.open(line.originals["img-p"])))
    assert _decode_uri(by_id["img-a"]["data"]["image"]).shape == (SIZE, SIZE)
    assert _decode_uri(by_id["img-t"]["data"]["image"]).shape == (32, 48)  # the whole original
    # one prediction of the mining model; a region per area, in percent of the image shown
    (pred,) = by_id["img-p"]["predictions"]
    assert pred["model_version"] == VERSION and pred["score"] == 0.7
    (region,) = pred["result"]
    assert region["id"] == region_id("img-p", "img-p/stain/0")
    assert region["type"] == "rectanglelabels" and region["score"] == 0.6
    assert (region["original_width"], region["original_height"]) == (64, 48)
    # stored (8, 8, 16, 16) -> original (16, 8, 32, 24) of 64 x 48
    assert region["value"]["rectanglelabels"] == ["stain"]
    for key, want in {"x": 25.0, "y": 100 * 8 / 48, "width": 25.0, "height": 100 * 16 / 48}.items():
        assert region["value"][key] == pytest.approx(want), key
    (tile_region,) = by_id["img-t"]["predictions"][0]["result"]
    assert tile_region["value"]["x"] == pytest.approx(100 * 16 / 48)  # the tile's offset
    assert [r["id"] for r in by_id["img-a"]["predictions"][0]["result"]] == [
        region_id("img-a", a) for a, *_ in A_AREAS
    ]
    # no verdict preset
    results = [r for t in exported.tasks for r in t["predictions"][0]["result"]]
    assert {r["type"] for r in results} == {"rectanglelabels"}


def test_region_ids_are_stable_and_distinct() -> None:
    assert region_id("img-a", "x/0") == region_id("img-a", "x/0")
    ids = {region_id("img-a", "x/0"), region_id("img-b", "x/0"), region_id("img-a", "x/1")}
    assert len(ids) == 3
    assert len(region_id("i", "a")) == 18


def test_export_writes_three_files_that_read_back(
    exported: LabelStudioExport, tmp_path: Path
) -> None:
    written = write_export(exported, tmp_path / "ls")
    assert sorted(Path(p).name for p in written) == ["config.xml", "mapping.json", "tasks.json"]
    assert json.loads((tmp_path / "ls/tasks.json").read_text()) == exported.tasks
    assert (tmp_path / "ls/config.xml").read_text() == labeling_config(CLASSES)
    mapping = read_mapping(tmp_path / "ls/mapping.json")
    assert mapping == exported.mapping
    with pytest.raises(LabelStudioError, match="s3://bucket/prefix"):
        write_export(exported, tmp_path / "ls2", s3_prefix="plant-bucket/round-1")
    with pytest.raises(LabelStudioError, match=r"nowhere/mapping\.json: not found"):
        read_mapping(tmp_path / "nowhere/mapping.json")
    p = mapping.images["img-p"]
    assert (p.shown, p.shown_size, p.stored_size) == ("original", (64, 48), (SIZE, SIZE))
    assert p.to_mapping() == PAD
    assert p.regions[region_id("img-p", "img-p/stain/0")].area_id == "img-p/stain/0"
    assert mapping.images["img-a"].shown == "stored"  # synthetic: no original


def test_unreadable_or_changed_original_falls_back_to_the_stored_image(line: Line) -> None:
    line.originals["img-p"].unlink()
    Image.fromarray(np.zeros((32, 48), np.uint8)).save(line.originals["img-t"])  # not ingested
    ex = _export(line)
    assert len(ex.notes) == 2
    assert "img-p" in ex.notes[0] and "unreadable" in ex.notes[0]
    assert "img-t" in ex.notes[1] and "changed since ingestion" in ex.notes[1]
    p = ex.mapping.images["img-p"]
    assert (p.shown, p.shown_size, p.source_uri) == ("stored", (SIZE, SIZE), "")
    task_p = next(t for t in ex.tasks if t["data"]["image_id"] == "img-p")
    assert _decode_uri(task_p["data"]["image"]).shape == (SIZE, SIZE)
    # percent of the stored image: bbox (8, 8, 16, 16) of 32 x 32
    value = task_p["predictions"][0]["result"][0]["value"]
    assert (value["x"], value["y"], value["width"], value["height"]) == (25, 25, 25, 25)


def test_export_rejects_images_missing_from_the_manifest(line: Line) -> None:
    df = read_manifest(line.manifest, check_files=False)
    with pytest.raises(LabelStudioError, match="img-t"):
        export_tasks(line.tasks, df[df["image_id"] != "img-t"], line.root, "0" * 64)


# -- import ------------------------------------------------------------------------------------


def test_import_every_verdict_case(exported: LabelStudioExport) -> None:
    fb, summary = import_annotations(parse_export(operator_export(exported)), exported.mapping)
    assert fb.tasks_sha256 == exported.mapping.tasks_sha256
    a, p = fb.items
    assert (a.image_id, a.operator, a.healthy) == ("img-a", "labelstudio:1", None)
    assert a.timestamp == datetime(2026, 11, 24, 10, 0, 0, 123456, tzinfo=UTC)
    got = {v.area_id: (v.verdict, v.corrected_class) for v in a.areas}
    assert got == {
        "img-a/scratch/0": ("defect", None),  # "defect"
        "img-a/stain/0": ("defect", None),  # kept, no verdict
        "img-a/stain/1": ("healthy", None),  # "healthy"
        "img-a/scratch/1": ("defect", "stain"),  # relabelled
        "img-a/stain/2": ("healthy", None),  # deleted
    }
    (d,) = a.drawn
    assert (d.area_id, d.cls, d.bbox) == ("labelstudio/Drawn00001", "scratch", (8, 16, 24, 24))
    # img-p: flagged healthy; its kept region confirmed; the box drawn on the 64 x 48 original
    # (32, 16, 48, 40) is (16, 12, 24, 24) in the stored (padded) pixels
    assert (p.operator, p.healthy) == ("op@x", True)
    assert [(v.area_id, v.verdict) for v in p.areas] == [("img-p/stain/0", "defect")]
    assert [(x.cls, x.bbox) for x in p.drawn] == [("stain", (16, 12, 24, 24))]
    assert PAD.from_original((32, 16, 48, 40), SIZE) == (16, 12, 24, 24)
    assert (summary.n_tasks, summary.n_items, summary.n_unannotated) == (3, 2, 1)
    assert (summary.n_confirmed, summary.n_corrected, summary.n_rejected) == (4, 1, 2)
    assert (summary.n_drawn, summary.n_healthy_images, summary.reported) == (2, 1, [])


def test_imported_feedback_becomes_partial_labels(line: Line, exported: LabelStudioExport) -> None:
    fb, _ = import_annotations(parse_export(operator_export(exported)), exported.mapping)
    labels, report = build_partial_labels(line.tasks, [(Path("ls.json"), fb)], 0.06)
    assert labels.ids == ["img-a", "img-p"]
    a = labels.ids.index("img-a")
    assert labels.targets[a, SCRATCH, 0, 0] == 1  # confirmed scratch
    assert labels.targets[a, STAIN, 0, 1] == 1  # kept without verdict: confirmed stain
    assert labels.annotated[a, :, 0, 2].all() and labels.targets[a, :, 0, 2].sum() == 0
    assert labels.targets[a, STAIN, 0, 3] == 1 and labels.annotated[a, SCRATCH, 0, 3]
    assert labels.targets[a, SCRATCH, 0, 3] == 0  # relabelled scratch -> stain
    assert labels.annotated[a, :, 3, 0].all() and labels.targets[a, :, 3, 0].sum() == 0
    # drawn scratch (8, 16, 24, 24): cells (2, 1) and (2, 2)
    assert labels.targets[a, SCRATCH, 2, 1:3].tolist() == [1, 1]
    assert labels.annotated[a, SCRATCH].sum() == 6 and labels.annotated[a, STAIN].sum() == 4
    assert labels.healthy.tolist() == [False, True]
    assert report.n_drawn == 2


def test_latest_annotation_wins_and_skipped_tasks_give_no_item(
    exported: LabelStudioExport,
) -> None:
    first = predicted(exported, "img-t", "img-t/scratch/0")
    older = annotation([verdict(first, "healthy"), first], ann_id=5, updated="2026-11-24T08:00:00Z")
    newer = annotation([first], ann_id=6, updated="2026-11-24T09:00:00Z")
    skipped = annotation([], ann_id=7, cancelled=True, updated="2026-11-24T11:00:00Z")
    export = [
        task(1, "img-t", [newer, older, skipped], exported),
        task(2, "img-a", [annotation([], ann_id=8, cancelled=True)], exported),
    ]
    fb, summary = import_annotations(parse_export(export), exported.mapping)
    (item,) = fb.items
    assert [(v.area_id, v.verdict) for v in item.areas] == [("img-t/scratch/0", "defect")]
    assert (summary.n_skipped, summary.n_unannotated, summary.n_items) == (1, 0, 1)
    assert summary.n_not_in_export == 1  # img-p has no task in this export


def test_drawn_box_outside_the_tile_is_reported_not_imported(
    exported: LabelStudioExport,
) -> None:
    result = [
        rect("OtherTile1", "stain", (0, 0, 8, 8), (48, 32)),  # x < 16: the first tile's
        rect("Straddle01", "stain", (8, 8, 24, 16), (48, 32)),  # half in this tile
    ]
    export = [task(1, "img-t", [annotation(result, parent_prediction=None)], exported)]
    fb, summary = import_annotations(parse_export(export), exported.mapping, "proj.json")
    (item,) = fb.items
    assert [(d.area_id, d.bbox) for d in item.drawn] == [("labelstudio/Straddle01", (0, 8, 8, 16))]
    (msg,) = summary.reported
    assert "proj.json" in msg and "OtherTile1" in msg and "img-t" in msg and "tile" in msg
    # drawn from scratch (no prediction): the detected area stays unanswered
    assert item.areas == [] and summary.n_without_prediction == 1


def test_rotated_region_becomes_its_bounding_box(exported: LabelStudioExport) -> None:
    region = rect("Rotated001", "scratch", (8, 8, 16, 16), (SIZE, SIZE))
    region["value"]["rotation"] = 90  # about its top-left corner: x 0..8, y 8..16
    export = [task(1, "img-a", [annotation([region], parent_prediction=None)], exported)]
    fb, _ = import_annotations(parse_export(export), exported.mapping)
    assert fb.items[0].drawn[0].bbox == (0, 8, 8, 16)


def test_drawn_region_marked_healthy_is_reported(exported: LabelStudioExport) -> None:
    region = rect("DrawnHlthy", "scratch", (8, 8, 16, 16), (SIZE, SIZE))
    export = [task(1, "img-a", [annotation([region, verdict(region, "healthy")])], exported)]
    fb, summary = import_annotations(parse_export(export), exported.mapping)
    assert fb.items[0].drawn == []
    assert len(summary.reported) == 1 and "DrawnHlthy" in summary.reported[0]


def test_embedded_prediction_limits_what_counts_as_deleted(exported: LabelStudioExport) -> None:
    """Only the regions the operator was shown (the embedded prediction's) can be deleted."""
    kept = predicted(exported, "img-a", "img-a/scratch/0")
    shown = predicted(exported, "img-a", "img-a/stain/0")
    ours = {"model_version": VERSION, "result": [kept, shown]}
    other = {"model_version": "v0@old", "result": [{"id": "zzz"}]}  # another round's: ignored
    export = [
        task(1, "img-a", [annotation([kept], prediction=ours, parent_prediction=None)], exported),
        task(2, "img-p", [annotation([], prediction=other, parent_prediction=None)], exported),
    ]
    fb, summary = import_annotations(parse_export(export), exported.mapping)
    got = {v.area_id: v.verdict for v in fb.items[0].areas}
    assert got == {"img-a/scratch/0": "defect", "img-a/stain/0": "healthy"}
    assert fb.items[1].areas == [] and summary.n_without_prediction == 1


def test_errors_name_the_export_task_and_ids(exported: LabelStudioExport) -> None:
    good = predicted(exported, "img-a", "img-a/scratch/0")
    foreign = predicted(exported, "img-p", "img-p/stain/0")  # a region of another image
    export = operator_export(exported)
    export[0]["annotations"][0]["result"] += [
        {**foreign, "id": foreign["id"]},
        relabel(rect("BadLabel01", "scratch", (0, 0, 8, 8), (SIZE, SIZE)), "hole"),
        {**good, "from_name": "comment", "type": "textarea", "value": {"text": ["hi"]}},
    ]
    export.append(task(9, "img-a", [], exported) | {"data": {"image_id": "img-zzz"}})
    with pytest.raises(LabelStudioError) as exc:
        import_annotations(parse_export(export), exported.mapping, "project-3.json")
    msg = str(exc.value)
    assert msg.startswith("4 problem(s)")
    assert "project-3.json: task 9" in msg and "unknown image id 'img-zzz'" in msg
    assert f"unknown region id {foreign['id']!r}" in msg and "task 1 (image 'img-a')" in msg
    assert "unknown control 'comment'" in msg
    assert "'BadLabel01': label 'hole' is not a class" in msg


def test_not_an_export_is_an_error() -> None:
    with pytest.raises(LabelStudioError, match="list of tasks"):
        parse_export({"tasks": []}, "x.json")
    with pytest.raises(LabelStudioError, match=r"x\.json: task #0 \(id 4\)"):
        parse_export([{"id": 4}], "x.json")


# -- S3: originals read from a bucket, the export uploaded -------------------------------------


def test_originals_from_s3_and_upload(tmp_path: Path, s3_endpoint: str) -> None:
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, **aws_client_kwargs())
    s3.create_bucket(Bucket="ls-plant")
    line = make_line(tmp_path, source_prefix="s3://ls-plant/cam1")
    for k, path in line.originals.items():
        s3.put_object(Bucket="ls-plant", Key=f"cam1/{k}-orig.png", Body=path.read_bytes())
    from mentoring.formats.labelstudio import SourceReader

    ex = export_tasks(
        line.tasks,
        read_manifest(line.manifest, check_files=False),
        line.root,
        "0" * 64,
        read_source=SourceReader(s3_endpoint),
    )
    assert ex.notes == []
    assert ex.mapping.images["img-p"].source_uri == "s3://ls-plant/cam1/img-p-orig.png"
    written = write_export(ex, tmp_path / "out", "s3://ls-plant/labelstudio/r1", s3_endpoint)
    assert "s3://ls-plant/labelstudio/r1/tasks/tasks.json" in written
    body = s3.get_object(Bucket="ls-plant", Key="labelstudio/r1/tasks/tasks.json")["Body"]
    assert json.loads(body.read()) == ex.tasks
    listed = s3.list_objects_v2(Bucket="ls-plant", Prefix="labelstudio/")["Contents"]
    names = ("tasks/tasks.json", "config.xml", "mapping.json")
    assert {o["Key"] for o in listed} == {f"labelstudio/r1/{k}" for k in names}
    with pytest.raises(LabelStudioError, match="s3://no-such-bucket"):
        write_export(ex, tmp_path / "out2", "s3://no-such-bucket/x", s3_endpoint)


# -- the CLI -----------------------------------------------------------------------------------


def test_cli_round_trip(line: Line, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    res = runner.invoke(
        app,
        ["annotate", "export-labelstudio", "--tasks", str(line.tasks_path),
         "--manifest", str(line.manifest), "--out", "ls"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "3 Label Studio tasks (2 showing the original image, 1 the stored" in res.output
    ex = LabelStudioExport(
        json.loads((tmp_path / "ls/tasks.json").read_text()),
        "",
        read_mapping(tmp_path / "ls/mapping.json"),
    )
    (tmp_path / "project-3.json").write_text(json.dumps(operator_export(ex)))
    res = runner.invoke(
        app, ["mentor", "import-labelstudio", "project-3.json", "--export-dir", "ls"]
    )
    assert res.exit_code == 0, res.output
    assert "2 images from 3 tasks" in res.output and "1 tasks without annotation" in res.output
    fb = read_feedback(tmp_path / "data/feedback/labelstudio-project-3.json")
    assert fb.tasks_sha256 == sha256_file(line.tasks_path)
    assert [it.image_id for it in fb.items] == ["img-a", "img-p"]
    # an unknown image is exit code 2 and one line naming it
    bad = operator_export(ex)
    bad[0]["data"]["image_id"] = "img-nope"
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    res = runner.invoke(app, ["mentor", "import-labelstudio", "bad.json", "--export-dir", "ls"])
    assert res.exit_code == 2
    assert "img-nope" in res.output


def test_cli_imports_into_the_mining_rounds_feedback(
    line: Line, tmp_path: Path, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Label Studio path of a published round: the mapping is read from the round's
    labelstudio/ on S3 and the feedback lands in its feedback/, where retraining imports it."""
    from mentoring.feedback.rounds import MiningRound, publish_round

    s3 = boto3.client("s3", endpoint_url=s3_endpoint, **aws_client_kwargs())
    s3.create_bucket(Bucket="ls-round")
    rnd = publish_round(line.tasks_path, line.root, "s3://ls-round/mining", s3_endpoint)
    ex = export_tasks(
        line.tasks, read_manifest(line.manifest, check_files=False), line.root,
        sha256_file(line.tasks_path),
    )  # fmt: skip
    write_export(ex, tmp_path / "ls", rnd.labelstudio_uri, s3_endpoint)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "project-3.json").write_text(json.dumps(operator_export(ex)))
    res = CliRunner().invoke(
        app,
        ["mentor", "import-labelstudio", "project-3.json", "--export-dir", rnd.labelstudio_uri,
         "--endpoint-url", s3_endpoint],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert f"{rnd.feedback_uri}/labelstudio-project-3.json" in " ".join(res.output.split())
    assert not (tmp_path / "data/feedback").exists()  # nothing local
    rnd = MiningRound(rnd.uri, s3_endpoint)
    (path,) = rnd.fetch_feedback(tmp_path / "fetched")
    fb = read_feedback(path)
    assert fb.tasks_sha256 == sha256_file(line.tasks_path)
    assert [it.image_id for it in fb.items] == ["img-a", "img-p"]
