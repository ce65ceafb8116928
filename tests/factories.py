"""Hand-made mining tasks for tests: the few fields that matter, the rest fixed."""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np
from PIL import Image

from mentoring.feedback.schema import MiningTasks, ModelRef, TaskArea, TaskImage

#: the creation time of every hand-made task file
T0 = datetime(2026, 5, 1, 8, 0, tzinfo=UTC)


def area(
    area_id: str,
    cls: str,
    cells: list[tuple[int, int]],
    bbox: tuple[int, int, int, int] = (0, 0, 8, 8),
    score: float = 0.9,
) -> TaskArea:
    """A detected area of class ``cls`` covering grid ``cells``."""
    return TaskArea(area_id=area_id, cls=cls, cells=cells, bbox=bbox, score=score)


def make_tasks(
    images: dict[str, list[TaskArea]],
    classes: Sequence[str] = ("scratch", "stain"),
    grid: tuple[int, int] = (4, 4),
    paths: dict[str, str] | None = None,
    model_path: str = "m.pt",
    model_sha256: str = "0" * 64,
) -> MiningTasks:
    """Tasks of the ``detections`` heuristic at 0.5, stride 8: one image per ``images`` key, in
    order, with its areas (path ``<id>.png`` unless ``paths`` says otherwise)."""
    paths = paths or {}
    return MiningTasks(
        model=ModelRef(name="baseline", path=model_path, sha256=model_sha256),
        heuristic="detections",
        threshold=0.5,
        stride=8,
        grid=grid,
        classes=list(classes),
        created_at=T0,
        images=[
            TaskImage(image_id=i, path=paths.get(i, f"{i}.png"), score=0.9, areas=areas)
            for i, areas in images.items()
        ],
    )


def png_bytes(array: np.ndarray) -> bytes:
    """PNG bytes of a uint8 array (a camera image or a class-index mask)."""
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def jpeg_bytes(array: np.ndarray) -> bytes:
    """JPEG bytes of a uint8 array."""
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG")
    return buf.getvalue()
