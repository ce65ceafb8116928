"""The simulated operator draws boxes around missed defects (simulate.py, ``draw_missed_rate``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mentoring.data.cells import mask_to_cells
from mentoring.feedback.partial import build_partial_labels
from mentoring.feedback.schema import DrawnArea, FeedbackFile, MiningTasks, TaskArea, dump
from mentoring.feedback.simulate import defects, simulate_operator
from tests.factories import area, make_tasks

CLASSES = ["scratch", "stain"]
SCRATCH, STAIN = 1, 2  # mask values (class index + 1)
STRIDE, COVERAGE = 8, 0.06  # make_tasks: 4 x 4 cells of 8 px, stored images 32 x 32 px


def _masks() -> dict[str, np.ndarray]:
    m0 = np.zeros((32, 32), np.uint8)
    m0[0:8, 0:16] = SCRATCH  # cells (0, 0), (0, 1): detected by "hit"
    m0[16:24, 16:32] = STAIN  # cells (2, 2), (2, 3): detected by "wrong-class" (a scratch area)
    m0[8:14, 24:32] = STAIN  # cell (1, 3), 2 px apart from the other stain: missed
    for k in range(8):  # a diagonal scratch in cell (3, 0), 8 of 64 px: missed
        m0[24 + k, k] = SCRATCH
    m0[18, 4:6] = SCRATCH  # 2 px in cell (2, 0): below cell_min_coverage, not a defect
    m1 = np.zeros((32, 32), np.uint8)
    m1[26:30, 20:31] = STAIN  # cells (3, 2), (3, 3): missed (only a false positive was detected)
    m2 = np.zeros((32, 32), np.uint8)  # a healthy image
    return {"img-0": m0, "img-1": m1, "img-2": m2}


def _truth(masks: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {i: mask_to_cells(m, len(CLASSES), STRIDE, COVERAGE) for i, m in masks.items()}


def _areas() -> dict[str, list[TaskArea]]:
    return {
        "img-0": [
            area("img-0/scratch/0", "scratch", [(0, 0), (0, 1)]),
            area("img-0/scratch/1", "scratch", [(2, 2), (2, 3)]),  # true stain: wrong class
            area("img-0/stain/0", "stain", [(3, 3)]),  # on nothing
        ],
        "img-1": [area("img-1/scratch/0", "scratch", [(0, 0)])],
        "img-2": [area("img-2/stain/0", "stain", [(1, 1)])],
    }


def _tasks(order: list[str] | None = None) -> MiningTasks:
    areas = _areas()
    return make_tasks({i: areas[i] for i in order or list(areas)}, CLASSES)


def _run(tasks: MiningTasks | None = None, **kw: object) -> FeedbackFile:
    masks = _masks()
    args: dict[str, object] = dict(
        min_overlap=0.2,
        error_rate=0.0,
        healthy_flag_rate=0.5,
        correct_classes=True,
        seed=0,
        masks=masks,
    )
    args.update(kw)
    return simulate_operator(tasks or _tasks(), _truth(masks), **args)  # type: ignore[arg-type]


def _drawn(fb: FeedbackFile) -> dict[str, list[DrawnArea]]:
    return {it.image_id: list(it.drawn) for it in fb.items}


def _boxes(fb: FeedbackFile) -> set[tuple[str, str, tuple[int, int, int, int]]]:
    return {(it.image_id, d.cls, d.bbox) for it in fb.items for d in it.drawn}


#: every missed defect of the fixture: (image, class, tight pixel box)
MISSED = {
    ("img-0", "stain", (24, 8, 32, 14)),
    ("img-0", "scratch", (0, 24, 8, 32)),
    ("img-1", "stain", (20, 26, 31, 30)),
}


# -- rate 0: the paper's operator, unchanged ------------------------------------------------------


def test_rate_zero_draws_nothing_and_is_byte_identical_to_the_param_absent() -> None:
    masks = _masks()
    before = simulate_operator(  # the call as it was before drawing existed
        _tasks(),
        _truth(masks),
        min_overlap=0.2,
        error_rate=0.3,
        healthy_flag_rate=0.5,
        correct_classes=True,
        seed=3,
    )
    zero = _run(error_rate=0.3, seed=3, draw_missed_rate=0.0)
    assert dump(zero) == dump(before)
    assert all(not it.drawn for it in zero.items)
    assert all("drawn" not in it for it in json.loads(dump(zero))["items"])


def test_drawing_does_not_change_verdicts_or_flags() -> None:
    """Drawing has its own generator: the verdicts' and flags' draws are those of rate 0."""
    for seed in range(5):
        zero = _run(error_rate=0.4, seed=seed)
        one = _run(error_rate=0.4, seed=seed, draw_missed_rate=1.0)
        assert [(it.areas, it.healthy) for it in zero.items] == [
            (it.areas, it.healthy) for it in one.items
        ]


# -- rate 1: every missed defect, and only those ---------------------------------------------------


def test_rate_one_draws_every_missed_defect_and_no_detected_one() -> None:
    fb = _run(draw_missed_rate=1.0)
    assert _boxes(fb) == MISSED
    drawn = _drawn(fb)
    assert [d.area_id for d in drawn["img-0"]] == ["img-0/drawn/0", "img-0/drawn/1"]
    assert [d.area_id for d in drawn["img-1"]] == ["img-1/drawn/0"]
    assert drawn["img-2"] == []  # a healthy image: nothing to draw
    # the detected scratch, the stain detected as a scratch and the 2-pixel speck are not drawn
    assert not {b for _, _, b in _boxes(fb)} & {(0, 0, 16, 8), (16, 16, 32, 24), (4, 18, 6, 19)}


def test_error_rate_does_not_apply_to_drawing() -> None:
    assert _boxes(_run(draw_missed_rate=1.0, error_rate=1.0)) == MISSED


def test_drawn_file_round_trips_and_names_drawn_in_json() -> None:
    fb = _run(draw_missed_rate=1.0)
    item = json.loads(dump(fb))["items"][1]
    assert item["drawn"] == [
        {"area_id": "img-1/drawn/0", "bbox": [20, 26, 31, 30], "class": "stain"}
    ]
    assert FeedbackFile.model_validate(json.loads(dump(fb))) == fb


@pytest.mark.parametrize(
    ("cells", "min_overlap", "detected"),
    [
        ([(1, 3)], 0.2, True),  # on the defect
        ([(1, 2)], 0.2, False),  # next to it
        ([(1, 3), (1, 2), (0, 2), (0, 3)], 0.25, True),  # 1 of 4 cells on it, 25 %
        ([(1, 3), (1, 2), (0, 2), (0, 3)], 0.26, False),  # ... not enough at 26 %
    ],
)
def test_detected_means_min_overlap_of_an_area_on_the_defect(
    cells: list[tuple[int, int]], min_overlap: float, detected: bool
) -> None:
    mask = np.zeros((32, 32), np.uint8)
    mask[8:16, 24:32] = STAIN  # cell (1, 3)
    tasks = make_tasks({"img": [area("img/scratch/0", "scratch", cells)]}, CLASSES)
    fb = simulate_operator(
        tasks,
        {"img": mask_to_cells(mask, 2, STRIDE, COVERAGE)},
        min_overlap=min_overlap,
        error_rate=0.0,
        healthy_flag_rate=0.0,
        correct_classes=False,  # detected is about being shown, whatever the verdict
        seed=0,
        draw_missed_rate=1.0,
        masks={"img": mask},
    )
    assert (fb.items[0].drawn == []) is detected


def test_defects_are_8_connected_components_per_class_touching_a_truth_cell() -> None:
    masks = _masks()
    found = defects(masks["img-0"], _truth(masks)["img-0"])
    assert [(c, b) for c, b, _ in found] == [
        (0, (0, 0, 16, 8)),  # scratch block
        (0, (0, 24, 8, 32)),  # the diagonal scratch is one component
        (1, (24, 8, 32, 14)),
        (1, (16, 16, 32, 24)),
    ]
    assert [sorted(zip(*np.nonzero(cells), strict=True)) for _, _, cells in found] == [
        [(0, 0), (0, 1)],
        [(3, 0)],
        [(1, 3)],
        [(2, 2), (2, 3)],
    ]


def test_drawn_id_skips_a_mined_area_id() -> None:
    tasks = make_tasks({"img-1": [area("img-1/drawn/0", "drawn", [(0, 0)])]}, ["stain", "drawn"])
    mask = np.zeros((32, 32), np.uint8)
    mask[24:32, 24:32] = 1  # a stain in cell (3, 3)
    fb = simulate_operator(
        tasks,
        {"img-1": mask_to_cells(mask, 2, STRIDE, COVERAGE)},
        min_overlap=0.2,
        error_rate=0.0,
        healthy_flag_rate=0.0,
        correct_classes=True,
        seed=0,
        draw_missed_rate=1.0,
        masks={"img-1": mask},
    )
    assert [d.area_id for d in fb.items[0].drawn] == ["img-1/drawn/1"]


# -- determinism ---------------------------------------------------------------------------------


def _many(n: int = 40) -> tuple[MiningTasks, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """``n`` images, each with four missed defects (one per quadrant), alternately classed."""
    masks = {}
    for i in range(n):
        m = np.zeros((32, 32), np.uint8)
        for q, (y, x) in enumerate([(0, 0), (0, 16), (16, 0), (16, 16)]):
            m[y + 2 : y + 10, x + 3 : x + 9] = 1 + (i + q) % 2
        masks[f"im-{i:03d}"] = m
    tasks = make_tasks({i: [] for i in masks}, CLASSES)
    return tasks, {i: mask_to_cells(m, 2, STRIDE, COVERAGE) for i, m in masks.items()}, masks


def _sim(
    tasks: MiningTasks, truth: dict[str, np.ndarray], masks: dict[str, np.ndarray], **kw: object
) -> FeedbackFile:
    args: dict[str, object] = dict(
        min_overlap=0.2, error_rate=0.1, healthy_flag_rate=0.5, correct_classes=True, seed=0
    )
    args.update(kw)
    return simulate_operator(tasks, truth, masks=masks, **args)  # type: ignore[arg-type]


def test_same_seed_same_boxes_and_the_rate_is_a_share() -> None:
    tasks, truth, masks = _many()
    a, b = (
        _sim(tasks, truth, masks, draw_missed_rate=0.5),
        _sim(tasks, truth, masks, draw_missed_rate=0.5),
    )
    assert dump(a) == dump(b)
    n = len(_boxes(a))
    assert 0.35 * 160 < n < 0.65 * 160  # 160 missed defects at 50 %
    others = {
        frozenset(_boxes(_sim(tasks, truth, masks, draw_missed_rate=0.5, seed=s))) for s in range(4)
    }
    assert len(others) == 4  # the seed drives the draws


def test_shuffled_image_order_gives_the_same_boxes() -> None:
    tasks, truth, masks = _many()
    images = list(tasks.images)
    np.random.default_rng(1).shuffle(images)  # type: ignore[arg-type]
    shuffled = tasks.model_copy(update={"images": images})
    a = _drawn(_sim(tasks, truth, masks, draw_missed_rate=0.5, seed=7))
    b = _drawn(_sim(shuffled, truth, masks, draw_missed_rate=0.5, seed=7))
    assert a == b  # same boxes, same ids, image by image


def test_a_higher_rate_draws_a_superset() -> None:
    tasks, truth, masks = _many()
    low, high = (_boxes(_sim(tasks, truth, masks, draw_missed_rate=r, seed=2)) for r in (0.3, 0.7))
    assert low < high


# -- errors ----------------------------------------------------------------------------------------


def test_drawing_without_masks_is_an_error() -> None:
    with pytest.raises(ValueError, match="pixel masks"):
        _run(draw_missed_rate=0.5, masks=None)


def test_missing_mask_names_the_image() -> None:
    masks = _masks()
    del masks["img-1"]
    with pytest.raises(KeyError, match="img-1"):
        _run(draw_missed_rate=0.5, masks=masks)


def test_mask_not_the_stored_size_is_an_error_naming_the_image() -> None:
    masks = _masks()
    masks["img-1"] = masks["img-1"][:24]
    with pytest.raises(ValueError, match=r"img-1.*\(24, 32\).*\(32, 32\)"):
        _run(draw_missed_rate=0.5, masks=masks)


def test_defects_needs_a_mask_tiling_the_grid() -> None:
    with pytest.raises(ValueError, match="does not tile"):
        defects(np.zeros((30, 32), np.uint8), np.zeros((2, 4, 4), np.uint8))


# -- the import ----------------------------------------------------------------------------------


def test_drawn_boxes_become_confirmed_cells_of_their_class() -> None:
    tasks = _tasks()
    fb = _run(draw_missed_rate=1.0, error_rate=0.0)
    labels, report = build_partial_labels(tasks, [(Path("simulated.json"), fb)], COVERAGE)
    assert report.n_drawn == 3 and report.drawn_without_cells == []
    row = {i: k for k, i in enumerate(labels.ids)}
    truth = _truth(_masks())
    # every true defect cell of a mined image is now a confirmed cell of its class
    for image_id, t in truth.items():
        i = row[image_id]
        for c in range(len(CLASSES)):
            assert labels.annotated[i, c][t[c] == 1].all(), (image_id, c)
            assert (labels.targets[i, c][t[c] == 1] == 1).all(), (image_id, c)
    # the drawn cells, class by class
    assert (
        labels.targets[row["img-0"], 1, 1, 3] == 1 and not labels.annotated[row["img-0"], 0, 1, 3]
    )
    assert (
        labels.targets[row["img-0"], 0, 3, 0] == 1 and not labels.annotated[row["img-0"], 1, 3, 0]
    )
    assert labels.targets[row["img-1"], 1, 3, 2:].all()
    assert not labels.annotated[row["img-1"], 0, 3, 2:].any()  # only the drawn class
    # the same import at rate 0 leaves those cells unannotated (the paper's limitation)
    zero, report0 = build_partial_labels(tasks, [(Path("simulated.json"), _run())], COVERAGE)
    assert report0.n_drawn == 0 and zero.ids == labels.ids
    assert not zero.annotated[row["img-1"], 1, 3, 2:].any()
    assert not zero.annotated[row["img-0"], 1, 1, 3]
