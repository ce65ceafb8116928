"""Training images read from the image store per batch, or cached decoded when they fit.

The training sources (:mod:`mentoring.data.batch`) index their images with a tensor of row
indices. :class:`StoredImages` answers that indexing by decoding just those rows' files, so a
set larger than memory trains at the cost of decoding each batch; :func:`open_images` keeps the
set decoded in one uint8 tensor instead when it fits ``base.train_cache_mib`` (the demo's sets
are a few MB). Both give the same bytes, so the same batches and the same model on CPU.

Example:
    >>> images = open_images(df, root, cache_mib=4096)  # doctest: +SKIP
    >>> batch = images[torch.tensor([3, 0, 7])]          # (3, C, H, W) uint8
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import torch

from mentoring.config import Params
from mentoring.data.dataset import load_targets
from mentoring.data.manifest import data_root, read_manifest, select
from mentoring.data.reader import ManifestImages


class StoredImages:
    """The images of manifest rows ``df`` (one size and channel count), decoded per access.

    ``images[idx]`` with a 1-D index tensor (or list) returns (len(idx), C, H, W) uint8, like a
    tensor would; nothing is kept between accesses. ``workers`` > 0 decodes a batch's files in
    that many threads (PNG decoding releases the GIL); the result does not depend on it.
    """

    def __init__(self, df: pd.DataFrame, root: Path, workers: int = 0) -> None:
        self.files = ManifestImages(df, root)  # one image per index, decoded on access
        self.size, self.channels = self.files.size, self.files.channels
        self.workers = workers

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.files), self.channels, *self.size)

    @property
    def nbytes(self) -> int:
        """What the set takes decoded (uint8)."""
        n, c, h, w = self.shape
        return n * c * h * w

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, idx: torch.Tensor | list[int]) -> torch.Tensor:
        rows = idx.tolist() if isinstance(idx, torch.Tensor) else list(idx)
        out = torch.empty((len(rows), self.channels, *self.size), dtype=torch.uint8)

        def decode(k: int) -> None:
            out[k] = self.files[rows[k]]

        if self.workers > 0 and len(rows) > 1:
            with ThreadPoolExecutor(self.workers) as pool:
                list(pool.map(decode, range(len(rows))))  # list(): raise the first error
        else:
            for k in range(len(rows)):
                decode(k)
        return out

    def chunks(self, size: int = 256) -> list[torch.Tensor]:
        """Row index chunks covering the set in order (for a streamed pass over it)."""
        return [torch.arange(s, min(s + size, len(self))) for s in range(0, len(self), size)]


def open_images(
    df: pd.DataFrame, root: Path, cache_mib: float, workers: int = 0
) -> torch.Tensor | StoredImages:
    """The images of ``df``: decoded into one tensor when they take at most ``cache_mib`` MiB,
    else a :class:`StoredImages` that decodes each batch from the store (``workers`` threads)."""
    stored = StoredImages(df, root, workers)
    if stored.nbytes <= cache_mib * 2**20:
        return stored[list(range(len(stored)))]
    return stored


def digest(*parts: torch.Tensor | StoredImages) -> str:
    """sha256 of the parts' bytes in order; a :class:`StoredImages` is hashed chunk by chunk.

    The same value as :func:`mentoring.training.loop.tensor_digest` on the decoded tensors, so
    a checkpoint resumes whether the images were cached or not.
    """
    h = hashlib.sha256()
    for t in parts:
        if isinstance(t, StoredImages):
            for rows in t.chunks():
                h.update(t[rows].numpy().tobytes())
        else:
            h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


def labelled_split(
    params: Params, manifest: Path, domain: str, split: str, workers: int = 0
) -> tuple[list[str], torch.Tensor | StoredImages, torch.Tensor]:
    """The ids, images (:func:`open_images`) and cell targets of a fully-labelled (domain,
    split) of ``manifest``, with ``params``' classes, stride, coverage and
    ``base.train_cache_mib``."""
    df = select(read_manifest(manifest), domain, split)
    if df.empty:
        raise ValueError(f"{manifest}: no images of domain {domain!r}, split {split!r}")
    line, root = params.line, data_root(manifest)
    # the targets always in memory (a few hundred bytes an image); the images as they fit
    targets = load_targets(df, root, line.classes, params.model.stride, line.cell_min_coverage)
    images = open_images(df, root, params.base.train_cache_mib, workers)
    return list(df["image_id"]), images, targets
