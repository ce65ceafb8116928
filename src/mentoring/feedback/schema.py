"""Versioned JSON schemas of mining tasks and operator feedback (pydantic models).

``tasks.json`` (written by ``mentoring mine``; the header indented, each image one line of
compact JSON, see :func:`write_tasks`)::

    {"schema_version": 1, "model": {"name": "baseline", "path": "...", "sha256": "..."},
     "heuristic": "detections", "threshold": 0.5, "stride": 8, "grid": [16, 16],
     "classes": ["scratch", ...], "created_at": "...",
     "images": [{"image_id": "new-pool-000012", "path": "line/new/pool/images/...png",
                 "score": 0.93,
                 "areas": [{"area_id": "new-pool-000012/stain/0", "class": "stain",
                            "cells": [[3, 4], [3, 5]], "bbox": [32, 24, 48, 32],
                            "score": 0.93}]}]}

A feedback file (``data/feedback/*.json``, from the web interface or the simulated operator)::

    {"schema_version": 1, "tasks_sha256": "...",
     "items": [{"image_id": "new-pool-000012", "operator": "op-7",
                "timestamp": "2026-11-24T10:00:00Z", "healthy": null,
                "areas": [{"area_id": "new-pool-000012/stain/0", "verdict": "healthy",
                           "corrected_class": null}],
                "drawn": [{"area_id": "labelstudio/Xy3k9aBcDe", "class": "scratch",
                           "bbox": [40, 8, 64, 20]}]}]}

``verdict`` is ``defect`` (the operator confirms the area) or ``healthy`` (infirms it);
``corrected_class`` optionally names the right class of a confirmed area; ``healthy: true`` flags
the whole image healthy (healthy knowledge).

``drawn`` (optional, schema version 1 still) lists the areas the operator **drew** around defects
the model missed: ``area_id`` is unique among the image's areas (mined and drawn), ``class`` is
the defect's class and ``bbox`` is (x0, y0, x1, y1) in the **stored** image's pixels (the image of
the manifest, ``grid * stride`` pixels a side), exclusive end. Every grid cell the box covers
becomes a confirmed defect of that class (the rule: :func:`mentoring.feedback.partial.box_cells`).
An item without drawn areas is written without the key, so such files read the same in versions
that predate it; any front end (Label Studio, the web interface) writes the same field.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
)

SCHEMA_VERSION: Literal[1] = 1


class FeedbackError(ValueError):
    """Feedback or tasks that cannot be used; the message names the file and the ids."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ModelRef(_Strict):
    name: str  # e.g. "baseline" or a registry version
    path: str  # where the model file was read
    sha256: str  # of the model file: ties tasks to the exact model that mined them


class TaskArea(_Strict):
    area_id: str
    cls: str = Field(alias="class")
    cells: list[tuple[int, int]]  # (row, col) grid cells
    bbox: tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels, exclusive end
    score: float
    # the same box in the original (camera) image's pixels; None when stored = original
    orig_bbox: tuple[int, int, int, int] | None = None


class TaskImage(_Strict):
    image_id: str
    path: str  # relative to the data root
    score: float  # the mining heuristic's score
    areas: list[TaskArea]
    orig_size: tuple[int, int] | None = None  # (width, height) of the original image, if ingested
    source_uri: str = ""  # where the original image was read (local path or s3://...), if ingested


class MiningTasks(_Strict):
    schema_version: Literal[1] = SCHEMA_VERSION
    model: ModelRef
    heuristic: str
    threshold: float
    stride: int
    grid: tuple[int, int]  # (h, w) cells per image
    classes: list[str]
    created_at: datetime
    images: list[TaskImage]


class AreaVerdict(_Strict):
    area_id: str
    verdict: Literal["defect", "healthy"]
    corrected_class: str | None = None  # for a confirmed area detected with the wrong class


class DrawnArea(_Strict):
    """An area the operator drew around a defect the model missed: a confirmed defect."""

    area_id: str  # unique among the image's areas, mined and drawn
    cls: str = Field(alias="class")
    bbox: tuple[int, int, int, int]  # x0, y0, x1, y1 in the stored image's pixels, exclusive end


class ImageFeedback(_Strict):
    image_id: str
    operator: str
    timestamp: datetime
    healthy: bool | None = None  # True: the operator flags the whole image healthy
    areas: list[AreaVerdict] = Field(default_factory=list)
    drawn: list[DrawnArea] = Field(default_factory=list)  # new areas around missed defects

    @field_validator("timestamp")
    @classmethod
    def _naive_is_utc(cls, ts: datetime) -> datetime:
        # a timestamp without an offset is read as UTC: every writer of feedback here (the web
        # interface, Label Studio's updated_at, the simulated operator) writes UTC, and naive and
        # aware timestamps cannot be compared, so a naive one would crash conflict resolution
        return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts

    @model_serializer(mode="wrap")
    def _without_empty_drawn(self, handler: SerializerFunctionWrapHandler) -> dict[str, object]:
        # no drawn area: the item is written as before the field existed (older readers forbid
        # unknown keys)
        data: dict[str, object] = handler(self)
        if not self.drawn:
            data.pop("drawn", None)
        return data


class FeedbackFile(_Strict):
    schema_version: Literal[1] = SCHEMA_VERSION
    tasks_sha256: str | None = None  # sha256 of the tasks.json the feedback answers
    items: list[ImageFeedback]


def _where(data: object, loc: tuple[int | str, ...]) -> str:
    """An error's location, with the id of the record it is in (``items.3 (image 'x')...``)."""
    text = ".".join(str(p) for p in loc)
    if len(loc) >= 2 and isinstance(data, dict) and isinstance(loc[1], int):
        records = data.get(str(loc[0]))
        record = records[loc[1]] if isinstance(records, list) and loc[1] < len(records) else None
        if isinstance(record, dict):
            rid = record.get("image_id")
            if rid is not None:
                text += f" (image {rid!r})"
    return text


def _read(path: Path, model: type[BaseModel]) -> BaseModel:
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise FeedbackError(f"{path}: file not found") from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise FeedbackError(
            f"{path}: not UTF-8 text (byte offset {exc.start}, line {line}: {exc.reason})"
        ) from None
    except json.JSONDecodeError as exc:
        raise FeedbackError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    except RecursionError:
        # json's parser recurses once per nested array/object: nesting this deep is no feedback
        raise FeedbackError(
            f"{path}: not valid feedback JSON (nested deeper than the parser's recursion "
            f"limit, {sys.getrecursionlimit()})"
        ) from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        lines = [f"{_where(data, e['loc'])}: {e['msg']}" for e in exc.errors()[:10]]
        more = f"\n  ... {exc.error_count() - 10} more" if exc.error_count() > 10 else ""
        raise FeedbackError(
            f"{path}: invalid {model.__name__}:\n  " + "\n  ".join(lines) + more
        ) from None


def read_tasks(path: str | Path) -> MiningTasks:
    """Read and validate a ``tasks.json``."""
    tasks = _read(Path(path), MiningTasks)
    assert isinstance(tasks, MiningTasks)
    return tasks


def read_feedback(path: str | Path) -> FeedbackFile:
    """Read and validate one feedback file."""
    fb = _read(Path(path), FeedbackFile)
    assert isinstance(fb, FeedbackFile)
    return fb


def dump(model: BaseModel) -> str:
    """Canonical JSON text of a schema object (aliases, sorted keys)."""
    return json.dumps(model.model_dump(mode="json", by_alias=True), indent=1, sort_keys=True)


def write_tasks(path: str | Path, header: MiningTasks, images: Iterable[TaskImage]) -> None:
    """Write a ``tasks.json`` image by image, atomically, without holding every image.

    ``header`` carries everything but the images (its own ``images`` are ignored) and is written
    like :func:`dump`; ``images`` may be a generator: each image is serialised as it comes, on
    one line of compact JSON in the schema's field order (pydantic's serialiser: about ten times
    faster than indented JSON), which keeps a file of 10,000s of images greppable, one image a
    line.
    """
    from mentoring.io import atomic_path

    head = dump(header.model_copy(update={"images": []}))
    marker = '\n "images": [],\n'
    if head.count(marker) != 1:  # pragma: no cover - the layout of dump() changed
        raise AssertionError("tasks.json layout: cannot find the images list to stream")
    before, after = head.split(marker)
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write(before + '\n "images": [')
        first = True
        for image in images:
            # pydantic's own JSON serialiser, fields in schema order (image_id first)
            f.write(("\n  " if first else ",\n  ") + image.model_dump_json(by_alias=True))
            first = False
        f.write("],\n" if first else "\n ],\n")
        f.write(after)
