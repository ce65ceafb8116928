"""Area ground truth from pixel masks."""

from __future__ import annotations

import numpy as np

from mentoring.data.cells import mask_to_cells


def test_mask_to_cells_hand_built() -> None:
    mask = np.zeros((16, 24), np.uint8)  # 2 x 3 cells of 8 x 8 = 64 pixels
    mask[0:2, 0:2] = 1  # cell (0, 0): 4/64 = 0.0625 of class 1
    mask[0:1, 8:11] = 1  # cell (0, 1): 3/64 = 0.047 of class 1
    mask[8:13, 8:10] = 2  # cell (1, 1): 10/64 of class 2 ...
    mask[14:16, 8:13] = 3  # ... and 10/64 of class 3
    mask[8:16, 16:24] = 3  # cell (1, 2): fully class 3
    cells = mask_to_cells(mask, n_classes=3, stride=8, min_coverage=0.06)
    assert cells.shape == (3, 2, 3)
    assert cells.dtype == np.uint8
    expected = np.zeros((3, 2, 3), np.uint8)
    expected[0, 0, 0] = 1
    expected[1, 1, 1] = 1
    expected[2, 1, 1] = 1
    expected[2, 1, 2] = 1
    np.testing.assert_array_equal(cells, expected)


def test_mask_to_cells_coverage_boundary() -> None:
    mask = np.zeros((8, 8), np.uint8)
    mask[0, 0:4] = 1  # exactly 4/64 = 0.0625 covered
    assert mask_to_cells(mask, 1, 8, 0.0625)[0, 0, 0] == 1  # at the threshold: defective
    assert mask_to_cells(mask, 1, 8, 0.0625 + 1e-6)[0, 0, 0] == 0  # just above: healthy
    assert mask_to_cells(mask, 1, 8, 3 / 64)[0, 0, 0] == 1


def test_mask_to_cells_ignores_other_classes_and_healthy() -> None:
    mask = np.zeros((8, 16), np.uint8)
    mask[:, :8] = 2
    cells = mask_to_cells(mask, n_classes=2, stride=8, min_coverage=0.5)
    np.testing.assert_array_equal(cells[0], [[0, 0]])
    np.testing.assert_array_equal(cells[1], [[1, 0]])


def test_mask_to_cells_stride_4() -> None:
    mask = np.zeros((8, 8), np.uint8)
    mask[5, 6] = 1  # one pixel in cell (1, 1) of 16 pixels
    cells = mask_to_cells(mask, 1, 4, 1 / 16)
    np.testing.assert_array_equal(cells[0], [[0, 0], [0, 1]])
    assert mask_to_cells(mask, 1, 4, 0.1).sum() == 0
