"""Tests of the defect-level evaluation (src/mentoring/detection.py) on hand-built tiny cases.

Images are 16x16 pixels at stride 4: a 4x4 grid of cells. Class 1 of a mask is class index 0
("a"), class 2 is "b". A COCO AP is the mean of 101 interpolated precisions at recall
0, 0.01, ..., 1.
"""

from __future__ import annotations

import numpy as np
import pytest

from mentoring.detection import DefectAccumulator, defect_metrics, mask_defects
from mentoring.evaluation import area_metrics

CLASSES = ("a", "b")
STRIDE = 4


def _blank(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, C, 4, 4) zero probabilities and (N, 16, 16) healthy masks."""
    return np.zeros((n, 2, 4, 4), np.float32), np.zeros((n, 16, 16), np.uint8)


def _cell(masks: np.ndarray, i: int, r: int, c: int, cls: int) -> None:
    """Paint cell (r, c) of image i with class index ``cls`` (mask value cls + 1)."""
    masks[i, r * STRIDE : (r + 1) * STRIDE, c * STRIDE : (c + 1) * STRIDE] = cls + 1


def _metrics(probs: np.ndarray, masks: np.ndarray) -> dict:
    return defect_metrics(probs, masks, CLASSES, STRIDE, min_coverage=0.06)


def test_one_perfect_detection() -> None:
    probs, masks = _blank(1)
    _cell(masks, 0, 1, 1, 0)
    probs[0, 0, 1, 1] = 0.9
    m = _metrics(probs, masks)
    assert m["map"] == pytest.approx(1.0)
    assert m["per_class"]["a"]["ap"] == pytest.approx(1.0)
    assert m["per_class"]["b"]["ap"] is None  # no defect of b: outside mAP
    assert (m["precision"], m["recall"], m["false_alarms_per_image"]) == (1.0, 1.0, 0.0)
    assert (m["n_defects"], m["n_detections"], m["n_defects_found"]) == (1, 1, 1)


def test_dilated_detection_counts_at_defect_level_not_at_cell_level() -> None:
    probs, masks = _blank(1)
    _cell(masks, 0, 1, 1, 0)
    probs[0, 0, 0:3, 0:3] = 0.8  # a 3x3 area around the defect's one cell: IoU 1/9 >= 0.1
    probs[0, 0, 1, 1] = 0.9
    m = _metrics(probs, masks)
    assert m["map"] == pytest.approx(1.0)
    assert (m["precision"], m["recall"], m["n_false_alarms"]) == (1.0, 1.0, 0)
    targets = np.zeros((1, 2, 4, 4), np.uint8)
    targets[0, 0, 1, 1] = 1
    cell = area_metrics(probs, targets, CLASSES)
    assert cell["precision"] == pytest.approx(1 / 9)  # 8 halo cells are false positives
    # a stricter match refuses it
    strict = defect_metrics(probs, masks, CLASSES, STRIDE, 0.06, match_iou=0.5)
    assert strict["map"] == 0.0 and strict["n_false_alarms"] == 1


def test_duplicate_detection_is_a_false_positive() -> None:
    probs, masks = _blank(1)
    masks[0, 0:4, 0:12] = 1  # defect 1: cells (0, 0)-(0, 2)
    _cell(masks, 0, 3, 3, 0)  # defect 2
    probs[0, 0, 0, 0] = 0.9  # two separate areas on defect 1 (IoU 1/3 each)
    probs[0, 0, 0, 2] = 0.8
    probs[0, 0, 3, 3] = 0.7  # defect 2
    m = _metrics(probs, masks)
    # ranked: TP (0.9), FP (0.8, its defect already matched), TP (0.7)
    # interpolated precision 1 up to recall 0.5 (51 points), 2/3 above (50 points)
    assert m["map"] == pytest.approx((51 + 50 * 2 / 3) / 101)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == 1.0 and m["n_false_alarms"] == 1


def test_wrong_class_detection_finds_nothing() -> None:
    probs, masks = _blank(1)
    _cell(masks, 0, 2, 2, 0)  # a defect of class a
    probs[0, 1, 2, 2] = 0.9  # detected as b
    m = _metrics(probs, masks)
    assert m["per_class"]["a"]["ap"] == 0.0
    assert m["per_class"]["b"]["ap"] is None
    assert m["map"] == 0.0
    assert (m["precision"], m["recall"], m["n_false_alarms"]) == (0.0, 0.0, 1)


def test_detection_on_a_healthy_image_is_a_false_alarm() -> None:
    probs, masks = _blank(2)
    _cell(masks, 0, 0, 0, 0)
    probs[0, 0, 0, 0] = 0.9  # found
    probs[1, 1, 2, 2] = 0.7  # image 1 has no defect
    m = _metrics(probs, masks)
    assert m["map"] == pytest.approx(1.0)  # class b has no defect: outside mAP
    assert m["n_false_alarms"] == 1
    assert m["false_alarms_per_image"] == pytest.approx(1 / 2)
    assert m["precision"] == pytest.approx(1 / 2)


def test_threshold_separates_ranking_from_counting() -> None:
    probs, masks = _blank(1)
    _cell(masks, 0, 0, 0, 0)
    probs[0, 0, 0, 0] = 0.4  # detected (>= detect_threshold 0.3) but below threshold 0.5
    m = defect_metrics(probs, masks, CLASSES, STRIDE, 0.06, threshold=0.5, detect_threshold=0.3)
    assert m["map"] == pytest.approx(1.0)  # ranked by score, it is the first detection
    assert (m["n_detections"], m["recall"]) == (0, 0.0)  # none at the counting threshold


def test_mask_defects_components_at_cell_resolution() -> None:
    mask = np.zeros((16, 16), np.uint8)
    mask[0:4, 0:4] = 1
    mask[4:8, 4:8] = 1  # touches the first one diagonally: one defect (8-connectivity)
    mask[12:16, 0:8] = 2  # a class-b defect over two cells
    mask[9, 14] = 1  # a one-pixel speck: 1/16 of cell (2, 3), below min_coverage 0.1...
    mask[13, 13] = 2  # ...and one of b: both still defects, of their best-covered cell
    defects = mask_defects(mask, 2, STRIDE, min_coverage=0.1)
    got = sorted((c, tuple(map(tuple, np.argwhere(cells)))) for c, cells in defects)
    assert got == [
        (0, ((0, 0), (1, 1))),
        (0, ((2, 3),)),
        (1, ((3, 0), (3, 1))),
        (1, ((3, 3),)),
    ]
    # with cover >= min_coverage the speck is an ordinary one-cell defect
    assert len(mask_defects(mask, 2, STRIDE, min_coverage=0.06)) == 4


def test_two_components_sharing_a_cell_split_it_by_coverage() -> None:
    mask = np.zeros((8, 8), np.uint8)
    mask[0:4, 0:3] = 1  # covers 12/16 of cell (0, 0)
    mask[0:4, 4:8] = 1  # cell (0, 1), a separate component (column 3 is healthy)
    defects = mask_defects(mask, 1, STRIDE, min_coverage=0.06)
    assert [tuple(map(tuple, np.argwhere(cells))) for _, cells in defects] == [
        ((0, 0),),
        ((0, 1),),
    ]


def test_shapes_are_checked() -> None:
    probs, masks = _blank(1)
    with pytest.raises(ValueError, match="do not match"):
        defect_metrics(probs, masks[:, :8], CLASSES, STRIDE, 0.06)
    with pytest.raises(ValueError, match="3 classes"):
        defect_metrics(probs, masks, ("a", "b", "c"), STRIDE, 0.06)


def test_chunked_matching_gives_the_whole_set_s_metrics() -> None:
    """COCOeval matches each chunk of images apart and keeps only scores, matches and ignores:
    any chunk size, batches of any size, gives exactly the one-chunk metrics (AP, counts)."""
    rng = np.random.default_rng(0)
    classes = ["a", "b", "c"]
    n = 23
    masks = np.zeros((n, 64, 64), np.int64)
    for i in range(n):
        for _ in range(int(rng.integers(0, 4))):
            y, x = rng.integers(0, 56, 2)
            h, w = rng.integers(3, 20, 2)
            masks[i, y : y + h, x : x + w] = rng.integers(1, 4)
    # probabilities near the truth (each class's share of a cell) plus noise: AP well above 0
    onehot = np.stack([(masks == k + 1) for k in range(3)], axis=1).astype(np.float32)
    cover = onehot.reshape(n, 3, 8, 8, 8, 8).mean(axis=(3, 5))
    probs = np.clip(cover + rng.normal(0, 0.3, cover.shape), 0, 1).astype(np.float32)
    whole = DefectAccumulator(classes, 8, 0.06, 0.5, 0.3, 0.1, chunk_images=10**6)
    whole.add(probs, masks)
    want = whole.result()
    assert want == defect_metrics(probs, masks, classes, 8, 0.06, 0.5, 0.3, 0.1)
    assert 0.2 < want["map"] < 1 and want["n_defects"] > 20 and want["n_false_alarms"] > 0
    for chunk, batch in ((1, 5), (4, 3), (7, 23)):
        acc = DefectAccumulator(classes, 8, 0.06, 0.5, 0.3, 0.1, chunk_images=chunk)
        for b in range(0, n, batch):
            acc.add(probs[b : b + batch], masks[b : b + batch])
        assert acc.gts == [] or chunk > 1  # a chunk of one image is matched as it comes
        assert acc.result() == want
    with pytest.raises(ValueError, match="chunk_images must be >= 1"):
        DefectAccumulator(classes, 8, 0.06, chunk_images=0)
