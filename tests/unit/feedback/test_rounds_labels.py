"""Labels over mentoring rounds (merge_labels, unmentored in src/mentoring/feedback/partial.py)."""

from __future__ import annotations

import numpy as np
import pytest

from mentoring.feedback.partial import PartialLabels, merge_labels, unmentored
from tests.factories import area, make_tasks

CLASSES = ["scratch", "stain"]


def _labels(ids: list[str], healthy: list[bool] | None = None) -> PartialLabels:
    n = len(ids)
    return PartialLabels(
        ids,
        np.zeros((n, 2, 4, 4), np.uint8),
        np.zeros((n, 2, 4, 4), bool),
        np.array(healthy or [False] * n),
    )


def test_merge_keeps_both_rounds_and_the_newer_wins_where_both_annotated() -> None:
    old = _labels(["a", "b"], healthy=[False, True])
    old.annotated[0, 0, 0, 0] = True  # a: scratch confirmed at (0, 0)
    old.targets[0, 0, 0, 0] = 1
    old.annotated[0, 1, 1, 1] = True  # a: stain healthy at (1, 1)
    new = _labels(["a", "c"])
    new.annotated[0, 0, 0, 0] = True  # a: the newer round says (0, 0) is healthy
    new.annotated[1, 1, 2, 2] = True  # c: stain confirmed
    new.targets[1, 1, 2, 2] = 1
    m = merge_labels(old, new)
    assert m.ids == ["a", "b", "c"]
    assert m.annotated[0, 0, 0, 0] and m.targets[0, 0, 0, 0] == 0  # newer wins
    assert m.annotated[0, 1, 1, 1] and m.targets[0, 1, 1, 1] == 0  # older kept
    assert m.annotated[2, 1, 2, 2] and m.targets[2, 1, 2, 2] == 1
    assert m.healthy.tolist() == [False, True, False]
    assert int(m.annotated.sum()) == 3
    # inputs untouched
    assert old.targets[0, 0, 0, 0] == 1 and int(old.annotated.sum()) == 2


def test_merge_rejects_labels_of_another_grid() -> None:
    other = PartialLabels(
        ["x"], np.zeros((1, 2, 8, 8), np.uint8), np.zeros((1, 2, 8, 8), bool), np.zeros(1, bool)
    )
    with pytest.raises(ValueError, match="merge"):
        merge_labels(_labels(["a"]), other)


def test_unmentored_leaves_out_answered_areas_and_healthy_images() -> None:
    tasks = make_tasks(
        {
            "a": [
                area("a/scratch/0", "scratch", [(0, 0), (0, 1)]),  # all cells answered
                area("a/stain/0", "stain", [(1, 1), (1, 2)]),  # one cell new
            ],
            "b": [area("b/scratch/0", "scratch", [(2, 2)])],  # b was flagged healthy
            "c": [area("c/stain/0", "stain", [(3, 3)])],  # never mentored
            "d": [area("d/scratch/0", "scratch", [(0, 0)])],  # its only area answered
        },
        CLASSES,
    )
    labels = _labels(["a", "b", "d"], healthy=[False, True, False])
    labels.annotated[0, 0, 0, 0:2] = True
    labels.annotated[0, 1, 1, 1] = True
    labels.annotated[0, 0, 1, 2] = True  # annotated on the *other* class: still unanswered
    labels.annotated[2, 0, 0, 0] = True
    left, counts = unmentored(tasks, labels)
    kept = {im.image_id: [a.area_id for a in im.areas] for im in left.images}
    assert kept == {"a": ["a/stain/0"], "c": ["c/stain/0"]}
    assert counts == {"images_dropped_healthy": 1, "areas_dropped": 2, "images_dropped_empty": 1}
    assert len(tasks.images) == 4  # the input is not changed
