"""Tests of the COCO import and export (src/mentoring/formats/coco.py) and their CLI.

Every fixture is built here: tiny PNGs, COCO files with polygons, both kinds of RLE, bbox-only and
overlapping annotations, manifests whose rows carry resize / pad / tile mappings, a mining
tasks.json and feedback files.
"""

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pycocotools.mask as mask_utils
import pytest
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from typer.testing import CliRunner

from mentoring.cli import app
from mentoring.data.images import Mapping, encode_png, fit
from mentoring.data.manifest import write_manifest
from mentoring.formats.coco import FormatError, export_coco, import_coco

# pycocotools' decode predates numpy 2's copy keyword (a DeprecationWarning per call)
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

CATEGORIES = [{"id": 7, "name": "scratch"}, {"id": 3, "name": "dent"}]  # id order: dent, scratch


def _png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _uncompressed(mask: np.ndarray) -> dict[str, Any]:
    """COCO's uncompressed RLE: run lengths over the column-major pixels, zeros first."""
    flat = mask.flatten(order="F").astype(np.uint8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0] == 1:
        counts = [0, *counts]
    return {"size": list(mask.shape), "counts": counts}


def _rect(h: int, w: int, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def make_coco(folder: Path) -> tuple[Path, Path]:
    """Six 20x16 images: polygon, compressed RLE, uncompressed RLE, bbox only, overlap, none."""
    h, w = 16, 20
    images_dir = folder / "images"
    names = ["poly", "rle", "raw", "box", "overlap", "healthy"]
    images = []
    for i, name in enumerate(names, start=1):
        file_name = f"sub/{name}.png" if name == "poly" else f"{name}.png"
        _png(images_dir / file_name, np.full((h, w), 40 * i, np.uint8))
        images.append({"id": i, "file_name": file_name, "width": w, "height": h})
    rle = mask_utils.encode(np.asfortranarray(_rect(h, w, 10, 4, 15, 9)))
    anns = [
        {"id": 1, "image_id": 1, "category_id": 7, "segmentation": [[2, 3, 6, 3, 6, 8, 2, 8]]},
        {
            "id": 2,
            "image_id": 2,
            "category_id": 3,
            "segmentation": {"size": [h, w], "counts": rle["counts"].decode()},
            "iscrowd": 1,
        },
        {
            "id": 3,
            "image_id": 3,
            "category_id": 7,
            "segmentation": _uncompressed(_rect(h, w, 0, 0, 4, 16)),
        },
        {"id": 4, "image_id": 4, "category_id": 3, "segmentation": [], "bbox": [4, 2, 5, 3]},
        # overlap: a big scratch, then a dent inside it, then a scratch over part of the dent
        {"id": 5, "image_id": 5, "category_id": 7, "bbox": [0, 0, 12, 12]},
        {"id": 6, "image_id": 5, "category_id": 3, "bbox": [4, 4, 6, 6]},
        {"id": 7, "image_id": 5, "category_id": 7, "bbox": [8, 8, 4, 4]},
    ]
    ann_file = folder / "instances.json"
    ann_file.write_text(
        json.dumps({"images": images, "annotations": anns, "categories": CATEGORIES})
    )
    return ann_file, images_dir


def _mask(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_import_polygons_rle_boxes_overlap(tmp_path: Path) -> None:
    ann_file, images_dir = make_coco(tmp_path / "coco")
    out = tmp_path / "ingest"
    res = import_coco(ann_file, images_dir, out, "new", "pool")
    assert res.classes == ["dent", "scratch"]  # category-id order: dent (3) = 1, scratch (7) = 2
    assert json.loads((out / "classes.json").read_text()) == ["dent", "scratch"]
    masks = out / "new/pool/masks"
    assert sorted(p.stem for p in masks.iterdir()) == [
        "box",
        "healthy",
        "overlap",
        "raw",
        "rle",
        "sub-poly",
    ]
    h, w = 16, 20
    assert np.array_equal(_mask(masks / "sub-poly.png"), 2 * _rect(h, w, 2, 3, 6, 8))
    assert np.array_equal(_mask(masks / "rle.png"), 1 * _rect(h, w, 10, 4, 15, 9))
    assert np.array_equal(_mask(masks / "raw.png"), 2 * _rect(h, w, 0, 0, 4, 16))
    assert np.array_equal(_mask(masks / "box.png"), 1 * _rect(h, w, 4, 2, 9, 5))
    expected = 2 * _rect(h, w, 0, 0, 12, 12)
    expected[4:10, 4:10] = 1  # the later dent wins over the scratch
    expected[8:12, 8:12] = 2  # and the even later scratch over the dent
    assert np.array_equal(_mask(masks / "overlap.png"), expected)
    assert not _mask(masks / "healthy.png").any()
    # image bytes are copied as they are
    src = (images_dir / "sub/poly.png").read_bytes()
    assert (out / "new/pool/images/sub-poly.png").read_bytes() == src
    count = res.splits["pool"]
    assert (count.images, count.healthy) == (6, 1)
    assert count.classes == {"dent": 3, "scratch": 3}
    # merging into an existing classes.json keeps its indices
    out2 = tmp_path / "ingest2"
    out2.mkdir()
    (out2 / "classes.json").write_text('["scratch", "hole"]')
    res2 = import_coco(ann_file, images_dir, out2, "original", "eval")
    assert res2.classes == ["scratch", "hole", "dent"] and res2.new_classes == ["dent"]
    assert set(np.unique(_mask(out2 / "original/eval/masks/overlap.png"))) == {0, 1, 3}


def test_unknown_ids_and_bad_files_name_what_is_wrong(tmp_path: Path) -> None:
    ann_file, images_dir = make_coco(tmp_path / "coco")
    data = json.loads(ann_file.read_text())
    good = json.dumps(data)
    data["annotations"] += [
        {"id": 41, "image_id": 999, "category_id": 7, "bbox": [0, 0, 1, 1]},
        {"id": 42, "image_id": 1, "category_id": 55, "bbox": [0, 0, 1, 1]},
    ]
    ann_file.write_text(json.dumps(data))
    out = tmp_path / "ingest"
    with pytest.raises(FormatError) as err:
        import_coco(ann_file, images_dir, out, "new", "pool")
    assert "annotation 41: unknown image_id 999" in str(err.value)
    assert "annotation 42: unknown category_id 55" in str(err.value)
    assert not out.exists()  # nothing written

    data = json.loads(good)
    data["annotations"][1]["segmentation"]["size"] = [8, 8]
    ann_file.write_text(json.dumps(data))
    with pytest.raises(FormatError, match=r"annotation 2: RLE size \[8, 8\]"):
        import_coco(ann_file, images_dir, out, "new", "pool")
    data = json.loads(good)
    del data["annotations"][0]["segmentation"]
    ann_file.write_text(json.dumps(data))
    with pytest.raises(FormatError, match=r"annotation 1: no segmentation and no"):
        import_coco(ann_file, images_dir, out, "new", "pool")
    ann_file.write_text('{"images": []}')
    with pytest.raises(FormatError, match=r"instances.json: no 'annotations' list"):
        import_coco(ann_file, images_dir, out, "new", "pool")
    with pytest.raises(FormatError, match=r"split 'train' of domain 'new'"):
        import_coco(ann_file, images_dir, out, "new", "train")


def test_missing_image_is_skipped_and_reimport_needs_overwrite(tmp_path: Path) -> None:
    ann_file, images_dir = make_coco(tmp_path / "coco")
    (images_dir / "rle.png").unlink()
    out = tmp_path / "ingest"
    res = import_coco(ann_file, images_dir, out, "new", "pool")
    assert [(Path(s.file).name, s.reason) for s in res.skipped] == [
        ("rle.png", "image file not found (image 2)")
    ]
    with pytest.raises(FormatError, match=r"pass --overwrite"):
        import_coco(ann_file, images_dir, out, "new", "pool")
    assert import_coco(ann_file, images_dir, out, "new", "pool", overwrite=True).splits


# --- export ---------------------------------------------------------------------------------------


def _row(
    image_id: str,
    path: str,
    mask_path: str,
    size: tuple[int, int],
    mapping: Mapping | None = None,
    source_uri: str = "",
    split: str = "pool",
) -> dict[str, Any]:
    w, h = size
    return {
        "image_id": image_id,
        "path": path,
        "mask_path": mask_path,
        "domain": image_id.split("-")[0],
        "split": split,
        "part_ref": "",
        "width": w,
        "height": h,
        "channels": 1,
        "sha256": "",
        "defect_classes": "",
        "n_defects": 0,
        "n_nuisances": 0,
        "source_uri": source_uri,
        "orig_width": mapping.orig_width if mapping else w,
        "orig_height": mapping.orig_height if mapping else h,
        "mapping": mapping.to_json() if mapping else "",
    }


def _decoded(dataset: dict[str, Any], image_id: int) -> np.ndarray:
    """The class-index mask an export's annotations of one image paint."""
    img = next(i for i in dataset["images"] if i["id"] == image_id)
    out = np.zeros((img["height"], img["width"]), np.uint8)
    for ann in dataset["annotations"]:
        if ann["image_id"] == image_id:
            out[mask_utils.decode(ann["segmentation"]).astype(bool)] = ann["category_id"]
    return out


def test_round_trip_import_export_identity(tmp_path: Path) -> None:
    ann_file, images_dir = make_coco(tmp_path / "coco")
    root = tmp_path / "data"
    res = import_coco(ann_file, images_dir, root / "line", "new", "pool")
    rows = [
        _row(
            f"new-pool-{p.stem}",
            f"line/new/pool/images/{p.name}",
            f"line/new/pool/masks/{p.stem}.png",
            (20, 16),
        )
        for p in sorted((root / "line/new/pool/images").iterdir())
    ]
    write_manifest(pd.DataFrame(rows), root / "manifests/line.parquet")
    gt = tmp_path / "gt.json"
    result = export_coco(root / "manifests/line.parquet", res.classes, gt)
    dataset = json.loads(gt.read_text())
    assert [c["name"] for c in dataset["categories"]] == ["dent", "scratch"]
    # stable ids: 1..N in sorted mentoring image id order, the id kept on the image
    ids = [(i["id"], i["mentoring_image_ids"]) for i in dataset["images"]]
    assert ids == [(k, [r["image_id"]]) for k, r in enumerate(rows, start=1)]
    for img in dataset["images"]:
        name = img["mentoring_image_ids"][0].removeprefix("new-pool-")
        imported = _mask(root / f"line/new/pool/masks/{name}.png")
        assert np.array_equal(_decoded(dataset, img["id"]), imported), name
    # one instance per connected component: the overlap image has one dent (less the corner the
    # last scratch covers) and one scratch (the big box around the dent, joined by the last one)
    by_image = {i["mentoring_image_ids"][0]: i["id"] for i in dataset["images"]}
    anns = [a for a in dataset["annotations"] if a["image_id"] == by_image["new-pool-overlap"]]
    assert sorted(a["category_id"] for a in anns) == [1, 2]
    box = next(a for a in dataset["annotations"] if a["image_id"] == by_image["new-pool-box"])
    assert box["bbox"] == [4.0, 2.0, 5.0, 3.0] and box["area"] == 15
    assert result.annotations == {"dent": 3, "scratch": 3}
    assert len(COCO(str(gt)).getAnnIds()) == 6  # pycocotools reads it


@pytest.mark.parametrize("policy", ["resize", "pad", "tile"])
def test_export_maps_ground_truth_to_original_pixels(tmp_path: Path, policy: str) -> None:
    """Stored pieces of an 80x48 image (resize/pad to 40, or 32-pixel tiles) -> the original."""
    h, w = 48, 80
    original = np.zeros((h, w), np.uint8)
    original[4:12, 6:30] = 1  # even-aligned: nearest down- then up-sampling by 2 is exact
    original[20:40, 50:76] = 2
    original[30:34, 10:14] = 2
    image = np.zeros((h, w), np.uint8)
    size = 32 if policy == "tile" else 40
    root = tmp_path / "data"
    rows = []
    for piece in fit(image, original, size, policy):
        image_id = f"new-pool-part{piece.suffix}"
        mask_rel = f"line/new/pool/masks/{image_id}.png"
        (root / mask_rel).parent.mkdir(parents=True, exist_ok=True)
        assert piece.mask is not None
        (root / mask_rel).write_bytes(encode_png(piece.mask))
        rows.append(
            _row(
                image_id,
                f"line/new/pool/images/{image_id}.png",
                mask_rel,
                (size, size),
                piece.mapping,
                source_uri="/camera/part.png",
            )
        )
    rows.append(_row("new-pool-unlabelled", "line/new/pool/images/u.png", "", (size, size)))
    write_manifest(pd.DataFrame(rows), root / "manifests/line.parquet")
    gt = tmp_path / "gt.json"
    export_coco(root / "manifests/line.parquet", ["scratch", "dent"], gt)
    dataset = json.loads(gt.read_text())
    part, unlabelled = dataset["images"]
    # tiles of one camera image are one COCO image
    assert (part["width"], part["height"], part["file_name"]) == (w, h, "/camera/part.png")
    assert len(part["mentoring_image_ids"]) == (6 if policy == "tile" else 1)
    assert part["labelled"] and not unlabelled["labelled"]
    assert np.array_equal(_decoded(dataset, part["id"]), original)
    boxes = sorted((a["category_id"], a["bbox"]) for a in dataset["annotations"])
    assert boxes == [
        (1, [6.0, 4.0, 24.0, 8.0]),
        (2, [10.0, 30.0, 4.0, 4.0]),
        (2, [50.0, 20.0, 26.0, 20.0]),
    ]


def _tasks(path: Path, resize: Mapping) -> None:
    area = {"cells": [[0, 1]], "bbox": [8, 0, 16, 8], "score": 0.9}
    data = {
        "schema_version": 1,
        "model": {"name": "baseline", "path": "models/baseline.pt", "sha256": "0" * 64},
        "heuristic": "detections",
        "threshold": 0.5,
        "stride": 8,
        "grid": [4, 4],
        "classes": ["scratch", "dent"],
        "created_at": "2026-01-05T10:00:00Z",
        "images": [
            {
                "image_id": "new-pool-a",
                "path": "line/new/pool/images/new-pool-a.png",
                "score": 0.9,
                "orig_size": [64, 48],
                "areas": [
                    {
                        "area_id": "new-pool-a/scratch/0",
                        "class": "scratch",
                        **area,
                        "orig_bbox": list(resize.to_original((8, 0, 16, 8))),
                    },
                    # no orig_bbox (tasks mined before ingestion kept one): mapped by the row
                    {
                        "area_id": "new-pool-a/dent/0",
                        "class": "dent",
                        "cells": [[2, 2], [2, 3]],
                        "bbox": [16, 16, 32, 24],
                        "score": 0.7,
                    },
                ],
            },
            {
                "image_id": "new-pool-b",
                "path": "line/new/pool/images/new-pool-b.png",
                "score": 0.6,
                "areas": [
                    {"area_id": "new-pool-b/scratch/0", "class": "scratch", **area, "score": 0.6}
                ],
            },
        ],
    }
    path.write_text(json.dumps(data))


def _feedback(path: Path, items: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps({"schema_version": 1, "items": items}))
    return path


@pytest.fixture
def mined(tmp_path: Path) -> tuple[Path, Path, list[Path]]:
    """A manifest (a: 64x48 resized to 32, b: 32x32 identity), tasks and two feedback files."""
    root = tmp_path / "data"
    resize = fit(np.zeros((48, 64), np.uint8), None, 32, "resize")[0].mapping
    rows = [
        _row(
            "new-pool-a",
            "line/new/pool/images/new-pool-a.png",
            "",
            (32, 32),
            resize,
            source_uri="s3://plant/a.png",
        ),
        _row("new-pool-b", "line/new/pool/images/new-pool-b.png", "", (32, 32)),
        _row("original-train-c", "line/original/train/images/c.png", "", (32, 32), split="train"),
    ]
    write_manifest(pd.DataFrame(rows), root / "manifests/line.parquet")
    tasks = tmp_path / "tasks.json"
    _tasks(tasks, resize)
    a0, a1 = "new-pool-a/scratch/0", "new-pool-a/dent/0"
    f1 = _feedback(
        tmp_path / "op1.json",
        [
            {
                "image_id": "new-pool-a",
                "operator": "op1",
                "timestamp": "2026-01-06T09:00:00Z",
                "areas": [
                    {"area_id": a0, "verdict": "healthy"},
                    {"area_id": a1, "verdict": "healthy"},
                ],
            },
        ],
    )
    f2 = _feedback(
        tmp_path / "op2.json",
        [
            # newer: wins over op1's verdict on a0
            {
                "image_id": "new-pool-a",
                "operator": "op2",
                "timestamp": "2026-01-07T09:00:00Z",
                "areas": [{"area_id": a0, "verdict": "defect", "corrected_class": "dent"}],
            },
            {
                "image_id": "new-pool-b",
                "operator": "op3",
                "timestamp": "2026-01-07T10:00:00Z",
                "healthy": True,
            },
        ],
    )
    return root / "manifests/line.parquet", tasks, [f2, f1]


def test_detections_and_verdicts_in_original_pixels(
    tmp_path: Path, mined: tuple[Path, Path, list[Path]]
) -> None:
    manifest, tasks, feedback = mined
    gt = tmp_path / "out/gt.json"
    result = export_coco(
        manifest, ["scratch", "dent"], gt, tasks=tasks, feedback=feedback, domain="new"
    )
    assert result.detections_out == tmp_path / "out/gt.detections.json"
    dets = json.loads(result.detections_out.read_text())
    dataset = json.loads(gt.read_text())
    ids = {i["mentoring_image_ids"][0]: i["id"] for i in dataset["images"]}
    assert list(ids) == ["new-pool-a", "new-pool-b"]  # --domain new: only its rows
    a = next(i for i in dataset["images"] if i["id"] == ids["new-pool-a"])
    assert (a["width"], a["height"], a["file_name"]) == (64, 48, "s3://plant/a.png")
    by_area = {d["attributes"]["area_id"]: d for d in dets}
    scratch, dent = by_area["new-pool-a/scratch/0"], by_area["new-pool-a/dent/0"]
    # a: stored 32x32 from 64x48 (x2, x1.5); cell (row 0, col 1) = stored [8,16)x[0,8)
    assert scratch["image_id"] == ids["new-pool-a"] and scratch["category_id"] == 1
    assert scratch["bbox"] == [16.0, 0.0, 16.0, 12.0] and scratch["score"] == 0.9
    assert np.array_equal(mask_utils.decode(scratch["segmentation"]), _rect(48, 64, 16, 0, 32, 12))
    assert dent["category_id"] == 2 and dent["bbox"] == [32.0, 24.0, 32.0, 12.0]
    assert np.array_equal(mask_utils.decode(dent["segmentation"]), _rect(48, 64, 32, 24, 64, 36))
    # verdicts: the newest record wins; an image flagged healthy makes its areas healthy
    assert scratch["attributes"] | {} == {
        "area_id": "new-pool-a/scratch/0",
        "mentoring_image_id": "new-pool-a",
        "verdict": "defect",
        "corrected_class": "dent",
        "operator": "op2",
        "timestamp": "2026-01-07T09:00:00Z",
    }
    assert (dent["attributes"]["verdict"], dent["attributes"]["operator"]) == ("healthy", "op1")
    b = by_area["new-pool-b/scratch/0"]
    assert b["bbox"] == [8.0, 0.0, 8.0, 8.0]  # identity
    assert b["attributes"]["verdict"] == "healthy" and b["attributes"]["image_healthy"]
    assert next(i for i in dataset["images"] if i["id"] == ids["new-pool-b"])["operator_healthy"]
    assert result.verdicts == {"defect": 1, "healthy": 2, "corrected": 1}
    # the standard tools read both files
    coco = COCO(str(gt))
    ev = COCOeval(coco, coco.loadRes(str(result.detections_out)), "segm")
    ev.evaluate()
    assert len(ev.evalImgs) > 0


def test_export_errors_name_ids(tmp_path: Path, mined: tuple[Path, Path, list[Path]]) -> None:
    manifest, tasks, feedback = mined
    gt = tmp_path / "gt.json"
    bad = _feedback(
        tmp_path / "bad.json",
        [
            {
                "image_id": "new-pool-a",
                "operator": "x",
                "timestamp": "2026-01-08T00:00:00Z",
                "areas": [{"area_id": "new-pool-a/hole/9", "verdict": "defect"}],
            },
        ],
    )
    with pytest.raises(FormatError, match=r"bad.json: unknown area 'new-pool-a/hole/9'"):
        export_coco(manifest, ["scratch", "dent"], gt, tasks=tasks, feedback=[bad])
    with pytest.raises(FormatError, match=r"--feedback needs --tasks"):
        export_coco(manifest, ["scratch", "dent"], gt, feedback=feedback)
    with pytest.raises(FormatError, match=r"image 'new-pool-a' is not among the exported"):
        export_coco(manifest, ["scratch", "dent"], gt, tasks=tasks, domain="original")
    with pytest.raises(FormatError, match=r"area 'new-pool-a/dent/0': class 'dent' not in"):
        export_coco(manifest, ["scratch"], gt, tasks=tasks)


def test_cli_import_and_export(tmp_path: Path, mined: tuple[Path, Path, list[Path]]) -> None:
    ann_file, images_dir = make_coco(tmp_path / "coco")
    out = tmp_path / "ingest"
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "import",
            "coco",
            str(ann_file),
            "--images",
            str(images_dir),
            "--out",
            str(out),
            "--domain",
            "new",
            "--split",
            "pool",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "-S 'line.classes=[dent,scratch]'" in result.output and "new/pool" in result.output
    manifest, tasks, feedback = mined
    classes = tmp_path / "classes.json"
    classes.write_text('["scratch", "dent"]')
    gt = tmp_path / "export/gt.json"
    args = [
        "export",
        "coco",
        "--manifest",
        str(manifest),
        "--tasks",
        str(tasks),
        "--out",
        str(gt),
        "--classes",
        str(classes),
    ]
    result = runner.invoke(app, [*args, *(a for f in feedback for a in ("--feedback", str(f)))])
    assert result.exit_code == 0, result.output
    assert gt.exists() and (tmp_path / "export/gt.detections.json").exists()
    assert "COCO export" in result.output
    # classes from the params instead: line.classes with -S
    result = runner.invoke(app, [*args[:-2], "-S", "line.classes=[scratch,dent]"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, [*args[:-2], "-S", "line.classes=[scratch]"])
    assert result.exit_code == 2
    assert "class 'dent' not in" in " ".join(result.output.split())
