"""Fixtures of the annotation tests: a small task set, a clock that tests move, a database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mentoring.annotate.db import AnnotationDB
from mentoring.feedback.schema import MiningTasks
from tests.factories import area, make_tasks

LEASE_S = 300.0


class Clock:
    """Seconds since the epoch, moved by hand (starts in the past: the import refuses records
    dated after its own clock)."""

    def __init__(self, t: float = 1_750_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def small_tasks() -> MiningTasks:
    """Four images of a 4 x 4 grid (stride 8: 32 x 32 pixels): two areas, one, none, two."""
    return make_tasks(
        {
            "img-a": [
                area("img-a/scratch/0", "scratch", [(0, 0)], (0, 0, 8, 8)),
                area("img-a/stain/0", "stain", [(2, 2), (2, 3)], (16, 16, 32, 24)),
            ],
            "img-b": [area("img-b/stain/0", "stain", [(1, 1)], (8, 8, 16, 16))],
            "img-c": [],
            "img-d": [
                area("img-d/scratch/0", "scratch", [(3, 0)], (0, 24, 8, 32)),
                area("img-d/scratch/1", "scratch", [(3, 3)], (24, 24, 32, 32)),
            ],
        }
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def tasks() -> MiningTasks:
    return small_tasks()


@pytest.fixture
def db(tmp_path: Path, clock: Clock, tasks: MiningTasks) -> Iterator[AnnotationDB]:
    database = AnnotationDB(tmp_path / "annotate.sqlite", lease_s=LEASE_S, clock=clock)
    database.load_tasks(tasks, "a" * 64, "tasks.json")
    yield database
    database.close()
