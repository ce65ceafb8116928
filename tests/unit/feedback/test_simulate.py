"""Tests of the simulated operator (src/mentoring/feedback/simulate.py)."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from mentoring.feedback.schema import FeedbackFile, MiningTasks, dump
from mentoring.feedback.simulate import SIM_EPOCH, simulate_operator
from tests.factories import area, make_tasks

CLASSES = ["scratch", "stain"]


def _tasks() -> MiningTasks:
    return make_tasks(
        {
            "img-0": [
                area("hit", "scratch", [(0, 0), (0, 1), (1, 1)]),  # 2/3 on true scratch
                area("miss", "scratch", [(3, 0)]),  # on nothing
                area("wrong-class", "scratch", [(2, 2), (2, 3)]),  # on a true stain
                area("half", "stain", [(2, 3), (3, 3)]),  # 1/2 on a true stain
            ],
            "img-1": [area("fp", "stain", [(1, 1)])],
            "img-2": [],
        },
        CLASSES,
    )


def _truth() -> dict[str, np.ndarray]:
    t0 = np.zeros((2, 4, 4), np.uint8)
    t0[0, 0, 0] = t0[0, 0, 1] = 1  # scratch
    t0[1, 2, 2] = t0[1, 2, 3] = 1  # stain
    return {"img-0": t0, "img-1": np.zeros((2, 4, 4), np.uint8), "img-2": np.zeros((2, 4, 4))}


def _run(**kw: object) -> FeedbackFile:
    args: dict[str, object] = dict(
        min_overlap=0.5, error_rate=0.0, healthy_flag_rate=0.0, correct_classes=True, seed=0
    )
    args.update(kw)
    return simulate_operator(_tasks(), _truth(), **args)  # type: ignore[arg-type]


def _verdicts(fb: FeedbackFile) -> dict[str, tuple[str, str | None]]:
    return {a.area_id: (a.verdict, a.corrected_class) for it in fb.items for a in it.areas}


def test_confirm_infirm_and_correct() -> None:
    v = _verdicts(_run())
    assert v["hit"] == ("defect", None)
    assert v["miss"] == ("healthy", None)
    assert v["wrong-class"] == ("defect", "stain")
    assert v["half"] == ("defect", None)  # overlap 0.5 >= min_overlap 0.5
    assert v["fp"] == ("healthy", None)


def test_min_overlap_is_respected() -> None:
    v = _verdicts(_run(min_overlap=0.7))
    assert v["hit"] == ("healthy", None)  # 2/3 < 0.7
    assert v["half"] == ("healthy", None)
    assert v["wrong-class"] == ("defect", "stain")  # 2/2 on stain


def test_wrong_class_infirmed_without_class_correction() -> None:
    v = _verdicts(_run(correct_classes=False))
    assert v["wrong-class"] == ("healthy", None)
    assert v["hit"] == ("defect", None)


def test_error_rate_one_flips_every_verdict() -> None:
    right, wrong = _verdicts(_run()), _verdicts(_run(error_rate=1.0))
    assert right.keys() == wrong.keys()
    flip = {"defect": "healthy", "healthy": "defect"}
    for area_id, (verdict, _) in right.items():
        assert wrong[area_id] == (flip[verdict], None)


def test_healthy_flag_rate_one_flags_truly_healthy_images_only() -> None:
    fb = _run(healthy_flag_rate=1.0)
    flags = {it.image_id: it.healthy for it in fb.items}
    assert flags == {"img-0": None, "img-1": True, "img-2": True}


def test_healthy_flag_rate_zero_flags_none() -> None:
    assert all(it.healthy is None for it in _run(healthy_flag_rate=0.0).items)


def test_every_task_image_and_area_answered_in_order() -> None:
    fb = _run(operator="sim-9", tasks_sha256="f" * 64)
    assert [it.image_id for it in fb.items] == ["img-0", "img-1", "img-2"]
    assert [a.area_id for a in fb.items[0].areas] == ["hit", "miss", "wrong-class", "half"]
    assert {it.operator for it in fb.items} == {"sim-9"}
    assert fb.tasks_sha256 == "f" * 64


def test_same_seed_same_output_and_deterministic_timestamps() -> None:
    kw: dict[str, object] = dict(error_rate=0.5, healthy_flag_rate=0.5)
    a, b = _run(seed=7, **kw), _run(seed=7, **kw)
    assert dump(a) == dump(b)
    assert [it.timestamp for it in a.items] == [SIM_EPOCH + timedelta(seconds=n) for n in range(3)]
    outputs = {dump(_run(seed=s, **kw)) for s in range(8)}
    assert len(outputs) > 1  # the seed does drive the random choices


def test_missing_truth_raises_key_error_naming_the_image() -> None:
    truth = _truth()
    del truth["img-1"]
    with pytest.raises(KeyError, match="img-1"):
        simulate_operator(
            _tasks(),
            truth,
            min_overlap=0.5,
            error_rate=0.0,
            healthy_flag_rate=0.0,
            correct_classes=True,
            seed=0,
        )
