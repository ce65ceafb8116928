"""Area ground truth from pixel masks: a data concern of every line, generated or ingested."""

from __future__ import annotations

import numpy as np

Array = np.ndarray


def mask_to_cells(mask: Array, n_classes: int, stride: int, min_coverage: float) -> Array:
    """Area ground truth: (C, H/stride, W/stride) uint8, 1 where class c covers a cell enough.

    A cell is defective for class c when at least ``min_coverage`` of its pixels are class c.
    """
    h, w = mask.shape
    blocks = mask.reshape(h // stride, stride, w // stride, stride)
    out = np.zeros((n_classes, h // stride, w // stride), np.uint8)
    for c in range(n_classes):
        cover = (blocks == c + 1).mean(axis=(1, 3))
        out[c] = cover >= min_coverage
    return out
