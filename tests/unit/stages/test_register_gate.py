"""The register stage's gate reads the level ``promotion.gate_level`` names."""

from __future__ import annotations

from typing import Any

import pytest

from mentoring.config import Params
from mentoring.stages.register import maps, pick_candidate


def _ev(cell: tuple[float, float], defect: tuple[float, float]) -> dict[str, Any]:
    """An evaluation with (original, new) mAP at cell level and at defect level."""
    return {
        "domains": {
            d: {"map": cell[i], "defect": {"map": defect[i]}}
            for i, d in enumerate(("original", "new"))
        }
    }


# "dilated" finds more defects but its halo cells cost it at cell level; "tight" the opposite
EVALS = {"dilated": _ev((0.90, 0.60), (0.95, 0.90)), "tight": _ev((0.95, 0.80), (0.95, 0.70))}
CHAMPION = {"original": 0.95, "new": 0.5}


def test_maps_by_level() -> None:
    assert maps(EVALS["dilated"], "defect") == {"original": 0.95, "new": 0.90}
    assert maps(EVALS["dilated"], "cell") == {"original": 0.90, "new": 0.60}
    assert maps(EVALS["dilated"]) == maps(EVALS["dilated"], "defect")  # the default


@pytest.mark.parametrize(("level", "expected"), [("defect", "dilated"), ("cell", "tight")])
def test_the_candidate_depends_on_the_gate_level(level: str, expected: str) -> None:
    assert pick_candidate(EVALS, CHAMPION, "best", 0.02, level) == expected


def test_an_evaluation_without_the_defect_level_is_a_clear_error() -> None:
    with pytest.raises(KeyError, match="re-run evaluate"):
        maps({"domains": {"new": {"map": 0.5}}}, "defect")


def test_gate_level_param() -> None:
    assert Params().promotion.gate_level == "defect"
    assert Params.model_validate({"promotion": {"gate_level": "cell"}}).promotion.gate_level == (
        "cell"
    )
    with pytest.raises(ValueError, match="gate_level"):
        Params.model_validate({"promotion": {"gate_level": "pixel"}})
