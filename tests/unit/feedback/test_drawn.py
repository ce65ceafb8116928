"""Drawn areas: boxes operators draw around missed defects (schema.py, partial.py)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from mentoring.feedback.partial import DEFAULT_MIN_COVERAGE, box_cells, build_partial_labels
from mentoring.feedback.schema import (
    AreaVerdict,
    DrawnArea,
    FeedbackError,
    FeedbackFile,
    ImageFeedback,
    MiningTasks,
    dump,
    read_feedback,
)
from tests.factories import T0, area, make_tasks

SCRATCH, STAIN = 0, 1  # channels of make_tasks' classes
GRID, STRIDE = (4, 4), 8  # make_tasks: stored images are 32 x 32 pixels


@pytest.fixture
def tasks() -> MiningTasks:
    return make_tasks(
        {
            "img-a": [area("img-a/stain/0", "stain", [(2, 2), (3, 3)])],
            "img-b": [area("img-b/scratch/0", "scratch", [(0, 0)])],
        }
    )


def _drawn(area_id: str, cls: str, bbox: tuple[int, int, int, int]) -> DrawnArea:
    return DrawnArea(area_id=area_id, cls=cls, bbox=bbox)


def _file(
    image_id: str,
    drawn: list[DrawnArea],
    areas: list[AreaVerdict] | None = None,
    ts_offset_s: int = 0,
    operator: str = "op-1",
    healthy: bool | None = None,
) -> FeedbackFile:
    return FeedbackFile(
        items=[
            ImageFeedback(
                image_id=image_id,
                operator=operator,
                timestamp=T0 + timedelta(seconds=ts_offset_s),
                healthy=healthy,
                areas=areas or [],
                drawn=drawn,
            )
        ]
    )


def _cells(cells: list[tuple[int, int]]) -> np.ndarray:
    m = np.zeros(GRID, bool)
    for r, c in cells:
        m[r, c] = True
    return m


# -- the schema --------------------------------------------------------------------------------


def test_old_file_without_drawn_still_validates_and_dumps_unchanged(tmp_path: Path) -> None:
    old = {
        "schema_version": 1,
        "tasks_sha256": None,
        "items": [
            {
                "image_id": "img-a",
                "operator": "op-1",
                "timestamp": "2026-05-01T08:00:00Z",
                "healthy": None,
                "areas": [{"area_id": "img-a/stain/0", "verdict": "defect"}],
            }
        ],
    }
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    fb = read_feedback(path)
    assert fb.items[0].drawn == []
    # an item without drawn areas is written without the key: older readers still read it
    assert "drawn" not in json.loads(dump(fb))["items"][0]


def test_drawn_round_trip_with_class_alias(tmp_path: Path) -> None:
    fb = _file("img-a", [_drawn("ls/r1", "scratch", (0, 0, 8, 16))])
    text = dump(fb)
    item = json.loads(text)["items"][0]
    assert item["drawn"] == [{"area_id": "ls/r1", "bbox": [0, 0, 8, 16], "class": "scratch"}]
    path = tmp_path / "fb.json"
    path.write_text(text)
    assert read_feedback(path) == fb


def test_drawn_area_with_unknown_key_names_the_file(tmp_path: Path) -> None:
    data = json.loads(dump(_file("img-a", [_drawn("d1", "stain", (0, 0, 8, 8))])))
    data["items"][0]["drawn"][0]["polygon"] = [[0, 0]]
    path = tmp_path / "drawn-extra.json"
    path.write_text(json.dumps(data))
    with pytest.raises(FeedbackError, match=r"drawn-extra\.json") as exc:
        read_feedback(path)
    assert "polygon" in str(exc.value)


# -- the coverage rule -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bbox", "min_coverage", "cells"),
    [
        ((0, 0, 8, 8), 0.06, [(0, 0)]),  # exactly one cell
        ((0, 0, 32, 8), 0.06, [(0, 0), (0, 1), (0, 2), (0, 3)]),  # a full row
        ((4, 4, 12, 12), 0.25, [(0, 0), (0, 1), (1, 0), (1, 1)]),  # a quarter of four cells
        ((4, 4, 12, 12), 0.26, []),  # ... not enough at 26 %
        ((6, 0, 10, 8), 0.25, [(0, 0), (0, 1)]),  # 2 px wide in each of two cells: 25 % each
        ((7, 0, 10, 8), 0.25, [(0, 1)]),  # 1 px in cell 0 (12.5 %), 2 px in cell 1
        ((0, 0, 2, 2), 0.06, [(0, 0)]),  # 4 of 64 pixels: 6.25 %
        ((0, 0, 2, 2), 0.07, []),
        ((0, 0, 32, 32), 1.0, [(r, c) for r in range(4) for c in range(4)]),
    ],
)
def test_box_cells_rule(
    bbox: tuple[int, int, int, int], min_coverage: float, cells: list[tuple[int, int]]
) -> None:
    got = box_cells(bbox, GRID, STRIDE, min_coverage)
    assert got.shape == GRID
    assert np.array_equal(got, _cells(cells))


def test_default_min_coverage_is_the_params_default() -> None:
    from mentoring.config import Params

    assert Params().line.cell_min_coverage == DEFAULT_MIN_COVERAGE


def test_box_cells_matches_the_mask_rule() -> None:
    """A drawn box confirms the cells a ground-truth mask with that box painted would make."""
    from mentoring.data.cells import mask_to_cells

    rng = np.random.default_rng(0)
    for _ in range(50):
        x0, y0 = rng.integers(0, 31, 2)
        x1, y1 = rng.integers(x0 + 1, 33), rng.integers(y0 + 1, 33)
        mask = np.zeros((32, 32), np.uint8)
        mask[y0:y1, x0:x1] = 1
        for cov in (0.06, 0.3, 0.5):
            want = mask_to_cells(mask, 1, STRIDE, cov)[0].astype(bool)
            got = box_cells((int(x0), int(y0), int(x1), int(y1)), GRID, STRIDE, cov)
            assert np.array_equal(got, want), (x0, y0, x1, y1, cov)


# -- the import --------------------------------------------------------------------------------


def test_drawn_area_becomes_confirmed_cells_of_its_class(tasks: MiningTasks) -> None:
    fb = _file("img-a", [_drawn("d1", "scratch", (8, 0, 24, 8))])
    labels, report = build_partial_labels(tasks, [(Path("fb.json"), fb)], 0.5)
    assert labels.ids == ["img-a"]
    want = _cells([(0, 1), (0, 2)])
    assert np.array_equal(labels.annotated[0, SCRATCH], want)
    assert np.array_equal(labels.targets[0, SCRATCH].astype(bool), want)
    assert not labels.annotated[0, STAIN].any()  # only the drawn class is annotated
    assert report.n_drawn == 1 and report.n_records == 1
    assert report.n_confirmed == 0  # confirmed counts the mined areas only
    assert report.drawn_without_cells == []


def test_drawn_area_with_mined_verdicts(tasks: MiningTasks) -> None:
    """Drawn cells paint after infirmed ones: the drawn class says 1, the others stay 0."""
    fb = _file(
        "img-a",
        [_drawn("d1", "scratch", (16, 16, 24, 24))],  # cell (2, 2), inside the infirmed area
        areas=[AreaVerdict(area_id="img-a/stain/0", verdict="healthy")],
    )
    labels, report = build_partial_labels(tasks, [(Path("fb.json"), fb)])
    assert labels.targets[0, SCRATCH, 2, 2] == 1
    assert labels.annotated[0, STAIN, 2, 2] and labels.targets[0, STAIN, 2, 2] == 0
    assert labels.annotated[0, :, 3, 3].all() and labels.targets[0, :, 3, 3].sum() == 0
    assert (report.n_infirmed, report.n_drawn) == (1, 1)


def test_box_too_small_is_reported_not_imported(tasks: MiningTasks) -> None:
    fb = _file("img-b", [_drawn("tiny", "stain", (3, 3, 4, 4))])  # 1 of 64 pixels
    labels, report = build_partial_labels(tasks, [(Path("fb.json"), fb)], 0.06)
    assert labels.ids == ["img-b"] and not labels.annotated.any()
    assert len(report.drawn_without_cells) == 1
    assert "tiny" in report.drawn_without_cells[0] and "img-b" in report.drawn_without_cells[0]


def test_import_twice_is_idempotent(tasks: MiningTasks) -> None:
    fb = _file("img-a", [_drawn("d1", "stain", (0, 0, 16, 8))])
    once, r1 = build_partial_labels(tasks, [(Path("a.json"), fb)])
    twice, r2 = build_partial_labels(tasks, [(Path("a.json"), fb), (Path("b.json"), fb)])
    assert np.array_equal(once.targets, twice.targets)
    assert np.array_equal(once.annotated, twice.annotated)
    assert (r2.n_records, r2.n_duplicates, r2.n_drawn) == (2, 1, 1)
    assert r2.conflicts == []
    assert r1.n_drawn == 1


@pytest.mark.parametrize("newest_first", [True, False])
def test_redrawn_area_newest_wins(tasks: MiningTasks, newest_first: bool) -> None:
    old = _file("img-a", [_drawn("d1", "stain", (0, 0, 8, 8))], operator="op-old")
    new = _file(
        "img-a", [_drawn("d1", "scratch", (24, 24, 32, 32))], ts_offset_s=60, operator="op-new"
    )
    files = [(Path("new.json"), new), (Path("old.json"), old)]
    if not newest_first:
        files.reverse()
    labels, report = build_partial_labels(tasks, files)
    assert np.array_equal(labels.annotated[0, SCRATCH], _cells([(3, 3)]))
    assert not labels.annotated[0, STAIN].any()  # the older box left no trace
    assert len(report.conflicts) == 1
    assert "d1" in report.conflicts[0] and "op-old" in report.conflicts[0]
    assert report.n_drawn == 1


def test_healthy_flag_with_drawn_area_is_a_conflict(tasks: MiningTasks) -> None:
    fb = _file("img-b", [_drawn("d1", "stain", (8, 8, 16, 16))], healthy=True)
    _, report = build_partial_labels(tasks, [(Path("fb.json"), fb)])
    assert any("flagged healthy" in c and "img-b" in c for c in report.conflicts)


def test_invalid_drawn_areas_listed_with_file_image_and_area(tasks: MiningTasks) -> None:
    fb = FeedbackFile(
        items=[
            ImageFeedback(
                image_id="img-a",
                operator="op-1",
                timestamp=T0,
                drawn=[
                    _drawn("ok", "stain", (0, 0, 8, 8)),
                    _drawn("ok", "stain", (8, 0, 16, 8)),  # the same id twice
                    _drawn("img-a/stain/0", "stain", (0, 8, 8, 16)),  # a mined area's id
                    _drawn("hole", "hole", (0, 0, 8, 8)),  # unknown class
                    _drawn("flat", "stain", (4, 4, 4, 12)),  # empty
                    _drawn("out", "scratch", (24, 24, 40, 32)),  # leaves the 32 x 32 image
                    _drawn("neg", "scratch", (-1, 0, 8, 8)),
                ],
            )
        ]
    )
    with pytest.raises(FeedbackError) as exc:
        build_partial_labels(tasks, [(Path("ops.json"), fb)])
    msg = str(exc.value)
    assert msg.startswith("6 ")
    for area_id, why in [
        ("ok", "used twice"),
        ("img-a/stain/0", "mined area"),
        ("hole", "unknown class 'hole'"),
        ("flat", "empty box"),
        ("out", "leaves the stored image (32 x 32 pixels)"),
        ("neg", "leaves the stored image"),
    ]:
        line = next(
            (ln for ln in msg.splitlines() if f"drawn area {area_id!r}" in ln and why in ln), None
        )
        assert line is not None, (area_id, why, msg)
        assert "ops.json" in line and "image 'img-a'" in line


def test_drawn_area_of_unknown_image_is_rejected(tasks: MiningTasks) -> None:
    fb = _file("img-zzz", [_drawn("d1", "stain", (0, 0, 8, 8))])
    with pytest.raises(FeedbackError, match="img-zzz"):
        build_partial_labels(tasks, [(Path("fb.json"), fb)])
