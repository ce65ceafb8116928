"""Import operator feedback into **partial labels**: per image a target and an annotated mask.

For each mined image, both (C, h, w):

- a **confirmed** area of class c (or of its corrected class c'): target 1, annotated, on channel c
  (c') of its cells; when corrected, channel c is annotated healthy there too;
- an **infirmed** area: target 0, annotated, on every channel of its cells;
- everything else: not annotated (never backpropagated by the masked loss).

Import is a pure function of (tasks, feedback records): importing a file twice, or the same
records from two files, gives the same labels. Feedback naming an image or area that the tasks do
not contain is rejected with every offending id. When several records give different verdicts for
one area (or one image's healthy flag), the newest wins and the conflict is reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from mentoring.feedback.schema import (
    FeedbackError,
    FeedbackFile,
    MiningTasks,
    read_feedback,
)
from mentoring.io import write_with


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
    n_records: int = 0
    n_duplicates: int = 0
    conflicts: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def _newer(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    """Is record ``a`` (timestamp first) newer than ``b``? On a tie, a fixed order of the other
    fields decides, so the winner never depends on the order files are read in."""
    if a[0] != b[0]:
        return bool(a[0] > b[0])
    return tuple(str(x) for x in a[1:]) > tuple(str(x) for x in b[1:])


def load_feedback_files(paths: list[Path]) -> list[tuple[Path, FeedbackFile]]:
    """Read every feedback file (each validated; errors name the file)."""
    return [(p, read_feedback(p)) for p in sorted(paths)]


def build_partial_labels(
    tasks: MiningTasks, files: list[tuple[Path, FeedbackFile]]
) -> tuple[PartialLabels, ImportReport]:
    """Turn validated feedback into partial labels for the images of ``tasks``.

    Raises:
        FeedbackError: listing every unknown image id, area id and class, with their file.
    """
    classes = list(tasks.classes)
    images = {im.image_id: im for im in tasks.images}
    areas = {a.area_id: (im.image_id, a) for im in tasks.images for a in im.areas}
    bad: list[str] = []
    # 1) newest verdict per area and newest healthy flag per image; identical records collapse
    area_v: dict[str, tuple[datetime, str, str | None, str]] = {}
    image_h: dict[str, tuple[datetime, bool, str]] = {}
    report = ImportReport()
    seen: set[tuple[object, ...]] = set()
    for path, fb in files:
        for item in fb.items:
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
            f"{len(bad)} feedback record(s) reference unknown ids:\n  " + "\n  ".join(bad)
        )
    # 2) paint labels: infirmed areas first (all channels 0), then confirmed (their channel 1)
    touched = sorted({areas[a][0] for a in area_v} | set(image_h))
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
