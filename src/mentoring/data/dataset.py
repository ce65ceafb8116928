"""Torch datasets of images and their area (cell) ground truth.

Images and cell targets are decoded once, into compact uint8 tensors: a demo split is a few MB
and the paper profile's 21,000 training images about 350 MB, and training never waits on PNG
decoding. A corrupt or unreadable file is an :class:`ImageError` naming it.

Example:
    >>> ds = CellDataset.from_manifest("data/manifests/line.parquet", "original", "train",
    ...                                classes, stride=8, min_coverage=0.06)  # doctest: +SKIP
    >>> image, target = ds[0]   # (1, 128, 128) uint8, (6, 16, 16) uint8
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from mentoring.data.cells import mask_to_cells
from mentoring.data.manifest import data_root, read_manifest, select


class ImageError(ValueError):
    """An image or mask file that cannot be used; the message names the file."""


def read_image(path: str | Path, channels: int, size: tuple[int, int] | None = None) -> np.ndarray:
    """Read a PNG as (channels, H, W) uint8; raise :class:`ImageError` naming the file."""
    try:
        with Image.open(path) as im:
            im.load()
            arr = np.asarray(im.convert("L" if channels == 1 else "RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{path}: cannot read image ({exc})") from exc
    if size is not None and arr.shape[:2] != size:
        raise ImageError(
            f"{path}: image is {arr.shape[1]}x{arr.shape[0]}, manifest says {size[1]}x{size[0]}"
        )
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1)


def read_mask(path: str | Path, size: tuple[int, int]) -> np.ndarray:
    """Read a class-index mask PNG as (H, W) uint8; raise :class:`ImageError` naming it."""
    try:
        with Image.open(path) as im:
            im.load()
            arr = np.asarray(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{path}: cannot read mask ({exc})") from exc
    if arr.ndim != 2 or arr.shape != size:
        raise ImageError(f"{path}: mask has shape {arr.shape}, expected {size}")
    return arr


@dataclass(frozen=True)
class Split:
    """Decoded images and area targets of one (domain, split).

    Attributes:
        ids: image ids, in order.
        images: (N, C_in, H, W) uint8.
        targets: (N, C, H/stride, W/stride) uint8, 1 = class c present in the cell.
    """

    ids: list[str]
    images: torch.Tensor
    targets: torch.Tensor


def load_split(
    df: pd.DataFrame,
    root: Path,
    classes: tuple[str, ...],
    stride: int,
    min_coverage: float,
    progress: Callable[[int, int], None] | None = None,
) -> Split:
    """Decode the images and masks of manifest rows ``df`` (paths relative to ``root``)."""
    targets = load_targets(df, root, classes, stride, min_coverage, progress=progress)
    return Split(list(df["image_id"]), load_images(df, root), targets)


def load_targets(
    df: pd.DataFrame,
    root: Path,
    classes: tuple[str, ...],
    stride: int,
    min_coverage: float,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """The cell targets of manifest rows ``df`` from their masks: (N, C, H/stride, W/stride)
    uint8 (the masks only, of the manifest's image size; the images are not decoded)."""
    unlabelled = df.loc[df["mask_path"].astype(str) == "", "image_id"].tolist()
    if unlabelled:
        raise ImageError(
            f"{len(unlabelled)} image(s) have no mask (ingested unlabelled), e.g. "
            f"{unlabelled[:3]}: their ground truth is needed here (oracle, simulated operator); "
            f"use mentored feedback (mentor.source: import) instead"
        )
    if df.empty:
        raise ValueError("no images to load (empty selection of the manifest)")
    size = (int(df.iloc[0]["height"]), int(df.iloc[0]["width"]))
    n, (h, w) = len(df), size
    targets = np.empty((n, len(classes), h // stride, w // stride), np.uint8)
    for i, mask_path in enumerate(df["mask_path"].astype(str)):
        mask = read_mask(root / mask_path, (h, w))
        targets[i] = mask_to_cells(mask, len(classes), stride, min_coverage)
        if progress and ((i + 1) % 256 == 0 or i + 1 == n):
            progress(i + 1, n)
    return torch.from_numpy(targets)


def load_images(df: pd.DataFrame, root: Path) -> torch.Tensor:
    """Decode only the images of manifest rows ``df``: (N, C_in, H, W) uint8 (no masks needed)."""
    if df.empty:
        raise ValueError("no images to load (empty selection of the manifest)")
    first = df.iloc[0]
    h, w, ch = int(first["height"]), int(first["width"]), int(first["channels"])
    out = np.empty((len(df), ch, h, w), np.uint8)
    for i, path in enumerate(df["path"].astype(str)):
        out[i] = read_image(root / path, ch, (h, w))
    return torch.from_numpy(out)


def rows_by_id(df: pd.DataFrame, ids: list[str], source: str = "manifest") -> pd.DataFrame:
    """Manifest rows of ``ids``, in that order; an unknown id is an error listing them all."""
    indexed = df.set_index("image_id", drop=False)
    missing = [i for i in ids if i not in indexed.index]
    if missing:
        more = f" (and {len(missing) - 10} more)" if len(missing) > 10 else ""
        raise ValueError(f"{source}: {len(missing)} image id(s) not found: {missing[:10]}{more}")
    return indexed.loc[ids].reset_index(drop=True)


class CellDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Items are ``(image (C_in, H, W) uint8, target (C, h, w) uint8)``."""

    def __init__(self, split: Split) -> None:
        self.split = split

    @classmethod
    def from_manifest(
        cls,
        manifest: str | Path,
        domain: str,
        split: str,
        classes: tuple[str, ...],
        stride: int,
        min_coverage: float,
        progress: Callable[[int, int], None] | None = None,
    ) -> CellDataset:
        df = select(read_manifest(manifest), domain, split)
        if df.empty:
            raise ValueError(f"{manifest}: no images of domain {domain!r}, split {split!r}")
        return cls(load_split(df, data_root(manifest), classes, stride, min_coverage, progress))

    def __len__(self) -> int:
        return len(self.split.ids)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.split.images[i], self.split.targets[i]
