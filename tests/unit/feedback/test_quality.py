"""Label noise by kind (src/mentoring/feedback/quality.py) on hand-built labels."""

from __future__ import annotations

import numpy as np
import pytest

from mentoring.feedback.quality import label_noise


def test_each_kind_is_counted_where_it_is() -> None:
    # one image, two classes, 1 x 6 cells; the truth: class 0 on cell 1, class 1 on cell 4
    truth = np.zeros((1, 2, 1, 6), np.uint8)
    truth[0, 0, 0, 1] = 1
    truth[0, 1, 0, 4] = 1
    targets = np.zeros_like(truth)
    annotated = np.zeros(truth.shape, bool)
    for c, x in [(0, 1), (0, 2), (0, 4), (0, 5)]:  # class 0 confirmed on cells 1, 2, 4, 5
        targets[0, c, 0, x] = 1
        annotated[0, c, 0, x] = True
    annotated[0, 1, 0, 4] = True  # class 1 annotated healthy on cell 4: a defect marked healthy
    annotated[0, 1, 0, 0] = True  # and healthy on cell 0: correct
    n = label_noise(targets, annotated, truth)
    assert n["n_defective"] == 4
    assert n["correct_defective"] == 1  # cell 1
    assert n["halo"] == 1  # cell 2: next to cell 1's class-0 defect
    assert n["wrong_class"] == 1  # cell 4: a class-1 defect there
    assert n["spurious"] == 1  # cell 5: next to cell 4, but that defect is of class 1
    assert n["n_healthy"] == 2
    assert n["defect_marked_healthy"] == 1 and n["correct_healthy"] == 1
    assert n["share_halo"] == pytest.approx(0.25)
    assert n["share_defect_marked_healthy"] == pytest.approx(0.5)
    assert n["true_defective_entries"] == 2 and n["true_defective_annotated"] == 2
    kinds = ("correct_defective", "halo", "wrong_class", "spurious")
    assert sum(n[k] for k in kinds) == n["n_defective"]


def test_no_annotation_gives_zero_shares_and_shape_mismatch_is_an_error() -> None:
    truth = np.ones((2, 3, 4, 4), np.uint8)
    n = label_noise(np.zeros_like(truth), np.zeros(truth.shape, bool), truth)
    assert n["n_defective"] == 0 and n["share_halo"] == 0.0
    with pytest.raises(ValueError, match="shapes"):
        label_noise(np.zeros((1, 3, 4, 4)), np.zeros((1, 3, 4, 4), bool), truth)
