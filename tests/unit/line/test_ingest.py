"""Tests of ingesting a folder of real images (src/mentoring/line/ingest.py).

The source folder is a tiny generated line copied into the ingest layout, plus deliberately bad
files: each bad file is quarantined with its reason, every good one is ingested, the source is
left untouched, and the result passes the manifest suite.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mentoring.config import Params, parse_params
from mentoring.data.dataset import CellDataset, ImageError
from mentoring.data.manifest import read_manifest
from mentoring.line.generate import generate_line
from mentoring.line.ingest import IngestError, ingest_line
from mentoring.line.preview import contact_sheet
from mentoring.validation import check_manifest
from tests.factories import jpeg_bytes as _jpeg
from tests.factories import png_bytes as _png

PARAMS = parse_params({"base": {"profile": "tiny"}})


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(folder)).encode() + p.read_bytes())
    return h.hexdigest()


#: file (under original/train/) -> the quarantine kind it must get
BAD_FILES = {
    "images/empty.png": "zero_byte",
    "images/notes.png": "not_an_image",
    "images/photo.png": "wrong_extension",
    "images/cut.png": "truncated",
    "images/flipped.png": "corrupt",
    "images/no-mask.png": "image_without_mask",
    "masks/orphan.png": "mask_without_image",
    "images/bad-mask.png": "mask_unknown_class",
    "masks/bad-mask.png": "mask_unknown_class",
    "images/rgb-mask.png": "mask_not_index",
    "masks/rgb-mask.png": "mask_not_index",
    "images/garbled-mask.png": "mask_unreadable",
    "masks/garbled-mask.png": "mask_unreadable",
    "images/small-mask.png": "mask_size_mismatch",
    "masks/small-mask.png": "mask_size_mismatch",
    "images/twin.jpg": "duplicate_id",
    "images/sidecar.json": "bad_sidecar",
    "images/readme.txt": "not_an_image",
}


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated tiny line in the ingest layout, unlabelled pool, with 14 kinds of bad file."""
    gen = tmp_path_factory.mktemp("generated")
    generate_line(PARAMS, gen)
    src = tmp_path_factory.mktemp("ingest") / "plant"
    shutil.copytree(gen / "line", src)
    shutil.rmtree(src / "new/pool/masks")  # a real pool is unlabelled
    train = src / "original/train"
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 255, (128, 128), dtype=np.uint8)
    good = _png(noise)
    zeros = np.zeros((128, 128), np.uint8)
    files = {
        "images/empty.png": b"",
        "images/notes.png": b"these are notes, not pixels",
        "images/photo.png": _jpeg(noise),
        "images/cut.png": good[: len(good) // 2],
        "images/flipped.png": good[:200] + bytes(b ^ 0xFF for b in good[200:260]) + good[260:],
        "images/no-mask.png": _png(zeros),
        "masks/orphan.png": _png(zeros),
        "images/bad-mask.png": _png(zeros),
        "masks/bad-mask.png": _png(np.full((128, 128), 9, np.uint8)),
        "images/rgb-mask.png": _png(zeros),
        "masks/rgb-mask.png": _png(np.zeros((128, 128, 3), np.uint8)),
        "images/garbled-mask.png": _png(zeros),
        "masks/garbled-mask.png": b"garbage",
        "images/small-mask.png": _png(zeros),
        "masks/small-mask.png": _png(np.zeros((64, 64), np.uint8)),
        # twin.png (good, with mask) and twin.jpg give the same image id
        "images/twin.png": good,
        "masks/twin.png": _png(zeros),
        "images/twin.jpg": _jpeg(noise),
        # a sidecar that is not JSON: the image is ingested, the sidecar quarantined
        "images/sidecar.png": _png(noise[::-1]),
        "masks/sidecar.png": _png(zeros),
        "images/sidecar.json": b"{not json",
        "images/readme.txt": b"plain text",
    }
    for rel, data in files.items():
        (train / rel).write_bytes(data)
    # a good sidecar on a good image: its fields go into the manifest
    first = sorted((train / "images").glob("original-train-*.png"))[0]
    first.with_suffix(".json").write_text(
        json.dumps({"part_ref": "disc", "camera": "cam-2", "acquired_at": "2026-11-27T08:00:00Z"})
    )
    return src


def test_bad_files_are_quarantined_with_kinds_and_good_ones_ingested(
    source: Path, tmp_path: Path
) -> None:
    before = _digest(source)
    manifest, bad, reports = ingest_line(PARAMS, source, tmp_path)
    assert _digest(source) == before  # the source is never modified
    kinds = {b.file.split("/original/train/", 1)[1]: b.kind for b in bad}
    assert kinds == BAD_FILES
    assert len(set(BAD_FILES.values())) >= 10
    report = json.loads((tmp_path / "quarantine/report.json").read_text())
    assert {r["kind"] for r in report} == set(BAD_FILES.values())
    assert all(r["reason"] for r in report)
    for rel in BAD_FILES:
        assert (tmp_path / "quarantine/original/train" / rel).exists(), rel
    by_split = {f"{r.domain}/{r.split}": r for r in reports}
    train = by_split["original/train"]
    assert train.reconciles()
    assert train.listed == 48 * 2 + 1 + len(BAD_FILES) + 4  # + good sidecar, twin, sidecar pairs
    df = read_manifest(manifest)
    assert len(df) == 48 + 16 + 32 + 16 + 2  # every good image, twin.png and sidecar.png
    assert set(df["image_id"]) >= {"original-train-twin", "original-train-sidecar"}
    assert check_manifest(PARAMS, df).success
    pool = df[df["split"] == "pool"]
    assert (pool["mask_path"] == "").all()


def test_sidecar_fields_go_into_the_manifest(source: Path, tmp_path: Path) -> None:
    manifest, _, _ = ingest_line(PARAMS, source, tmp_path)
    df = read_manifest(manifest)
    with_meta = df[df["camera"] != ""]
    assert len(with_meta) == 1
    row = with_meta.iloc[0]
    assert (row["part_ref"], row["camera"], row["acquired_at"]) == (
        "disc",
        "cam-2",
        "2026-11-27T08:00:00Z",
    )
    assert json.loads(row["sidecar"])["camera"] == "cam-2"


def test_unlabelled_pool_needs_mentoring_not_ground_truth(source: Path, tmp_path: Path) -> None:
    manifest, _, _ = ingest_line(PARAMS, source, tmp_path)
    with pytest.raises(ImageError, match="no mask"):
        CellDataset.from_manifest(manifest, "new", "pool", PARAMS.line.classes, 8, 0.06)
    assert contact_sheet(manifest, tmp_path / "sheet.png", PARAMS.line.classes).exists()


def test_ingested_pixels_are_the_source_pixels(source: Path, tmp_path: Path) -> None:
    manifest, _, _ = ingest_line(PARAMS, source, tmp_path)
    df = read_manifest(manifest).set_index("image_id")
    row = df.loc["original-eval-original-eval-000003"]
    got = np.asarray(Image.open(tmp_path / row["path"]))
    want = np.asarray(Image.open(source / "original/eval/images/original-eval-000003.png"))
    assert np.array_equal(got, want)


def test_unknown_domain_and_missing_split_are_errors(source: Path, tmp_path: Path) -> None:
    odd = tmp_path / "odd"
    shutil.copytree(source, odd)
    (odd / "night-shift").mkdir()
    (odd / "night-shift/a.png").write_bytes(b"")
    with pytest.raises(IngestError, match=r"unknown domain folder\(s\) \['night-shift'\]"):
        ingest_line(PARAMS, odd, tmp_path / "out")
    shutil.rmtree(odd / "night-shift")
    shutil.rmtree(odd / "new/eval")
    with pytest.raises(IngestError, match="missing new/eval/images/"):
        ingest_line(PARAMS, odd, tmp_path / "out")
    with pytest.raises(IngestError, match="folder not found"):
        ingest_line(PARAMS, tmp_path / "nowhere", tmp_path / "out")


def test_a_split_with_no_usable_image_is_an_error(source: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(source, broken)
    for p in (broken / "new/eval/images").iterdir():
        p.write_bytes(b"garbage")
    with pytest.raises(IngestError, match="no usable image in new/eval"):
        ingest_line(PARAMS, broken, tmp_path / "out")
    assert json.loads((tmp_path / "out/quarantine/report.json").read_text())


def test_params_pick_the_source() -> None:
    p: Params = parse_params({"line": {"source": "folder", "ingest_dir": "/plant/line-3"}})
    assert p.line.source == "folder" and p.line.ingest_dir == "/plant/line-3"
