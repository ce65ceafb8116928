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


def masked_bce(
    logits: torch.Tensor,
    targets: torch.Tensor,
    annotated: torch.Tensor,
    normalisation: str = "batch",
) -> torch.Tensor:
    """L_W of eq. (4): BCE summed over annotated entries only, divided by N_annotated.

    Entries outside ``annotated`` contribute neither to the value nor to the gradient; with no
    annotated entry the loss is 0 (not NaN) and its gradient is exactly zero.

    Args:
        logits: (N, C, h, w) raw scores.
        targets: (N, C, h, w) in [0, 1] (values outside the mask are ignored; soft targets are
            allowed, for distillation).
        annotated: (N, C, h, w) bool, True where an operator (or a strategy) gave a label.
        normalisation: ``batch`` (eq. 4): divided by the annotated entries of the whole batch,
            so an image with many annotated entries weighs more; ``image``: each image's mean
            over its own annotated entries, averaged over the images that have any, so every
            mentored image weighs alike (as every original image does in L_S).
    """
    mask = annotated.to(logits.dtype)
    per_entry = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    # multiply (not index) so that the gradient of masked entries is exactly 0
    if normalisation == "batch":
        return (per_entry * mask).sum() / mask.sum().clamp(min=1.0)
    if normalisation != "image":
        raise ValueError(f"normalisation {normalisation!r}: expected 'batch' or 'image'")
    dims = tuple(range(1, per_entry.dim()))
    counts = mask.sum(dim=dims)
    per_image = (per_entry * mask).sum(dim=dims) / counts.clamp(min=1.0)
    return per_image.sum() / (counts > 0).sum().clamp(min=1).to(per_image.dtype)


def mentoring_loss(
    logits_original: torch.Tensor,
    targets_original: torch.Tensor,
    logits_new: torch.Tensor,
    targets_new: torch.Tensor,
    annotated_new: torch.Tensor,
    lambda_w: float = 1.0,
    normalisation: str = "batch",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Eq. (3): L = L_S + lambda * L_W. Returns (L, L_S, L_W).

    L_S is the plain BCE on the fully-labelled original images of the batch, L_W the masked BCE
    on the mentored (partially labelled) new images (``normalisation``: see
    :func:`masked_bce`). An empty half contributes 0.
    """
    zero = logits_new.new_zeros(())
    l_s = supervised_bce(logits_original, targets_original) if logits_original.numel() else zero
    l_w = (
        masked_bce(logits_new, targets_new, annotated_new, normalisation)
        if logits_new.numel()
        else zero
    )
    return l_s + lambda_w * l_w, l_s, l_w
