"""Tests of manifests and the cell datasets (src/mentoring/data/)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from mentoring.data.cells import mask_to_cells
from mentoring.data.dataset import CellDataset, ImageError, load_split, read_image, read_mask
from mentoring.data.manifest import (
    COLUMNS,
    OPTIONAL_COLUMNS,
    ManifestError,
    data_root,
    read_manifest,
    select,
    verify_files,
    write_manifest,
)
from mentoring.io import sha256_file

SIZE = 32
STRIDE = 8
CLASSES = ("scratch", "crack", "hole")
COVERAGE = 0.06


def _write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _make_line(root: Path, channels: int = 1, n_train: int = 3, n_eval: int = 2) -> Path:
    """A hand-made data root: known images and masks, and its manifest; return the manifest."""
    rows = []
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("eval", n_eval)):
        for i in range(n):
            image_id = f"original-{split}-{i:06d}"
            rel_img = f"line/original/{split}/images/{image_id}.png"
            rel_mask = f"line/original/{split}/masks/{image_id}.png"
            shape = (SIZE, SIZE) if channels == 1 else (SIZE, SIZE, 3)
            _write_png(root / rel_img, rng.integers(0, 256, shape, dtype=np.uint8))
            mask = np.zeros((SIZE, SIZE), np.uint8)
            mask[i : i + 4, 8 * i : 8 * i + 4] = 1 + i % len(CLASSES)
            _write_png(root / rel_mask, mask)
            rows.append(
                {
                    "image_id": image_id,
                    "path": rel_img,
                    "mask_path": rel_mask,
                    "domain": "original",
                    "split": split,
                    "part_ref": "disc",
                    "width": SIZE,
                    "height": SIZE,
                    "channels": channels,
                    "sha256": "",
                    "defect_classes": CLASSES[i % len(CLASSES)],
                    "n_defects": 1,
                    "n_nuisances": 0,
                }
            )
    manifest = root / "manifests" / "line.parquet"
    write_manifest(pd.DataFrame(rows[::-1]), manifest)  # written sorted whatever the order
    return manifest


@pytest.fixture
def line(tmp_path: Path) -> Path:
    return _make_line(tmp_path)


# -- manifest -------------------------------------------------------------------------------------
def test_read_manifest_round_trip(line: Path) -> None:
    df = read_manifest(line)
    assert list(df.columns) == list(COLUMNS) + list(OPTIONAL_COLUMNS)
    # a row without a mapping is stored 1:1: its original size is its size
    assert (df["orig_width"] == df["width"]).all() and (df["mapping"] == "").all()
    assert len(df) == 5
    assert list(df["image_id"]) == sorted(df["image_id"])
    assert data_root(line) == line.parent.parent.resolve()
    train = select(df, "original", "train")
    assert list(train["image_id"]) == [f"original-train-{i:06d}" for i in range(3)]
    assert select(df, "new", "eval").empty


def test_missing_referenced_file_is_named(line: Path) -> None:
    victim = data_root(line) / "line/original/train/masks/original-train-000001.png"
    victim.unlink()
    with pytest.raises(ManifestError) as exc:
        read_manifest(line)
    msg = str(exc.value)
    assert str(victim) in msg
    assert str(line) in msg
    assert "1 referenced file(s) missing" in msg
    # without the check the manifest still reads
    assert len(read_manifest(line, check_files=False)) == 5


def _with_checksums(manifest: Path) -> pd.DataFrame:
    df = read_manifest(manifest)
    root = data_root(manifest)
    df["sha256"] = [sha256_file(root / p) for p in df["path"]]
    df["mask_sha256"] = [sha256_file(root / p) for p in df["mask_path"]]
    write_manifest(df, manifest)
    return read_manifest(manifest)


def test_verify_files_checks_images_and_masks(tmp_path: Path) -> None:
    manifest = _make_line(tmp_path, n_train=1100, n_eval=0)
    df = _with_checksums(manifest)
    seen: list[tuple[int, int]] = []
    assert verify_files(df, manifest, progress=lambda d, t: seen.append((d, t))) == 2 * 1100
    assert seen == [(1000, 1100), (1100, 1100)]
    # rows without a checksum (a manifest from before mask_sha256; no mask) are not checked
    df.loc[:9, "mask_sha256"] = ""
    df.loc[10:19, "mask_path"] = ""
    assert verify_files(df, manifest) == 2 * 1100 - 20


def test_verify_files_names_what_differs_and_changes_nothing(tmp_path: Path) -> None:
    manifest = _make_line(tmp_path, n_train=6, n_eval=2)
    df = _with_checksums(manifest)
    root = data_root(manifest)
    for p in df["path"]:
        (root / p).write_bytes((root / p).read_bytes() + b"\0")
    gone = root / df["mask_path"].iloc[0]
    gone.unlink()
    with pytest.raises(ManifestError) as exc:
        verify_files(df, manifest)
    msg = str(exc.value)
    assert msg.startswith(f"{manifest}: the files do not match the manifest: 1 file(s) missing: ")
    assert f"{df['image_id'].iloc[0]}: {gone}" in msg
    assert "8 file(s) differ from it: [" in msg and "(and 3 more)" in msg
    first = root / df["path"].iloc[0]
    assert f"{df['image_id'].iloc[0]}: {first} (sha256 {sha256_file(first)[:12]}..., " in msg
    assert "dvc checkout data/line" in msg
    assert not gone.exists() and read_manifest(manifest, check_files=False).equals(df)


def test_missing_manifest_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "manifests" / "line.parquet"
    with pytest.raises(ManifestError) as exc:
        read_manifest(path)
    assert str(path) in str(exc.value)
    assert "not found" in str(exc.value)


def test_manifest_lacking_columns_is_an_error(tmp_path: Path) -> None:
    df = pd.DataFrame({"image_id": ["a"], "path": ["x.png"]})
    with pytest.raises(ManifestError, match="lacks columns"):
        write_manifest(df, tmp_path / "manifests" / "m.parquet")
    path = tmp_path / "manifests" / "bare.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(path)
    with pytest.raises(ManifestError, match="mask_path"):
        read_manifest(path)


# -- dataset --------------------------------------------------------------------------------------
def test_dataset_items_shapes_dtypes_and_targets(line: Path) -> None:
    ds = CellDataset.from_manifest(line, "original", "train", CLASSES, STRIDE, COVERAGE)
    assert len(ds) == 3
    assert ds.split.ids == [f"original-train-{i:06d}" for i in range(3)]
    assert ds.split.images.shape == (3, 1, SIZE, SIZE)
    assert ds.split.targets.shape == (3, len(CLASSES), SIZE // STRIDE, SIZE // STRIDE)
    root = data_root(line)
    for i in range(len(ds)):
        image, target = ds[i]
        assert image.shape == (1, SIZE, SIZE)
        assert image.dtype == torch.uint8
        assert target.shape == (len(CLASSES), SIZE // STRIDE, SIZE // STRIDE)
        assert target.dtype == torch.uint8
        image_id = ds.split.ids[i]
        png = np.asarray(Image.open(root / f"line/original/train/images/{image_id}.png"))
        np.testing.assert_array_equal(image[0].numpy(), png)
        # the hand-drawn 4 x 4 square of class 1 + i lies in cell (0, i)
        mask = np.asarray(Image.open(root / f"line/original/train/masks/{image_id}.png"))
        expected = mask_to_cells(mask, len(CLASSES), STRIDE, COVERAGE)
        np.testing.assert_array_equal(target.numpy(), expected)
        assert target[i % len(CLASSES), 0, i] == 1
        assert int(target.sum()) >= 1


def test_dataset_rgb_items(tmp_path: Path) -> None:
    manifest = _make_line(tmp_path, channels=3)
    ds = CellDataset.from_manifest(manifest, "original", "eval", CLASSES, STRIDE, COVERAGE)
    image, target = ds[1]
    assert image.shape == (3, SIZE, SIZE)
    assert image.dtype == torch.uint8
    png = np.asarray(Image.open(tmp_path / "line/original/eval/images/original-eval-000001.png"))
    np.testing.assert_array_equal(image.numpy(), png.transpose(2, 0, 1))
    assert target.shape == (len(CLASSES), SIZE // STRIDE, SIZE // STRIDE)


def test_empty_selection_is_an_error(line: Path) -> None:
    with pytest.raises(ValueError, match="'new'"):
        CellDataset.from_manifest(line, "new", "pool", CLASSES, STRIDE, COVERAGE)
    with pytest.raises(ValueError, match="no images"):
        load_split(read_manifest(line).iloc[0:0], data_root(line), CLASSES, STRIDE, COVERAGE)


def test_corrupt_png_is_named(line: Path) -> None:
    victim = data_root(line) / "line/original/train/images/original-train-000002.png"
    victim.write_bytes(b"this is not a png at all" * 10)
    with pytest.raises(ImageError) as exc:
        CellDataset.from_manifest(line, "original", "train", CLASSES, STRIDE, COVERAGE)
    assert str(victim) in str(exc.value)
    df = select(read_manifest(line), "original", "train")
    with pytest.raises(ImageError, match=r"original-train-000002\.png"):
        load_split(df, data_root(line), CLASSES, STRIDE, COVERAGE)
    # the other split is unaffected
    assert len(CellDataset.from_manifest(line, "original", "eval", CLASSES, STRIDE, COVERAGE)) == 2


def test_truncated_png_is_named(line: Path) -> None:
    victim = data_root(line) / "line/original/train/images/original-train-000000.png"
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError) as exc:
        CellDataset.from_manifest(line, "original", "train", CLASSES, STRIDE, COVERAGE)
    assert str(victim) in str(exc.value)


def test_corrupt_mask_is_named(line: Path) -> None:
    victim = data_root(line) / "line/original/eval/masks/original-eval-000000.png"
    victim.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ImageError) as exc:
        CellDataset.from_manifest(line, "original", "eval", CLASSES, STRIDE, COVERAGE)
    assert str(victim) in str(exc.value)


def test_wrong_image_size_is_named(line: Path) -> None:
    victim = data_root(line) / "line/original/train/images/original-train-000001.png"
    _write_png(victim, np.zeros((SIZE, SIZE + 8), np.uint8))
    with pytest.raises(ImageError) as exc:
        CellDataset.from_manifest(line, "original", "train", CLASSES, STRIDE, COVERAGE)
    msg = str(exc.value)
    assert str(victim) in msg
    assert f"{SIZE + 8}x{SIZE}" in msg


def test_wrong_mask_size_is_named(line: Path) -> None:
    victim = data_root(line) / "line/original/train/masks/original-train-000000.png"
    _write_png(victim, np.zeros((SIZE // 2, SIZE), np.uint8))
    with pytest.raises(ImageError) as exc:
        CellDataset.from_manifest(line, "original", "train", CLASSES, STRIDE, COVERAGE)
    assert str(victim) in str(exc.value)


def test_read_image_and_mask_directly(tmp_path: Path) -> None:
    gray = np.arange(SIZE * SIZE, dtype=np.uint32).reshape(SIZE, SIZE) % 256
    path = tmp_path / "g.png"
    _write_png(path, gray.astype(np.uint8))
    arr = read_image(path, 1, (SIZE, SIZE))
    assert arr.shape == (1, SIZE, SIZE)
    assert arr.dtype == np.uint8
    np.testing.assert_array_equal(arr[0], gray)
    assert read_image(path, 3).shape == (3, SIZE, SIZE)  # gray converted to RGB
    with pytest.raises(ImageError, match=r"g\.png"):
        read_mask(path, (SIZE, SIZE + 1))
    with pytest.raises(ImageError, match=r"missing\.png"):
        read_image(tmp_path / "missing.png", 1)
