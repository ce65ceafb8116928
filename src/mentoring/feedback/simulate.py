"""A simulated operator that answers mining tasks from the hidden ground truth.

Used for experiments and the demo (a real plant answers in the web interface). Its verdict covers
the whole detected area, like a real operator's click (the imprecision of the paper's Figure 1b):

- an area is **confirmed** when at least ``min_overlap`` of its cells are ground-truth cells of its
  class; otherwise, when enough of its cells are another class's, it is confirmed with that
  **corrected class** (if ``correct_classes``); otherwise it is **infirmed**;
- each verdict is flipped with probability ``error_rate`` (operators make mistakes);
- a mined image with no defective cell at all is flagged **healthy** with probability
  ``healthy_flag_rate`` (healthy knowledge);
- each **missed defect** of a mined image is **drawn** with probability ``draw_missed_rate``
  (``mentor.draw_missed_rate``; 0, the paper's operator, draws nothing and leaves the file as it
  was before drawing existed).

Drawing missed defects (beyond the paper, whose stated limitation is that defects the model missed
are never shown, so never learnt):

1. A **defect** is a connected component (8-connected) of one class in the image's pixel mask
   whose pixels touch at least one ground-truth cell of that class; its cells are those
   ground-truth cells it touches. A component too small to make any ground-truth cell
   (``line.cell_min_coverage``) is not a defect the model is scored on, and is never drawn.
2. A defect is **detected** when some detected area of the image, of any class, has at least
   ``min_overlap`` of its cells on the defect's cells: the overlap that confirms an area, taken
   defect by defect (a detected area of the wrong class is still shown to the operator, who may
   correct its class). Any other defect is **missed**.
3. Each defect gets one uniform draw from a generator seeded by (``seed``, the image id), in a
   fixed order (class, then the component's raster order), so the boxes do not depend on the
   order of the images, on which other defects were detected, or on the verdicts' draws; a missed
   defect is drawn when its draw is below ``draw_missed_rate`` (so a higher rate draws a superset).
4. A drawn defect becomes a ``drawn`` entry: id ``<image_id>/drawn/<k>`` (k = 0, 1, ... in the
   image, skipping an id a mined area already uses), the defect's true class, and its tight pixel
   box (x0, y0, x1, y1), exclusive end, in the stored image's pixels (the mask is the stored
   image's size, so the box is inside it). The import confirms the cells the box covers
   (:func:`mentoring.feedback.partial.box_cells`), so a box around a thin diagonal defect also
   confirms some cells the defect does not reach, as a real operator's box would.

The operator's ``error_rate`` does not apply to drawing: a defect is drawn with its true class
and never drawn where there is none. Only the mined images are seen (a real operator only looks
at what mining selected): a defect missed on an image the model did not mine stays missed.

Example:
    >>> fb = simulate_operator(tasks, truth, min_overlap=0.2, error_rate=0.02,
    ...                        healthy_flag_rate=0.5, correct_classes=True, seed=0,
    ...                        draw_missed_rate=0.5, masks=masks)  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import numpy as np
from scipy import ndimage

from mentoring.feedback.schema import (
    AreaVerdict,
    DrawnArea,
    FeedbackFile,
    ImageFeedback,
    MiningTasks,
    TaskImage,
)

#: fixed clock of simulated feedback, so a seed gives byte-identical files
SIM_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)

#: 8-connectivity: a diagonal scratch is one defect
_EIGHT = np.ones((3, 3), bool)

#: a ground-truth defect: class index, tight pixel box (x0, y0, x1, y1), (h, w) bool cells
Defect = tuple[int, tuple[int, int, int, int], np.ndarray]


def _draw_rng(seed: int, image_id: str) -> np.random.Generator:
    """The drawing generator of one image: a function of (seed, image id) only."""
    key = int.from_bytes(hashlib.sha256(image_id.encode()).digest()[:8], "big")
    return np.random.default_rng([seed, key])


def defects(mask: np.ndarray, truth: np.ndarray) -> list[Defect]:
    """The ground-truth defects of one image (rule 1 of the module docstring).

    Args:
        mask: (H, W) class index per pixel, 0 = healthy, k = class k - 1 (the stored image's size).
        truth: (C, h, w) ground-truth cells of the same mask (``H = h * stride``).

    Returns:
        (class index, tight pixel box (x0, y0, x1, y1) exclusive end, (h, w) bool cells) per
        defect, by class, then in raster order of the component's first pixel.
    """
    n_classes, gh, gw = truth.shape
    if mask.shape[0] % gh or mask.shape[1] % gw or mask.shape[0] // gh != mask.shape[1] // gw:
        raise ValueError(f"mask of shape {mask.shape} does not tile a {gh} x {gw} cell grid")
    stride = mask.shape[0] // gh
    out: list[Defect] = []
    for c in range(n_classes):
        labels, _n = ndimage.label(mask == c + 1, structure=_EIGHT)
        for j, box in enumerate(ndimage.find_objects(labels), start=1):
            ys, xs = box
            yy, xx = np.nonzero(labels[box] == j)
            touched = np.zeros((gh, gw), bool)
            touched[(yy + ys.start) // stride, (xx + xs.start) // stride] = True
            cells = touched & truth[c].astype(bool)
            if cells.any():
                out.append((c, (int(xs.start), int(ys.start), int(xs.stop), int(ys.stop)), cells))
    return out


def draw_missed(
    image: TaskImage,
    truth: np.ndarray,
    mask: np.ndarray,
    classes: list[str],
    *,
    min_overlap: float,
    rate: float,
    seed: int,
) -> list[DrawnArea]:
    """The boxes the operator draws around the defects no detected area of ``image`` overlaps.

    Args:
        image: the mined image and its detected areas.
        truth: (C, h, w) ground-truth cells of the image.
        mask: (H, W) its class-index pixel mask, the stored image's size.
        classes: class names, in the order of ``truth``'s channels.
        min_overlap: share of an area's cells on a defect's cells that detects the defect.
        rate: chance that a missed defect is drawn, in [0, 1].
        seed: the operator's seed (with the image id, seeds the draws).
    """
    found = defects(mask, truth)
    draws = _draw_rng(seed, image.image_id).random(len(found))  # one per defect, fixed order
    taken = {a.area_id for a in image.areas}
    drawn: list[DrawnArea] = []
    k = 0
    for (c, bbox, cells), u in zip(found, draws, strict=True):
        detected = any(
            cells[[r for r, _ in a.cells], [q for _, q in a.cells]].mean() >= min_overlap
            for a in image.areas
            if a.cells
        )
        if detected or u >= rate:
            continue
        while f"{image.image_id}/drawn/{k}" in taken:
            k += 1
        area_id = f"{image.image_id}/drawn/{k}"
        taken.add(area_id)
        drawn.append(DrawnArea(area_id=area_id, cls=classes[c], bbox=bbox))
    return drawn


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
    draw_missed_rate: float = 0.0,
    masks: Mapping[str, np.ndarray] | None = None,
) -> FeedbackFile:
    """Answer every task image.

    Args:
        tasks: the mining tasks.
        truth: image id -> (C, h, w) ground-truth area targets.
        min_overlap: share of an area's cells on true defects that confirms it (and detects a
            defect, for drawing).
        error_rate: chance each verdict is flipped.
        healthy_flag_rate: chance a mined image without any defective cell is flagged healthy.
        correct_classes: whether a confirmed area may get a corrected class.
        seed: seeds every random choice.
        operator: the operator name written in the file.
        tasks_sha256: sha256 of the tasks file answered.
        draw_missed_rate: chance each missed defect of a mined image is drawn (0: none).
        masks: image id -> (H, W) class-index pixel mask; needed when ``draw_missed_rate > 0``.

    Raises:
        KeyError: a mined image without ground truth (or without a mask, when drawing).
        ValueError: ``draw_missed_rate > 0`` without masks, or a mask not the stored image's size.
    """
    if draw_missed_rate > 0 and masks is None:
        raise ValueError("draw_missed_rate > 0 needs the pixel masks of the mined images")
    rng = np.random.default_rng(seed)
    classes = list(tasks.classes)
    stored = (tasks.grid[0] * tasks.stride, tasks.grid[1] * tasks.stride)  # (H, W) pixels
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
        drawn: list[DrawnArea] = []
        if draw_missed_rate > 0 and masks is not None:  # rate 0 leaves ``rng`` and files as before
            if im.image_id not in masks:
                raise KeyError(f"no pixel mask for mined image {im.image_id!r}")
            mask = masks[im.image_id]
            if mask.shape != stored:
                raise ValueError(
                    f"pixel mask of mined image {im.image_id!r} is {mask.shape}, the stored "
                    f"image is {stored} (grid {tuple(tasks.grid)} x stride {tasks.stride})"
                )
            drawn = draw_missed(
                im,
                gt,
                mask,
                classes,
                min_overlap=min_overlap,
                rate=draw_missed_rate,
                seed=seed,
            )
        items.append(
            ImageFeedback(
                image_id=im.image_id,
                operator=operator,
                timestamp=SIM_EPOCH + timedelta(seconds=n),
                healthy=flag,
                areas=verdicts,
                drawn=drawn,
            )
        )
    return FeedbackFile(tasks_sha256=tasks_sha256, items=items)
