"""A simulated operator that answers mining tasks from the hidden ground truth.

Used for experiments and the demo (a real plant answers in the web interface). Its verdict covers
the whole detected area, like a real operator's click (the imprecision of the paper's Figure 1b):

- an area is **confirmed** when at least ``min_overlap`` of its cells are ground-truth cells of its
  class; otherwise, when enough of its cells are another class's, it is confirmed with that
  **corrected class** (if ``correct_classes``); otherwise it is **infirmed**;
- each verdict is flipped with probability ``error_rate`` (operators make mistakes);
- a mined image with no defective cell at all is flagged **healthy** with probability
  ``healthy_flag_rate`` (healthy knowledge).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from mentoring.feedback.schema import AreaVerdict, FeedbackFile, ImageFeedback, MiningTasks

#: fixed clock of simulated feedback, so a seed gives byte-identical files
SIM_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def simulate_operator(
    tasks: MiningTasks,
    truth: dict[str, np.ndarray],
    *,
    min_overlap: float,
    error_rate: float,
    healthy_flag_rate: float,
    correct_classes: bool,
    seed: int,
    operator: str = "simulated",
    tasks_sha256: str | None = None,
) -> FeedbackFile:
    """Answer every task image. ``truth`` maps image id -> (C, h, w) ground-truth area targets."""
    rng = np.random.default_rng(seed)
    classes = list(tasks.classes)
    items = []
    for n, im in enumerate(tasks.images):
        if im.image_id not in truth:
            raise KeyError(f"no ground truth for mined image {im.image_id!r}")
        gt = truth[im.image_id]
        verdicts = []
        for area in im.areas:
            rr = np.array([r for r, _ in area.cells])
            cc = np.array([q for _, q in area.cells])
            overlap = gt[:, rr, cc].mean(axis=1)  # (C,) fraction of the area's cells per class
            k = classes.index(area.cls)
            corrected = None
            if overlap[k] >= min_overlap:
                verdict = "defect"
            elif correct_classes and overlap.max() >= min_overlap:
                verdict, corrected = "defect", classes[int(overlap.argmax())]
            else:
                verdict = "healthy"
            if rng.random() < error_rate:  # a mistaken click
                verdict, corrected = ("healthy" if verdict == "defect" else "defect"), None
            verdicts.append(
                AreaVerdict(area_id=area.area_id, verdict=verdict, corrected_class=corrected)
            )
        flag = None
        if not gt.any() and rng.random() < healthy_flag_rate:
            flag = True
        items.append(
            ImageFeedback(
                image_id=im.image_id,
                operator=operator,
                timestamp=SIM_EPOCH + timedelta(seconds=n),
                healthy=flag,
                areas=verdicts,
            )
        )
    return FeedbackFile(tasks_sha256=tasks_sha256, items=items)
