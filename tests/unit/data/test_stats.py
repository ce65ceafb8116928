"""Per-image acquisition statistics (src/mentoring/data/stats.py) on hand-built images."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import ndimage

from mentoring.data.dataset import ImageError
from mentoring.data.stats import STATS, image_stats, manifest_stats


def _checkerboard(size: int = 16) -> np.ndarray:
    return ((np.indices((size, size)).sum(axis=0) % 2) * 255).astype(np.uint8)


def test_constant_image() -> None:
    images = np.full((2, 1, 8, 8), 51, np.uint8)  # 51 / 255 = 0.2
    stats = image_stats(images)
    assert list(stats.columns) == list(STATS) and len(stats) == 2
    np.testing.assert_allclose(stats["brightness"], 0.2, atol=1e-6)
    np.testing.assert_allclose(stats[["contrast", "sharpness"]], 0.0, atol=1e-12)


def test_half_black_half_white() -> None:
    image = np.zeros((8, 8), np.uint8)
    image[:, 4:] = 255  # half 0, half 1: mean 0.5, std 0.5
    (row,) = image_stats(image[None]).to_dict("records")
    assert row["brightness"] == pytest.approx(0.5)
    assert row["contrast"] == pytest.approx(0.5)
    # the Laplacian is non-zero only on the two columns at the edge: +1 and -1 on 16 of 64
    # pixels, so its variance is 16 / 64 = 0.25
    assert row["sharpness"] == pytest.approx(0.25)


def test_checkerboard_sharpness_is_scipy_laplace_variance() -> None:
    board = _checkerboard()
    (row,) = image_stats(board[None, None]).to_dict("records")
    assert row["brightness"] == pytest.approx(0.5) and row["contrast"] == pytest.approx(0.5)
    expected = ndimage.laplace(board.astype(np.float64) / 255).var()
    assert row["sharpness"] == pytest.approx(expected, rel=1e-5)
    assert expected > 10  # inside, the Laplacian is +-4 on every pixel


def test_blur_lowers_sharpness() -> None:
    rng = np.random.default_rng(0)
    sharp = rng.integers(0, 256, (32, 32)).astype(np.uint8)
    blurred = ndimage.gaussian_filter(sharp.astype(float), 1.5).round().astype(np.uint8)
    stats = image_stats(np.stack([sharp, blurred]))
    assert stats["sharpness"][1] < stats["sharpness"][0] / 10


def test_images_of_a_batch_do_not_mix() -> None:
    """The Laplacian runs along the image axes only: stats of a batch = stats of each image."""
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (5, 1, 12, 12)).astype(np.uint8)
    batch = image_stats(images)
    one_by_one = pd.concat([image_stats(im[None]) for im in images], ignore_index=True)
    pd.testing.assert_frame_equal(batch, one_by_one)


def test_rgb_uses_luma() -> None:
    red = np.zeros((1, 3, 4, 4), np.uint8)
    red[:, 0] = 255
    assert image_stats(red)["brightness"][0] == pytest.approx(0.299)
    gray = np.full((1, 3, 4, 4), 128, np.uint8)
    assert image_stats(gray)["brightness"][0] == pytest.approx(128 / 255, rel=1e-5)


def test_bad_input_is_an_error() -> None:
    with pytest.raises(ValueError, match="uint8"):
        image_stats(np.zeros((1, 8, 8), np.float32))
    with pytest.raises(ValueError, match=r"\(N, 1\|3, H, W\)"):
        image_stats(np.zeros((1, 2, 8, 8), np.uint8))


def _write(root: Path, arrays: list[np.ndarray]) -> pd.DataFrame:
    rows = []
    for i, arr in enumerate(arrays):
        path = f"line/d/s/images/im{i}.png"
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(root / path)
        rows.append({"image_id": f"im{i}", "path": path, "domain": "d", "split": "s"})
    columns = ["image_id", "path", "domain", "split"]
    return pd.DataFrame(rows, columns=columns, index=range(10, 10 + len(rows)))  # not 0..n


def test_manifest_stats_reads_in_batches(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    arrays = [rng.integers(0, 256, (16, 16)).astype(np.uint8) for _ in range(5)]
    arrays.append(np.full((24, 8), 200, np.uint8))  # another size: computed apart, kept in order
    rows = _write(tmp_path, arrays)
    stats = manifest_stats(rows, tmp_path, channels=1, batch_size=2)
    assert list(stats.columns) == ["image_id", "domain", "split", *STATS]
    assert list(stats["image_id"]) == [f"im{i}" for i in range(6)]
    expected = image_stats(np.stack(arrays[:5]))
    pd.testing.assert_frame_equal(stats.loc[:4, list(STATS)], expected)
    assert stats["brightness"][5] == pytest.approx(200 / 255)
    assert stats["contrast"][5] == pytest.approx(0.0)


def test_manifest_stats_of_no_rows_and_unreadable_files(tmp_path: Path) -> None:
    empty = manifest_stats(_write(tmp_path, []), tmp_path, channels=1)
    assert empty.empty and list(empty.columns) == ["image_id", "domain", "split", *STATS]
    rows = _write(tmp_path, [np.zeros((8, 8), np.uint8)])
    (tmp_path / rows["path"].iloc[0]).write_bytes(b"not a png")
    with pytest.raises(ImageError, match=r"im0\.png"):
        manifest_stats(rows, tmp_path, channels=1)


def test_a_demo_split_is_fast() -> None:
    """1,500 images of 128 x 128 in batches of 256 (the decoding is apart: ~0.3 ms an image)."""
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (256, 1, 128, 128)).astype(np.uint8)
    start = time.perf_counter()
    for _ in range(6):  # 1,536 images
        image_stats(images)
    assert time.perf_counter() - start < 2.5
