"""Streaming image reader: manifest rows -> batches of decoded images, in bounded memory.

Mining a day of images (86,400 at one part per second) cannot hold the pool in one tensor. This
reader decodes the rows of a manifest selection batch by batch, in order, through a torch
``DataLoader``: with ``workers`` > 0 the decoding runs in worker processes, off the main one, while
the model scores the previous batch. Only one batch (per worker, prefetched) is alive at a time.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from mentoring.data.dataset import ImageError, read_image, read_mask


class ManifestImages(Dataset[torch.Tensor]):
    """The images of manifest rows ``df`` (same size and channels), decoded on access."""

    def __init__(self, df: pd.DataFrame, root: Path) -> None:
        if df.empty:
            raise ValueError("no images to read (empty selection of the manifest)")
        first = df.iloc[0]
        self.size = (int(first["height"]), int(first["width"]))
        self.channels = int(first["channels"])
        # plain strings: a Path per image interns its parts, memory that grows with the images
        self.paths = [os.path.join(root, p) for p in df["path"].astype(str)]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        # PIL's arrays are read-only: a contiguous, writable copy (torch warns on read-only)
        image = read_image(self.paths[i], self.channels, self.size)
        return torch.from_numpy(np.require(image, requirements=["C", "W"]))


class ManifestImagesMasks(ManifestImages):
    """The images of manifest rows ``df`` with their class-index masks, decoded on access."""

    def __init__(self, df: pd.DataFrame, root: Path) -> None:
        super().__init__(df, root)
        unlabelled = df.loc[df["mask_path"].astype(str) == "", "image_id"].tolist()
        if unlabelled:
            raise ImageError(
                f"{len(unlabelled)} image(s) have no mask (ingested unlabelled), e.g. "
                f"{unlabelled[:3]}: their ground truth is needed to evaluate them"
            )
        self.masks = [os.path.join(root, p) for p in df["mask_path"].astype(str)]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        # writable, as torch wants (newer Pillow/numpy hand out read-only arrays)
        mask = np.require(read_mask(self.masks[i], self.size), requirements=["C", "W"])
        return super().__getitem__(i), torch.from_numpy(mask)


def labelled_batches(
    df: pd.DataFrame, root: Path, batch_size: int, workers: int = 0
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """``(start, images, masks)`` per batch, in the rows' order: (B, C, H, W) uint8 images and
    (B, H, W) uint8 class-index masks (:func:`image_batches` with the masks)."""
    start = 0
    for images, masks in _loader(ManifestImagesMasks(df, root), batch_size, workers):
        yield start, images, masks
        start += images.shape[0]


def image_batches(
    df: pd.DataFrame, root: Path, batch_size: int, workers: int = 0
) -> Iterator[tuple[int, torch.Tensor]]:
    """``(start, images)`` per batch, in the rows' order: ``images`` is (B, C, H, W) uint8 and
    its first image is row ``start``. ``workers`` > 0 decodes in that many processes."""
    start = 0
    for images in _loader(ManifestImages(df, root), batch_size, workers):
        yield start, images
        start += images.shape[0]


def _loader(dataset: Dataset[Any], batch_size: int, workers: int) -> DataLoader[Any]:
    """Batches in order; ``workers`` > 0 decode in that many processes, 2 batches ahead each."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        prefetch_factor=2 if workers else None,
    )
