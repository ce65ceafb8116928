"""Import operator feedback into **partial labels**: per image a target and an annotated mask.

For each mined image, both (C, h, w):

- a **confirmed** area of class c (or of its corrected class c'): target 1, annotated, on channel c
  (c') of its cells; when corrected, channel c is annotated healthy there too;
- an **infirmed** area: target 0, annotated, on every channel of its cells;
- a **drawn** area of class c (a box the operator drew around a defect the model missed): target
  1, annotated, on channel c of the cells the box covers (:func:`box_cells`: at least
  ``min_coverage`` of a cell, ``line.cell_min_coverage``, the rule that makes ground-truth cells
  from pixel masks, so a drawn box teaches what a mask with that box painted would);
- everything else: not annotated (never backpropagated by the masked loss).

Confirmed and drawn cells are painted after infirmed ones: where they overlap, the defect's
channel says 1 and the other channels stay annotated healthy.

Import is a pure function of (tasks, feedback records): importing a file twice, or the same
records from two files, gives the same labels. Feedback naming an image or area that the tasks do
not contain is rejected with every offending id, and so is a drawn area with an unknown class, a
box that is empty or leaves the stored image, or an id used twice in the image. When several
records give different verdicts for one area, different boxes or classes for one drawn area, or
different healthy flags for one image, the newest wins and the conflict is reported. A drawn box
too small to cover any cell by the rule is reported (``drawn_without_cells``) and changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from mentoring.config import LineParams
from mentoring.feedback.schema import (
    FeedbackError,
    FeedbackFile,
    ImageFeedback,
    MiningTasks,
    read_feedback,
)
from mentoring.io import write_with

#: ``line.cell_min_coverage``'s default, for callers without params (the stage passes its own)
DEFAULT_MIN_COVERAGE: float = LineParams.model_fields["cell_min_coverage"].default
#: how far past the import's own clock a record's timestamp may be (clock skew between the
#: operators' stations and the importer); a later one is refused, or it would win every conflict
MAX_CLOCK_SKEW = timedelta(minutes=5)


@dataclass
class PartialLabels:
    """Partial labels of the mentored images.

    Attributes:
        ids: image ids, sorted.
        targets: (M, C, h, w) uint8, meaningful only where annotated.
        annotated: (M, C, h, w) bool.
        healthy: (M,) bool, True when an operator flagged the whole image healthy.
    """

    ids: list[str]
    targets: np.ndarray
    annotated: np.ndarray
    healthy: np.ndarray

    def save(self, path: str | Path) -> None:
        """Write as a compressed ``.npz``, atomically."""
        write_with(
            path,
            lambda tmp: np.savez_compressed(
                tmp,
                ids=np.array(self.ids),
                targets=self.targets,
                annotated=self.annotated,
                healthy=self.healthy,
            ),
        )

    @classmethod
    def load(cls, path: str | Path) -> PartialLabels:
        if not Path(path).exists():
            raise FileNotFoundError(f"{path}: partial labels not found (run `mentoring mentor`)")
        with np.load(path) as z:
            return cls([str(i) for i in z["ids"]], z["targets"], z["annotated"], z["healthy"])


@dataclass
class ImportReport:
    """What an import did: counts and the conflicts it resolved (newest record wins)."""

    n_images: int = 0
    n_confirmed: int = 0
    n_infirmed: int = 0
    n_corrected: int = 0
    n_healthy_images: int = 0
    n_drawn: int = 0
    n_records: int = 0
    n_duplicates: int = 0
    conflicts: list[str] = field(default_factory=list)
    drawn_without_cells: list[str] = field(default_factory=list)  # boxes below min_coverage

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def _newer(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    """Is record ``a`` (timestamp first) newer than ``b``? On a tie, a fixed order of the other
    fields decides, so the winner never depends on the order files are read in."""
    if a[0] != b[0]:
        return bool(a[0] > b[0])
    return tuple(str(x) for x in a[1:]) > tuple(str(x) for x in b[1:])


def box_cells(
    bbox: tuple[int, int, int, int], grid: tuple[int, int], stride: int, min_coverage: float
) -> np.ndarray:
    """The grid cells a box covers: (h, w) bool, True where it covers >= ``min_coverage`` of a cell.

    The rule of :func:`mentoring.data.cells.mask_to_cells` (a cell is defective when at least
    ``min_coverage`` of its pixels are), applied to the box's pixels.

    Args:
        bbox: (x0, y0, x1, y1) in the stored image's pixels, exclusive end.
        grid: (h, w) cells of the image.
        stride: pixels per cell side.
        min_coverage: covered fraction of a cell that makes it covered, in (0, 1].
    """
    x0, y0, x1, y1 = bbox
    gh, gw = grid
    starts_y, starts_x = np.arange(gh) * stride, np.arange(gw) * stride
    # overlap of [y0, y1) with each row of cells, and of [x0, x1) with each column: (h,), (w,)
    over_y = np.clip(np.minimum(y1, starts_y + stride) - np.maximum(y0, starts_y), 0, None)
    over_x = np.clip(np.minimum(x1, starts_x + stride) - np.maximum(x0, starts_x), 0, None)
    cover = np.outer(over_y, over_x) / float(stride * stride)  # (h, w) covered fraction
    return np.asarray(cover >= min_coverage)


def _check_drawn(
    path: Path, item: ImageFeedback, tasks: MiningTasks, mined: set[str], bad: list[str]
) -> list[int]:
    """Indices of ``item.drawn`` that are valid; every problem goes to ``bad`` with its ids."""
    gh, gw = tasks.grid
    width, height = gw * tasks.stride, gh * tasks.stride
    ok: list[int] = []
    seen: set[str] = set()
    for k, d in enumerate(item.drawn):
        where = f"{path.name}: image {item.image_id!r}: drawn area {d.area_id!r}"
        problems = []
        if d.area_id in seen:
            problems.append("its id is used twice in the image")
        elif d.area_id in mined:
            problems.append("its id is the id of a mined area of the image")
        seen.add(d.area_id)
        if d.cls not in tasks.classes:
            problems.append(f"unknown class {d.cls!r} (classes: {', '.join(tasks.classes)})")
        x0, y0, x1, y1 = d.bbox
        if x0 >= x1 or y0 >= y1:
            problems.append(f"empty box {list(d.bbox)} (x0 < x1 and y0 < y1 are needed)")
        elif x0 < 0 or y0 < 0 or x1 > width or y1 > height:
            problems.append(
                f"box {list(d.bbox)} leaves the stored image ({width} x {height} pixels)"
            )
        bad.extend(f"{where}: {p}" for p in problems)
        if not problems:
            ok.append(k)
    return ok


def load_feedback_files(paths: list[Path]) -> list[tuple[Path, FeedbackFile]]:
    """Read every feedback file (each validated; errors name the file)."""
    return [(p, read_feedback(p)) for p in sorted(paths)]


def build_partial_labels(
    tasks: MiningTasks,
    files: list[tuple[Path, FeedbackFile]],
    min_coverage: float = DEFAULT_MIN_COVERAGE,
    now: datetime | None = None,
    max_skew: timedelta = MAX_CLOCK_SKEW,
) -> tuple[PartialLabels, ImportReport]:
    """Turn validated feedback into partial labels for the images of ``tasks``.

    Args:
        tasks: the mining tasks the feedback answers.
        files: (path, parsed file) pairs, as :func:`load_feedback_files` returns them.
        min_coverage: the fraction of a cell a drawn box must cover to confirm it
            (``line.cell_min_coverage``).
        now: the import's time (default: the clock's, in UTC); a record dated after
            ``now + max_skew`` is refused.
        max_skew: the clock skew tolerated between the operators' stations and the importer.

    Raises:
        FeedbackError: listing every unknown image id, area id and class, every invalid drawn
            area (with its image id and area id) and every record dated in the future (with its
            index in the file and its image id), with their file.
    """
    classes = list(tasks.classes)
    images = {im.image_id: im for im in tasks.images}
    areas = {a.area_id: (im.image_id, a) for im in tasks.images for a in im.areas}
    bad: list[str] = []
    # 1) newest verdict per area and newest healthy flag per image; identical records collapse
    area_v: dict[str, tuple[datetime, str, str | None, str]] = {}
    image_h: dict[str, tuple[datetime, bool, str]] = {}
    # (image id, drawn area id) -> (timestamp, class, bbox, operator)
    drawn_v: dict[tuple[str, str], tuple[datetime, str, tuple[int, int, int, int], str]] = {}
    mined = {im.image_id: {a.area_id for a in im.areas} for im in tasks.images}
    report = ImportReport()
    seen: set[tuple[object, ...]] = set()
    latest = (now or datetime.now(UTC)) + max_skew
    for path, fb in files:
        for index, item in enumerate(fb.items):
            if item.timestamp > latest:
                bad.append(
                    f"{path.name}: item {index} (image {item.image_id!r}, operator "
                    f"{item.operator!r}): timestamp {item.timestamp.isoformat()} is after the "
                    f"import time plus {max_skew} of clock skew ({latest.isoformat()})"
                )
                continue
            if item.image_id not in images:
                bad.append(f"{path.name}: unknown image {item.image_id!r}")
                continue
            for av in item.areas:
                report.n_records += 1
                owner = areas.get(av.area_id)
                if owner is None or owner[0] != item.image_id:
                    bad.append(
                        f"{path.name}: unknown area {av.area_id!r} of image {item.image_id!r}"
                    )
                    continue
                key = (av.area_id, av.verdict, av.corrected_class, item.timestamp, item.operator)
                if key in seen:
                    report.n_duplicates += 1
                    continue
                seen.add(key)
                if av.corrected_class is not None and av.corrected_class not in classes:
                    bad.append(
                        f"{path.name}: area {av.area_id!r}: unknown class {av.corrected_class!r}"
                    )
                    continue
                new = (item.timestamp, av.verdict, av.corrected_class, item.operator)
                old = area_v.get(av.area_id)
                if old is not None and (old[1], old[2]) != (new[1], new[2]):
                    win, lose = (new, old) if _newer(new, old) else (old, new)
                    report.conflicts.append(
                        f"area {av.area_id}: {lose[1]} by {lose[3]} at {lose[0].isoformat()} "
                        f"overridden by {win[1]} by {win[3]} at {win[0].isoformat()}"
                    )
                if old is None or _newer(new, old):
                    area_v[av.area_id] = new
            for k in _check_drawn(path, item, tasks, mined[item.image_id], bad):
                d = item.drawn[k]
                report.n_records += 1
                dkey = ("drawn", item.image_id, d.area_id, d.cls, d.bbox, item.timestamp)
                if (*dkey, item.operator) in seen:
                    report.n_duplicates += 1
                    continue
                seen.add((*dkey, item.operator))
                drawn = (item.timestamp, d.cls, d.bbox, item.operator)
                old_d = drawn_v.get((item.image_id, d.area_id))
                if old_d is not None and old_d[1:3] != drawn[1:3]:
                    win_d, lose_d = (drawn, old_d) if _newer(drawn, old_d) else (old_d, drawn)
                    report.conflicts.append(
                        f"drawn area {d.area_id} of image {item.image_id}: {lose_d[1]} "
                        f"{list(lose_d[2])} by {lose_d[3]} at {lose_d[0].isoformat()} "
                        f"overridden by {win_d[1]} {list(win_d[2])} by {win_d[3]} at "
                        f"{win_d[0].isoformat()}"
                    )
                if old_d is None or _newer(drawn, old_d):
                    drawn_v[(item.image_id, d.area_id)] = drawn
            if item.healthy is not None:
                h = (item.timestamp, item.healthy, item.operator)
                old_h = image_h.get(item.image_id)
                if old_h is not None and old_h[1] != h[1]:
                    report.conflicts.append(
                        f"image {item.image_id}: healthy={old_h[1]} and healthy={h[1]}; "
                        f"the newest wins"
                    )
                if old_h is None or _newer(h, old_h):
                    image_h[item.image_id] = h
    if bad:
        raise FeedbackError(
            f"{len(bad)} feedback record(s) reference unknown ids or are invalid:\n  "
            + "\n  ".join(bad)
        )
    # 2) paint labels: infirmed areas first (all channels 0), then confirmed (their channel 1),
    # then drawn (their class's channel 1)
    touched = sorted({areas[a][0] for a in area_v} | set(image_h) | {i for i, _ in drawn_v})
    gh, gw = tasks.grid
    n, c = len(touched), len(classes)
    targets = np.zeros((n, c, gh, gw), np.uint8)
    annotated = np.zeros((n, c, gh, gw), bool)
    healthy = np.zeros(n, bool)
    row = {image_id: i for i, image_id in enumerate(touched)}
    ordered = sorted(area_v.items(), key=lambda kv: kv[1][1] == "defect")
    for area_id, (_ts, verdict, corrected, _op) in ordered:
        image_id, area = areas[area_id]
        i = row[image_id]
        rr = np.array([r for r, _ in area.cells])
        cc = np.array([q for _, q in area.cells])
        if verdict == "healthy":
            annotated[i][:, rr, cc] = True
            targets[i][:, rr, cc] = 0
            report.n_infirmed += 1
            continue
        k = classes.index(corrected or area.cls)
        if corrected and corrected != area.cls:
            j = classes.index(area.cls)
            annotated[i, j, rr, cc] = True
            targets[i, j, rr, cc] = 0
            report.n_corrected += 1
        annotated[i, k, rr, cc] = True
        targets[i, k, rr, cc] = 1
        report.n_confirmed += 1
    # 3) drawn areas: confirmed defects of their class on the cells their box covers
    for (image_id, area_id), (_ts, cls, bbox, _op) in sorted(drawn_v.items()):
        cover = box_cells(bbox, (gh, gw), tasks.stride, min_coverage)
        report.n_drawn += 1
        if not cover.any():
            report.drawn_without_cells.append(
                f"drawn area {area_id} of image {image_id}: box {list(bbox)} covers no cell "
                f"by {min_coverage:.0%} (stride {tasks.stride}); nothing learnt from it"
            )
            continue
        i, k = row[image_id], classes.index(cls)
        annotated[i, k][cover] = True
        targets[i, k][cover] = 1
    for image_id, (_ts, flag, _op) in image_h.items():
        healthy[row[image_id]] = flag
        if flag and targets[row[image_id]].any():
            report.conflicts.append(
                f"image {image_id}: flagged healthy but has confirmed "
                f"defect areas; the areas are kept"
            )
    report.n_images = n
    report.n_healthy_images = int(healthy.sum())
    return PartialLabels(touched, targets, annotated, healthy), report


def merge_labels(old: PartialLabels, new: PartialLabels) -> PartialLabels:
    """Partial labels of two mentoring rounds together: every image of either; where both
    rounds annotated an entry, the newer round's label wins; an image flagged healthy in either
    round stays flagged (unless the newer round confirmed a defect on it)."""
    if old.ids and new.ids and old.targets.shape[1:] != new.targets.shape[1:]:
        raise ValueError(
            f"cannot merge labels of shape {old.targets.shape[1:]} and {new.targets.shape[1:]}"
        )
    ids = sorted(set(old.ids) | set(new.ids))
    shape = (old.targets if old.ids else new.targets).shape[1:]
    targets = np.zeros((len(ids), *shape), np.uint8)
    annotated = np.zeros((len(ids), *shape), bool)
    healthy = np.zeros(len(ids), bool)
    row = {i: k for k, i in enumerate(ids)}
    for labels in (old, new):  # the newer round painted last
        for j, image_id in enumerate(labels.ids):
            k = row[image_id]
            a = labels.annotated[j]
            targets[k][a] = labels.targets[j][a]
            annotated[k] |= a
            healthy[k] |= bool(labels.healthy[j])
    for j, image_id in enumerate(new.ids):
        if (new.annotated[j] & (new.targets[j] == 1)).any():
            healthy[row[image_id]] = bool(new.healthy[j])
    return PartialLabels(ids, targets, annotated, healthy)


def unmentored(tasks: MiningTasks, labels: PartialLabels) -> tuple[MiningTasks, dict[str, int]]:
    """The tasks of a new mining round without what operators already answered.

    An area is kept when at least one of its cells is not yet annotated on its class's channel;
    an image flagged healthy before, or left without an area, is dropped. Returns the tasks and
    counts (``images_dropped_healthy``, ``areas_dropped``, ``images_dropped_empty``).
    """
    classes = list(tasks.classes)
    row = {i: k for k, i in enumerate(labels.ids)}
    kept = []
    counts = {"images_dropped_healthy": 0, "areas_dropped": 0, "images_dropped_empty": 0}
    for im in tasks.images:
        k = row.get(im.image_id)
        if k is None:
            kept.append(im)
            continue
        if labels.healthy[k]:
            counts["images_dropped_healthy"] += 1
            continue
        areas = []
        for a in im.areas:
            c = classes.index(a.cls)
            if all(labels.annotated[k, c, r, q] for r, q in a.cells):
                counts["areas_dropped"] += 1
            else:
                areas.append(a)
        if not areas:
            counts["images_dropped_empty"] += 1
            continue
        kept.append(im.model_copy(update={"areas": areas}))
    return tasks.model_copy(update={"images": kept}), counts
