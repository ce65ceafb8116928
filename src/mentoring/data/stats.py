"""Per-image acquisition statistics: how bright, how contrasted and how sharp each image is.

A camera, lens or lighting change shows up in these three numbers before it shows up in the
model's errors, so the acquisition-drift suite (:mod:`mentoring.validation`) compares their
distribution in a batch with the original domain's:

- ``brightness``: the mean gray level, in [0, 1] (mean / 255);
- ``contrast``: the standard deviation of the gray levels, in [0, 0.5] (std / 255);
- ``sharpness``: the variance of the Laplacian of the image in [0, 1] (a blurred image has a
  small one; noise raises it). The Laplacian is :func:`scipy.ndimage.laplace`'s (``[1, -2, 1]``
  along each image axis, borders reflected), applied per image.

An RGB image is reduced to its luma (ITU-R BT.601: 0.299 R + 0.587 G + 0.114 B) first, so the
three statistics mean the same on gray and colour lines.

:func:`image_stats` is vectorised over a batch; :func:`manifest_stats` reads the images of
manifest rows ``batch_size`` at a time (memory is bounded by one batch, never the whole split).

Example:
    >>> stats = manifest_stats(select(df, "new", "pool"), root, channels=1)  # doctest: +SKIP
    >>> stats[["brightness", "contrast", "sharpness"]].median()  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from mentoring.data.dataset import read_image

#: the statistics, in the order of :func:`image_stats`' columns
STATS: tuple[str, ...] = ("brightness", "contrast", "sharpness")
#: ITU-R BT.601 luma weights of R, G, B
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def image_stats(images: np.ndarray) -> pd.DataFrame:
    """Brightness, contrast and sharpness of each image of a batch.

    Args:
        images: (N, H, W) or (N, C, H, W) uint8 with C = 1 (gray) or 3 (RGB).

    Returns:
        N rows, the columns :data:`STATS` (float64), in the images' order.
    """
    if images.dtype != np.uint8:
        raise ValueError(f"images must be uint8, got {images.dtype}")
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be (N, H, W) or (N, 1|3, H, W), got {images.shape}")
    # (N, H, W) float32 in [0, 1]: the gray image, or the luma of an RGB one
    if images.shape[1] == 1:
        gray = images[:, 0].astype(np.float32) / 255.0
    else:
        gray = np.einsum("c,nchw->nhw", LUMA, images.astype(np.float32)) / 255.0
    n = len(gray)
    flat = gray.reshape(n, -1)
    # scipy.ndimage.laplace, restricted to the image axes (never across images of the batch)
    lap = ndimage.correlate1d(gray, [1.0, -2.0, 1.0], axis=1, mode="reflect")
    lap += ndimage.correlate1d(gray, [1.0, -2.0, 1.0], axis=2, mode="reflect")
    return pd.DataFrame(
        {
            "brightness": flat.mean(axis=1, dtype=np.float64),
            "contrast": flat.std(axis=1, dtype=np.float64),
            "sharpness": lap.reshape(n, -1).var(axis=1, dtype=np.float64),
        },
        columns=list(STATS),
    )


def manifest_stats(
    rows: pd.DataFrame, root: Path, channels: int, batch_size: int = 256
) -> pd.DataFrame:
    """The statistics of the images of manifest rows, read ``batch_size`` at a time.

    Args:
        rows: manifest rows (``image_id``, ``path`` relative to ``root``, ``domain``, ``split``).
        root: the data root (the folder holding ``line/``).
        channels: 1 to read gray, 3 to read RGB (``line.channels``).
        batch_size: images decoded at once; memory is one batch and its float copies (about
            50 MB for 256 images of 128 x 128), whatever the number of rows.

    Returns:
        one row per manifest row, in its order: ``image_id``, ``domain``, ``split`` and
        :data:`STATS`.

    Raises:
        ImageError: an image cannot be read (the message names it).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    paths = [root / p for p in rows["path"]]
    values = np.empty((len(paths), len(STATS)), dtype=np.float64)
    for start in range(0, len(paths), batch_size):
        images = [read_image(p, channels) for p in paths[start : start + batch_size]]
        # images of one size are stacked; a batch of mixed sizes (a line ingested without
        # fitting) is computed once per size
        for shape in {im.shape for im in images}:
            idx = [i for i, im in enumerate(images) if im.shape == shape]
            stats = image_stats(np.stack([images[i] for i in idx]))
            values[[start + i for i in idx]] = stats.to_numpy()
    keys = rows[["image_id", "domain", "split"]].reset_index(drop=True)
    return pd.concat([keys, pd.DataFrame(values, columns=list(STATS))], axis=1)
