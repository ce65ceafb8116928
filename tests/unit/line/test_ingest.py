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

PARAMS = parse_params({"base": {"profile": "tiny"}})


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(folder)).encode() + p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated tiny line in the ingest layout, unlabelled pool, with 6 bad files."""
    gen = tmp_path_factory.mktemp("generated")
    generate_line(PARAMS, gen)
    src = tmp_path_factory.mktemp("ingest") / "plant"
    shutil.copytree(gen / "line", src)
    shutil.rmtree(src / "new/pool/masks")  # a real pool is unlabelled
    train = src / "original/train"
    (train / "images/corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(train / "images/small.png")
    Image.fromarray(np.zeros((128, 128), np.uint8)).save(train / "images/bad-mask.png")
    Image.fromarray(np.full((128, 128), 9, np.uint8)).save(train / "masks/bad-mask.png")
    Image.fromarray(np.zeros((128, 128), np.uint8)).save(train / "images/no-mask.png")
    Image.fromarray(np.zeros((128, 128), np.uint8)).save(train / "masks/orphan.png")
    (train / "images/notes.txt").write_text("not an image")
    return src


def test_bad_files_are_quarantined_with_reasons_and_good_ones_ingested(
    source: Path, tmp_path: Path
) -> None:
    before = _digest(source)
    manifest, bad = ingest_line(PARAMS, source, tmp_path)
    assert _digest(source) == before  # the source is never modified
    reasons = {Path(b.file).name + ("(mask)" if "/masks/" in b.file else ""): b.reason for b in bad}
    assert "cannot read image" in reasons["corrupt.png"]
    assert "64x64" in reasons["small.png"]
    assert "values up to 9" in reasons["bad-mask.png"]
    assert "values up to 9" in reasons["bad-mask.png(mask)"]
    assert "no mask" in reasons["no-mask.png"]
    assert reasons["orphan.png(mask)"] == "mask without an image"
    assert "not an image file" in reasons["notes.txt"]
    assert len(bad) == 7
    report = json.loads((tmp_path / "quarantine/report.json").read_text())
    assert len(report) == 7
    assert (tmp_path / "quarantine/original/train/images/corrupt.png").exists()

    df = read_manifest(manifest)
    sizes = PARAMS.sizes
    assert len(df) == sizes.original_train + sizes.original_eval + sizes.new_pool + sizes.new_eval
    assert (df.loc[df["split"] == "pool", "mask_path"] == "").all()
    assert df["image_id"].str.startswith(("original-", "new-")).all()
    assert check_manifest(PARAMS, df).success

    # the labelled splits train as before; the unlabelled pool says why it cannot
    data = CellDataset.from_manifest(manifest, "original", "eval", PARAMS.line.classes, 8, 0.06)
    assert len(data) == sizes.original_eval
    with pytest.raises(ImageError, match="no mask"):
        CellDataset.from_manifest(manifest, "new", "pool", PARAMS.line.classes, 8, 0.06)
    assert contact_sheet(manifest, tmp_path / "sheet.png", PARAMS.line.classes).exists()


def test_ingested_pixels_are_the_source_pixels(source: Path, tmp_path: Path) -> None:
    manifest, _ = ingest_line(PARAMS, source, tmp_path)
    df = read_manifest(manifest).set_index("image_id")
    row = df.loc["original-eval-original-eval-000003"]
    got = np.asarray(Image.open(tmp_path / row["path"]))
    want = np.asarray(Image.open(source / "original/eval/images/original-eval-000003.png"))
    assert np.array_equal(got, want)


def test_unknown_domain_and_missing_split_are_errors(source: Path, tmp_path: Path) -> None:
    odd = tmp_path / "odd"
    shutil.copytree(source, odd)
    (odd / "night-shift").mkdir()
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
