"""Label noise by kind: the partial labels a strategy trains on, against the hidden truth.

Only the synthetic line (or a fully-labelled pool) has a truth to measure against; a plant never
does, which is why the measurement lives with the experiments, not with the import. Kinds, per
(image, class, cell) entry:

- annotated **defective**: ``correct`` (the truth has that class there), ``wrong_class`` (no
  defect of that class, but one of another class on the cell), ``halo`` (no defect on the cell,
  one of that class on a neighbouring cell: the border of a confirmed area) and ``spurious`` (no
  defect on or next to the cell: a wrong click, or an area confirmed for a defect far away);
- annotated **healthy**: ``correct`` or ``defect_marked_healthy`` (an infirmed area, a wrong click,
  or a strategy's pseudo-label over a true defect).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def label_noise(targets: np.ndarray, annotated: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Counts and shares of each kind of annotated entry.

    Args:
        targets: (M, C, h, w) {0, 1}, meaningful where annotated.
        annotated: (M, C, h, w) bool.
        truth: (M, C, h, w) {0, 1}, the full ground truth of the same images and cells.

    Returns:
        ``n_defective`` and ``n_healthy`` (annotated entries), the count of each kind, and each
        kind's share of its group (``share_halo`` = halo / n_defective, ...).
    """
    if targets.shape != truth.shape or annotated.shape != truth.shape:
        raise ValueError(
            f"shapes differ: targets {targets.shape}, annotated {annotated.shape}, "
            f"truth {truth.shape}"
        )
    t = truth.astype(bool)
    pos = annotated & (targets == 1)
    neg = annotated & (targets == 0)
    on_any = t.any(axis=1, keepdims=True)
    # a 3 x 3 neighbourhood within each (image, class) plane
    near = ndimage.binary_dilation(t, structure=np.ones((1, 1, 3, 3), bool))
    counts = {
        "n_defective": int(pos.sum()),
        "correct_defective": int((pos & t).sum()),
        "wrong_class": int((pos & ~t & on_any).sum()),
        "halo": int((pos & ~on_any & near).sum()),
        "spurious": int((pos & ~on_any & ~near).sum()),
        "n_healthy": int(neg.sum()),
        "correct_healthy": int((neg & ~t).sum()),
        "defect_marked_healthy": int((neg & t).sum()),
        "true_defective_entries": int(t.sum()),
        "true_defective_annotated": int((t & annotated).sum()),
    }
    out: dict[str, float] = dict(counts)
    for k in ("correct_defective", "wrong_class", "halo", "spurious"):
        out[f"share_{k}"] = counts[k] / max(counts["n_defective"], 1)
    for k in ("correct_healthy", "defect_marked_healthy"):
        out[f"share_{k}"] = counts[k] / max(counts["n_healthy"], 1)
    return out
