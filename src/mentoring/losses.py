"""Losses: the supervised area BCE (L_S of eq. 3).

The masked loss L_W of eq. (4) joins it with the mentoring method.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def supervised_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """L_S: per-area, per-class binary cross-entropy, averaged over all N*C*h*w entries.

    Args:
        logits: (N, C, h, w) raw scores.
        targets: (N, C, h, w) in {0, 1}.
    """
    return F.binary_cross_entropy_with_logits(logits, targets)
