"""Tests of the feedback import into partial labels (src/mentoring/feedback/partial.py)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

import numpy as np
import pytest

from mentoring.feedback.partial import PartialLabels, build_partial_labels, load_feedback_files
from mentoring.feedback.schema import (
    AreaVerdict,
    FeedbackError,
    FeedbackFile,
    ImageFeedback,
    MiningTasks,
    dump,
)
from tests.factories import T0, area, make_tasks

CLASSES = ["scratch", "stain"]
SCRATCH, STAIN = 0, 1


@pytest.fixture
def tasks() -> MiningTasks:
    return make_tasks(
        {
            "img-a": [
                area("img-a/scratch/0", "scratch", [(0, 0), (0, 1)]),
                area("img-a/stain/0", "stain", [(2, 2), (3, 3)]),
            ],
            "img-b": [
                area("img-b/stain/0", "stain", [(1, 1)]),
                area("img-b/scratch/0", "scratch", [(3, 0), (3, 1)]),
            ],
        },
        CLASSES,
    )


def _item(
    image_id: str,
    verdicts: list[tuple[str, Literal["defect", "healthy"], str | None]],
    ts: datetime = T0,
    operator: str = "op-1",
    healthy: bool | None = None,
) -> ImageFeedback:
    return ImageFeedback(
        image_id=image_id,
        operator=operator,
        timestamp=ts,
        healthy=healthy,
        areas=[AreaVerdict(area_id=a, verdict=v, corrected_class=c) for a, v, c in verdicts],
    )


def _file(*items: ImageFeedback) -> FeedbackFile:
    return FeedbackFile(items=list(items))


def _mask(cells: list[tuple[int, int]]) -> np.ndarray:
    m = np.zeros((4, 4), bool)
    for r, c in cells:
        m[r, c] = True
    return m


@pytest.fixture
def feedback() -> FeedbackFile:
    return _file(
        _item(
            "img-a",
            [("img-a/scratch/0", "defect", None), ("img-a/stain/0", "healthy", None)],
        ),
        _item("img-b", [("img-b/stain/0", "defect", "scratch")]),  # img-b/scratch/0 unanswered
    )


def test_confirmed_infirmed_and_unanswered(tasks: MiningTasks, feedback: FeedbackFile) -> None:
    labels, report = build_partial_labels(tasks, [(Path("fb.json"), feedback)])
    assert labels.ids == ["img-a", "img-b"]
    assert labels.targets.shape == labels.annotated.shape == (2, 2, 4, 4)
    a = labels.ids.index("img-a")
    confirmed = _mask([(0, 0), (0, 1)])
    infirmed = _mask([(2, 2), (3, 3)])
    # confirmed scratch: target 1, annotated on the scratch channel of its cells only
    assert labels.annotated[a, SCRATCH][confirmed].all()
    assert (labels.targets[a, SCRATCH][confirmed] == 1).all()
    assert not labels.annotated[a, STAIN][confirmed].any()
    # infirmed stain: target 0, annotated on every channel of its cells
    assert labels.annotated[a][:, infirmed].all()
    assert (labels.targets[a][:, infirmed] == 0).all()
    # nothing else is annotated
    expected = np.zeros((2, 4, 4), bool)
    expected[SCRATCH] = confirmed | infirmed
    expected[STAIN] = infirmed
    assert np.array_equal(labels.annotated[a], expected)
    assert labels.targets[a].sum() == 2
    assert report.n_confirmed == 2
    assert report.n_infirmed == 1
    assert report.n_images == 2
    assert report.conflicts == []


def test_corrected_class(tasks: MiningTasks, feedback: FeedbackFile) -> None:
    labels, report = build_partial_labels(tasks, [(Path("fb.json"), feedback)])
    b = labels.ids.index("img-b")
    cell = _mask([(1, 1)])
    # detected as stain, corrected to scratch: scratch 1, stain annotated 0 there
    assert labels.annotated[b, SCRATCH][cell].all()
    assert labels.targets[b, SCRATCH, 1, 1] == 1
    assert labels.annotated[b, STAIN, 1, 1]
    assert labels.targets[b, STAIN, 1, 1] == 0
    # the unanswered area of img-b stays unannotated, and so does everything else
    assert labels.annotated[b].sum() == 2
    assert not labels.annotated[b][:, 3, 0:2].any()
    assert report.n_corrected == 1


def test_healthy_flag_recorded(tasks: MiningTasks) -> None:
    fb = _file(
        _item("img-b", [("img-b/stain/0", "healthy", None)], healthy=True),
        _item("img-a", [("img-a/scratch/0", "defect", None)]),
    )
    labels, report = build_partial_labels(tasks, [(Path("fb.json"), fb)])
    assert labels.healthy.dtype == bool
    assert labels.healthy[labels.ids.index("img-b")]
    assert not labels.healthy[labels.ids.index("img-a")]
    assert report.n_healthy_images == 1


def test_flag_alone_touches_the_image(tasks: MiningTasks) -> None:
    fb = _file(_item("img-b", [], healthy=True))
    labels, _ = build_partial_labels(tasks, [(Path("fb.json"), fb)])
    assert labels.ids == ["img-b"]
    assert labels.healthy.tolist() == [True]
    assert not labels.annotated.any()


def _same(x: PartialLabels, y: PartialLabels) -> None:
    assert x.ids == y.ids
    assert np.array_equal(x.targets, y.targets)
    assert np.array_equal(x.annotated, y.annotated)
    assert np.array_equal(x.healthy, y.healthy)


def test_import_same_file_twice_is_idempotent(tasks: MiningTasks, feedback: FeedbackFile) -> None:
    once, r1 = build_partial_labels(tasks, [(Path("fb.json"), feedback)])
    twice, r2 = build_partial_labels(
        tasks, [(Path("fb.json"), feedback), (Path("fb.json"), feedback)]
    )
    _same(once, twice)
    assert r1.n_duplicates == 0
    assert r2.n_records == 2 * r1.n_records == 6
    assert r2.n_duplicates == 3
    assert (r2.n_confirmed, r2.n_infirmed, r2.n_corrected) == (
        r1.n_confirmed,
        r1.n_infirmed,
        r1.n_corrected,
    )
    assert r2.conflicts == []


def test_identical_records_in_two_files(
    tasks: MiningTasks, feedback: FeedbackFile, tmp_path: Path
) -> None:
    p1, p2 = tmp_path / "one.json", tmp_path / "two.json"
    p1.write_text(dump(feedback))
    p2.write_text(dump(feedback))
    files = load_feedback_files([p2, p1])
    assert [p.name for p, _ in files] == ["one.json", "two.json"]
    once, _ = build_partial_labels(tasks, files[:1])
    both, report = build_partial_labels(tasks, files)
    _same(once, both)
    assert report.n_duplicates == 3


def test_unknown_image_and_area_listed_together(tasks: MiningTasks) -> None:
    fb = _file(
        _item("img-zzz", [("img-zzz/stain/0", "defect", None)]),
        _item("img-a", [("img-a/stain/99", "healthy", None), ("img-a/scratch/0", "defect", None)]),
        # an area of another image (a later click, so not a duplicate of the record above)
        _item("img-b", [("img-a/scratch/0", "defect", None)], ts=T0 + timedelta(seconds=1)),
    )
    with pytest.raises(FeedbackError) as exc:
        build_partial_labels(tasks, [(Path("ops.json"), fb)])
    msg = str(exc.value)
    assert "img-zzz" in msg
    assert "img-a/stain/99" in msg
    assert "'img-a/scratch/0' of image 'img-b'" in msg
    assert "ops.json" in msg
    assert msg.startswith("3 ")


def test_area_of_another_image_rejected_even_with_same_timestamp(tasks: MiningTasks) -> None:
    fb = _file(
        _item("img-a", [("img-a/scratch/0", "defect", None)]),
        _item("img-b", [("img-a/scratch/0", "defect", None)]),  # same operator and timestamp
    )
    with pytest.raises(FeedbackError, match="of image 'img-b'"):
        build_partial_labels(tasks, [(Path("ops.json"), fb)])


def test_unknown_corrected_class_rejected(tasks: MiningTasks) -> None:
    fb = _file(_item("img-a", [("img-a/scratch/0", "defect", "hole")]))
    with pytest.raises(FeedbackError, match="hole"):
        build_partial_labels(tasks, [(Path("fb.json"), fb)])


@pytest.mark.parametrize("newest_first", [True, False])
def test_conflict_newest_wins_regardless_of_order(tasks: MiningTasks, newest_first: bool) -> None:
    old = _file(_item("img-a", [("img-a/scratch/0", "healthy", None)], ts=T0, operator="op-old"))
    new = _file(
        _item(
            "img-a",
            [("img-a/scratch/0", "defect", None)],
            ts=T0 + timedelta(hours=1),
            operator="op-new",
        )
    )
    files = [(Path("new.json"), new), (Path("old.json"), old)]
    if not newest_first:
        files.reverse()
    labels, report = build_partial_labels(tasks, files)
    a = labels.ids.index("img-a")
    assert labels.targets[a, SCRATCH, 0, 0] == 1 and labels.targets[a, SCRATCH, 0, 1] == 1
    assert not labels.annotated[a, STAIN].any()  # the older "healthy" left no trace
    assert report.n_confirmed == 1 and report.n_infirmed == 0
    assert len(report.conflicts) == 1
    assert "img-a/scratch/0" in report.conflicts[0]
    assert "op-old" in report.conflicts[0] and "op-new" in report.conflicts[0]


def test_conflicting_healthy_flags_newest_wins(tasks: MiningTasks) -> None:
    a = _item("img-b", [], ts=T0 + timedelta(minutes=5), healthy=False, operator="x")
    b = _item("img-b", [], ts=T0, healthy=True, operator="y")
    for items in ((a, b), (b, a)):
        labels, report = build_partial_labels(tasks, [(Path("f.json"), _file(*items))])
        assert labels.healthy.tolist() == [False]
        assert len(report.conflicts) == 1


def test_save_load_round_trip(tasks: MiningTasks, feedback: FeedbackFile, tmp_path: Path) -> None:
    labels, _ = build_partial_labels(tasks, [(Path("fb.json"), feedback)])
    path = tmp_path / "sub" / "partial.npz"
    labels.save(path)
    assert sorted(p.name for p in path.parent.iterdir()) == ["partial.npz"]  # no temp file left
    back = PartialLabels.load(path)
    _same(labels, back)
    assert back.targets.dtype == np.uint8
    assert back.annotated.dtype == bool
    assert all(isinstance(i, str) for i in back.ids)
    with pytest.raises(FileNotFoundError, match=r"missing\.npz"):
        PartialLabels.load(tmp_path / "missing.npz")


def test_tied_timestamps_resolve_the_same_whatever_the_file_order(tasks: MiningTasks) -> None:
    a = _file(_item("img-a", [("img-a/scratch/0", "defect", None)]))
    b = _file(_item("img-a", [("img-a/scratch/0", "healthy", None)]))  # same operator and time
    one, rep1 = build_partial_labels(tasks, [(Path("1.json"), a), (Path("2.json"), b)])
    two, rep2 = build_partial_labels(tasks, [(Path("1.json"), b), (Path("2.json"), a)])
    assert np.array_equal(one.targets, two.targets)
    assert np.array_equal(one.annotated, two.annotated)
    assert len(rep1.conflicts) == len(rep2.conflicts) == 1


def test_naive_and_aware_timestamps_are_compared_as_utc(tasks: MiningTasks, tmp_path: Path) -> None:
    # a naive timestamp is read as UTC: no TypeError when it meets an aware one in a conflict
    naive = _item("img-a", [("img-a/scratch/0", "healthy", None)], operator="op-naive")
    data = json.loads(dump(_file(naive)))
    data["items"][0]["timestamp"] = (T0 + timedelta(hours=1)).replace(tzinfo=None).isoformat()
    (tmp_path / "a.json").write_text(json.dumps(data))
    aware = _item("img-a", [("img-a/scratch/0", "defect", None)], operator="op-aware")
    (tmp_path / "b.json").write_text(dump(_file(aware)))
    files = load_feedback_files([tmp_path / "a.json", tmp_path / "b.json"])
    assert files[0][1].items[0].timestamp == T0 + timedelta(hours=1)
    labels, report = build_partial_labels(tasks, files)
    assert len(report.conflicts) == 1 and "op-naive" in report.conflicts[0]
    assert not labels.targets[0, SCRATCH].any()  # the naive record, an hour newer in UTC, won


def test_future_timestamp_is_refused_naming_file_item_and_image(tasks: MiningTasks) -> None:
    now = T0 + timedelta(days=1)
    ok = _item("img-a", [("img-a/scratch/0", "defect", None)], ts=now + timedelta(minutes=4))
    future = _item("img-b", [("img-b/stain/0", "healthy", None)], ts=now + timedelta(days=365))
    # within the skew: imported
    build_partial_labels(tasks, [(Path("ops.json"), _file(ok))], now=now)
    with pytest.raises(FeedbackError, match=r"ops\.json: item 1 \(image 'img-b'") as exc:
        build_partial_labels(tasks, [(Path("ops.json"), _file(ok, future))], now=now)
    assert "clock skew" in str(exc.value)
    # the tolerance is the caller's
    build_partial_labels(
        tasks, [(Path("ops.json"), _file(future))], now=now, max_skew=timedelta(days=400)
    )
