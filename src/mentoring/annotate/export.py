"""The annotation database as a feedback file, the one ``mentoring mentor import`` reads.

One item per (image, operator) that has something current (not undone) to say: the operator's
area verdicts (with ``corrected_class`` when they changed the class), their healthy flag (with a
``healthy`` verdict for each area the flag rejected without its own verdict), and the boxes they
drew. Its timestamp is that operator's latest contributing action on the image. The file carries
the task set's sha256 and is written atomically (to a file, or to S3 beside the tasks it
answers); it is a function of the database only (sorted, no export time), so exporting twice
gives the same bytes, and importing it twice changes nothing (the import's rule).

Example:
    >>> export_feedback(AnnotationDB("data/annotate/round-7.sqlite"),
    ...                 Path("data/feedback/round-7.json"))              # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from mentoring.annotate.db import AnnotationDB, ImageState
from mentoring.feedback.rounds import write_location
from mentoring.feedback.schema import AreaVerdict, DrawnArea, FeedbackFile, ImageFeedback, dump


@dataclass(frozen=True)
class ExportSummary:
    """What an export wrote."""

    path: str  # a file path or an s3:// URI
    items: int
    images: int
    areas: int
    corrected: int
    healthy_images: int
    drawn: int

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def _when(at: float) -> datetime:
    return datetime.fromtimestamp(at, UTC)


@dataclass
class _Part:
    """What one operator said about one image."""

    at: float  # their latest contributing action
    areas: list[AreaVerdict] = field(default_factory=list)
    drawn: list[DrawnArea] = field(default_factory=list)
    healthy: bool = False


def _items(state: ImageState) -> list[ImageFeedback]:
    """The feedback items of one image: one per operator with a current contribution."""
    parts: dict[str, _Part] = {}

    def part(operator: str, at: float) -> _Part:
        p = parts.setdefault(operator, _Part(at))
        p.at = max(p.at, at)
        return p

    for a in state.areas:
        if a.verdict is None or a.operator is None or a.at is None:
            continue
        corrected = a.cls if a.verdict == "defect" and a.cls != a.detected_class else None
        part(a.operator, a.at).areas.append(
            AreaVerdict.model_validate(
                {"area_id": a.area_id, "verdict": a.verdict, "corrected_class": corrected}
            )
        )
    for d in state.drawn:
        part(d.operator, d.at).drawn.append(DrawnArea(area_id=d.area_id, cls=d.cls, bbox=d.bbox))
    if state.healthy is not None:
        part(*state.healthy).healthy = True
    return [
        ImageFeedback(
            image_id=state.image_id,
            operator=operator,
            timestamp=_when(p.at),
            healthy=True if p.healthy else None,
            areas=sorted(p.areas, key=lambda v: v.area_id),
            drawn=sorted(p.drawn, key=lambda v: v.area_id),
        )
        for operator, p in sorted(parts.items())
    ]


def build_feedback(db: AnnotationDB) -> FeedbackFile:
    """The database's current state as a feedback file (items in task order, then operator)."""
    info = db.info()
    items = [item for state in db.states() for item in _items(state)]
    return FeedbackFile(tasks_sha256=info.sha256, items=items)


def export_feedback(
    db: AnnotationDB, out: str | Path, endpoint_url: str | None = None
) -> ExportSummary:
    """Write the database's feedback to ``out`` (a path or an ``s3://`` URI, e.g. the
    ``feedback/`` of its mining round) atomically; what was written."""
    fb = build_feedback(db)
    written = write_location(out, (dump(fb) + "\n").encode(), endpoint_url)
    return ExportSummary(
        path=written,
        items=len(fb.items),
        images=len({i.image_id for i in fb.items}),
        areas=sum(len(i.areas) for i in fb.items),
        corrected=sum(a.corrected_class is not None for i in fb.items for a in i.areas),
        healthy_images=sum(bool(i.healthy) for i in fb.items),
        drawn=sum(len(i.drawn) for i in fb.items),
    )
