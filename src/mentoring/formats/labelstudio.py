"""The Label Studio round trip: mining tasks out as pre-annotated tasks, annotations back in.

**Export** (:func:`export_tasks`, :func:`write_export`): one Label Studio task per mined image.
``data.image`` is a ``data:image/png;base64,...`` URI of the image operators judge: the
**original** (camera) image, read with :func:`mentoring.storage.open_store` from the task's
``source_uri`` and decoded like ingestion does (EXIF orientation, deep images scaled), when it is
set, readable and still the image that was ingested (size, sha256); else the **stored** image
under the data root. ``predictions`` holds one prediction (``model_version`` = the mining model's
name and sha) with a ``rectanglelabels`` region per detected area, in percent of the image shown,
with a stable region id derived from the area id. No per-region verdict is preset: a preset
"defect" would look like an operator's decision. :func:`labeling_config` is the project's labeling
configuration (one ``Label`` per class, a per-region ``verdict`` and an image-level
``image_verdict``). ``mapping.json`` (:class:`ExportMapping`) keeps what the import needs: region
id -> area id and class, and per image which image was shown, its size and the
:class:`~mentoring.data.images.Mapping` to stored pixels.

**Import** (:func:`import_annotations`): a Label Studio JSON export -> a feedback file
(:mod:`mentoring.feedback.schema`). Per task, its latest submitted annotation (skipped ones are
ignored) gives one feedback item:

- a predicted region kept with the verdict "defect", or kept with **no verdict**, is confirmed
  (keeping a pre-annotated region and submitting is accepting it, as Label Studio's
  pre-annotation works); with another label than the detected class, it is confirmed with that
  ``corrected_class``;
- a predicted region with the verdict "healthy" (whatever its label), or deleted, is rejected;
- a new region (an id that is none of the prediction's) is a ``drawn`` area of its label: percent
  of the image shown -> its pixels -> stored pixels (:meth:`Mapping.from_original`). For a tile,
  a box outside this tile comes back empty: it is reported, not imported. A new region given the
  verdict "healthy" is reported and ignored (a drawn area states a defect);
- the image-level choice "healthy image" sets ``healthy: true``;
- the operator is the annotation's ``completed_by``: its email when the export expands it, else
  ``labelstudio:<user id>``; the timestamp is its ``updated_at``.

Deleted regions count as rejected only when the annotation started from the prediction (it
carries a parent prediction, the embedded prediction, or a predicted region id); an annotation
drawn from scratch leaves the predicted areas unanswered, and the import says how many did. Tasks
without an annotation give no item (counted, and so are the exported images the export lacks:
Label Studio exports only annotated tasks unless asked for all). An image id or a region id of
ours that the mapping does not know, a label that is no class, or a result of an unknown control
is an error naming the export, the task and the ids.

Example:
    >>> tasks = read_tasks("data/mining/tasks.json")                         # doctest: +SKIP
    >>> export = export_tasks(tasks, manifest, data_root, tasks_sha256=sha)  # doctest: +SKIP
    >>> write_export(export, Path("ls"))                                     # doctest: +SKIP
    >>> fb, summary = import_annotations(read_export("ls.json"), export.mapping)  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal
from xml.sax.saxutils import quoteattr

import numpy as np
import pandas as pd
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mentoring.data.images import BadFile, Mapping, decode_image
from mentoring.feedback.rounds import read_location, write_location
from mentoring.feedback.schema import (
    AreaVerdict,
    DrawnArea,
    FeedbackFile,
    ImageFeedback,
    MiningTasks,
    TaskImage,
    dump,
)
from mentoring.io import write_bytes, write_json
from mentoring.storage import (
    LocalStore,
    S3Store,
    StorageError,
    is_s3,
    open_store,
    sha256_bytes,
)

#: names of the labeling config's controls (the import reads results by these names)
IMAGE, LABEL, VERDICT, IMAGE_VERDICT = "image", "label", "verdict", "image_verdict"
DEFECT, HEALTHY, HEALTHY_IMAGE = "defect", "healthy", "healthy image"
#: the export's file names in its folder (and under ``--s3-prefix``)
TASKS_FILE, CONFIG_FILE, MAPPING_FILE = "tasks.json", "config.xml", "mapping.json"
#: where the tasks go under an S3 prefix: a Label Studio import storage reads every JSON of a
#: prefix as tasks, so the config and the mapping stay beside it, not in it
S3_TASKS_KEY = f"tasks/{TASKS_FILE}"
#: drawn areas' ids: the Label Studio region id, under this prefix
DRAWN_PREFIX = "labelstudio/"

_REGION_ID = re.compile(r"^mt[0-9a-f]{16}$")  # ours; Label Studio's own ids are 10 characters


class LabelStudioError(ValueError):
    """An export or annotations that cannot be used; the message names the file and the ids."""


def region_id(image_id: str, area_id: str) -> str:
    """The stable Label Studio region id of a detected area: ``mt`` + 16 hex digits."""
    return "mt" + hashlib.sha256(f"{image_id}\n{area_id}".encode()).hexdigest()[:16]


def labeling_config(classes: Sequence[str]) -> str:
    """The project's labeling config: boxes with one label per class, a per-region verdict
    (shown when a region is selected) and an image-level "healthy image" choice."""
    labels = "\n".join(f"    <Label value={quoteattr(c)}/>" for c in classes)
    return f"""<View>
  <Header value="$image_id"/>
  <Image name="{IMAGE}" value="$image" zoom="true"/>
  <RectangleLabels name="{LABEL}" toName="{IMAGE}" canRotate="false">
{labels}
  </RectangleLabels>
  <View visibleWhen="region-selected">
    <Header value="Verdict on the selected area"/>
    <Choices name="{VERDICT}" toName="{IMAGE}" perRegion="true" choice="single">
      <Choice value="{DEFECT}"/>
      <Choice value="{HEALTHY}"/>
    </Choices>
  </View>
  <Choices name="{IMAGE_VERDICT}" toName="{IMAGE}" choice="single">
    <Choice value="{HEALTHY_IMAGE}"/>
  </Choices>
</View>
"""


# -- mapping.json ------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class RegionRef(_Strict):
    area_id: str
    cls: str = Field(alias="class")  # the detected class (a different label = a correction)


class ImageRef(_Strict):
    shown: Literal["original", "stored"]  # which image the task shows
    shown_size: tuple[int, int]  # (width, height) of the image shown: percent refers to it
    stored_size: tuple[int, int]  # (width, height) of the stored image (drawn boxes' pixels)
    mapping: dict[str, Any]  # Mapping fields: stored pixels -> original pixels
    source_uri: str = ""  # where the original was read ("" when the stored image is shown)
    regions: dict[str, RegionRef]  # region id -> the detected area

    def to_mapping(self) -> Mapping:
        return Mapping(**self.mapping)


class ExportMapping(_Strict):
    """``mapping.json``: what the import needs to map an export's annotations back."""

    format: Literal["mentoring-labelstudio"] = "mentoring-labelstudio"
    version: Literal[1] = 1
    tasks_sha256: str  # of the tasks.json exported: the feedback file answers it
    model_version: str
    classes: list[str]
    images: dict[str, ImageRef]  # image id -> how its task was built


def read_mapping(path: str | Path, endpoint_url: str | None = None) -> ExportMapping:
    """Read and validate an export's ``mapping.json`` (a path or an ``s3://`` URI, e.g. a
    mining round's ``labelstudio/mapping.json``); errors name the file."""
    try:
        return ExportMapping.model_validate_json(read_location(path, endpoint_url))
    except (FileNotFoundError, StorageError):
        raise LabelStudioError(
            f"{path}: not found (the folder of `mentoring annotate export-labelstudio`)"
        ) from None
    except ValidationError as exc:
        lines = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:10]]
        raise LabelStudioError(f"{path}: invalid mapping:\n  " + "\n  ".join(lines)) from None


# -- export ------------------------------------------------------------------------------------


@dataclass
class LabelStudioExport:
    """What the export writes: the tasks, the labeling config and the mapping.

    Attributes:
        tasks: Label Studio tasks (``data`` and ``predictions``), one per mined image.
        config: the labeling config XML.
        mapping: region ids and image mappings for the import.
        notes: images shown from their stored copy, and why.
    """

    tasks: list[dict[str, Any]]
    config: str
    mapping: ExportMapping
    notes: list[str] = field(default_factory=list)


def _png_data_uri(array: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class SourceReader:
    """Reads originals by URI (local path or ``s3://``), one store per folder, reused."""

    def __init__(self, endpoint_url: str | None = None) -> None:
        self.endpoint_url = endpoint_url
        self._stores: dict[str, LocalStore | S3Store] = {}

    def __call__(self, uri: str) -> bytes:
        folder, _, name = uri.rpartition("/")
        folder = folder or "."
        if folder not in self._stores:
            self._stores[folder] = open_store(folder, endpoint_url=self.endpoint_url)
        return self._stores[folder].read_bytes(name)


def _original(
    im: TaskImage, row: dict[str, Any], read_source: Callable[[str], bytes]
) -> tuple[np.ndarray | None, str]:
    """The original image as ingestion decoded it, or None and why it cannot be shown."""
    uri = im.source_uri or str(row["source_uri"])
    if not uri:
        return None, ""
    try:
        data = read_source(uri)
    except (StorageError, OSError) as exc:
        return None, f"{im.image_id}: original {uri} unreadable ({exc}); the stored image is shown"
    if row["source_sha256"] and sha256_bytes(data) != row["source_sha256"]:
        return None, f"{im.image_id}: original {uri} changed since ingestion; stored image shown"
    try:
        array = decode_image(data, uri, int(row["channels"]))
    except BadFile as exc:
        return None, f"{im.image_id}: original {uri} unreadable ({exc.reason}); stored image shown"
    size = (int(row["orig_width"]), int(row["orig_height"]))
    if (array.shape[1], array.shape[0]) != size:
        got = f"{array.shape[1]} x {array.shape[0]}"
        return None, (
            f"{im.image_id}: original {uri} is {got}, ingested as {size[0]} x {size[1]}; "
            f"the stored image is shown"
        )
    return array, ""


def _percent(box: Sequence[float], width: int, height: int) -> dict[str, float]:
    x0, y0, x1, y1 = box
    return {
        "x": 100.0 * x0 / width,
        "y": 100.0 * y0 / height,
        "width": 100.0 * (x1 - x0) / width,
        "height": 100.0 * (y1 - y0) / height,
        "rotation": 0,
    }


def export_tasks(
    tasks: MiningTasks,
    manifest: pd.DataFrame,
    root: Path,
    tasks_sha256: str,
    read_source: Callable[[str], bytes] | None = None,
) -> LabelStudioExport:
    """Build the Label Studio tasks, config and mapping of mining tasks.

    Args:
        tasks: the mining tasks.
        manifest: the line's manifest (:func:`mentoring.data.manifest.read_manifest`); gives each
            image's stored size, channels and mapping.
        root: the data root the manifest's paths are relative to.
        tasks_sha256: sha256 of the tasks file (the feedback file will name it).
        read_source: reads an original by URI (default: :class:`SourceReader`).

    Raises:
        LabelStudioError: a mined image the manifest does not have, or whose original size
            differs from the manifest's.
    """
    read_source = read_source or SourceReader()
    rows: dict[str, dict[str, Any]] = {
        str(r["image_id"]): {str(k): v for k, v in r.items()}
        for r in manifest.to_dict(orient="records")
    }
    missing = [im.image_id for im in tasks.images if im.image_id not in rows]
    if missing:
        raise LabelStudioError(
            f"{len(missing)} mined image(s) are not in the manifest: {missing[:10]} "
            f"(tasks and manifest of different lines?)"
        )
    model_version = f"{tasks.model.name}@{tasks.model.sha256[:12]}"
    out: list[dict[str, Any]] = []
    images: dict[str, ImageRef] = {}
    notes: list[str] = []
    for im in tasks.images:
        row = rows[im.image_id]
        stored = (int(row["width"]), int(row["height"]))
        mapping = Mapping.from_json(str(row["mapping"]), *stored)
        orig = im.orig_size or (mapping.orig_width, mapping.orig_height)
        if orig != (mapping.orig_width, mapping.orig_height):
            raise LabelStudioError(
                f"image {im.image_id!r}: the tasks say original size {orig}, the manifest "
                f"{(mapping.orig_width, mapping.orig_height)} (tasks and manifest disagree)"
            )
        array, why = _original(im, row, read_source)
        if why:
            notes.append(why)
        if array is not None:
            shown: Literal["original", "stored"] = "original"
            size = orig
        else:
            shown, size = "stored", stored
            path = str(row["path"])
            array = decode_image((root / path).read_bytes(), path, int(row["channels"]))
        result, regions = [], {}
        for a in im.areas:
            if shown == "original":
                box = a.orig_bbox or mapping.to_original(a.bbox)
            else:
                box = a.bbox
            rid = region_id(im.image_id, a.area_id)
            regions[rid] = RegionRef(area_id=a.area_id, cls=a.cls)
            result.append(
                {
                    "id": rid,
                    "type": "rectanglelabels",
                    "from_name": LABEL,
                    "to_name": IMAGE,
                    "original_width": size[0],
                    "original_height": size[1],
                    "image_rotation": 0,
                    "value": {**_percent(box, *size), "rectanglelabels": [a.cls]},
                    "score": a.score,
                }
            )
        images[im.image_id] = ImageRef(
            shown=shown,
            shown_size=size,
            stored_size=stored,
            mapping=asdict(mapping),
            source_uri=(im.source_uri or str(row["source_uri"])) if shown == "original" else "",
            regions=regions,
        )
        out.append(
            {
                "data": {"image": _png_data_uri(array), "image_id": im.image_id},
                "predictions": [
                    {"model_version": model_version, "score": im.score, "result": result}
                ],
            }
        )
    mapping_file = ExportMapping(
        tasks_sha256=tasks_sha256,
        model_version=model_version,
        classes=list(tasks.classes),
        images=images,
    )
    return LabelStudioExport(out, labeling_config(tasks.classes), mapping_file, notes)


def write_export(
    export: LabelStudioExport, out_dir: Path, s3_prefix: str = "", endpoint_url: str | None = None
) -> list[str]:
    """Write ``tasks.json``, ``config.xml`` and ``mapping.json`` to ``out_dir`` (atomically),
    and with ``s3_prefix`` also upload them there (the tasks under ``tasks/``, the prefix a
    Label Studio S3 import storage reads). Returns every location written.

    Raises:
        LabelStudioError: ``s3_prefix`` is no ``s3://`` URI, or an upload failed (naming it).
    """
    if s3_prefix and not is_s3(s3_prefix):
        raise LabelStudioError(f"--s3-prefix {s3_prefix!r} must be an s3://bucket/prefix URI")
    mapping = export.mapping.model_dump(mode="json", by_alias=True)
    write_json(out_dir / TASKS_FILE, export.tasks)
    write_bytes(out_dir / CONFIG_FILE, export.config.encode())
    write_json(out_dir / MAPPING_FILE, mapping)
    written = [str(out_dir / n) for n in (TASKS_FILE, CONFIG_FILE, MAPPING_FILE)]
    if s3_prefix:
        try:
            store = open_store(s3_prefix, endpoint_url=endpoint_url)
            store.write_json(S3_TASKS_KEY, export.tasks)
            store.write_bytes(CONFIG_FILE, export.config.encode())
            store.write_json(MAPPING_FILE, mapping)
        except StorageError as exc:
            raise LabelStudioError(f"upload to {s3_prefix} failed: {exc}") from exc
        written += [store.uri(k) for k in (S3_TASKS_KEY, CONFIG_FILE, MAPPING_FILE)]
    return written


# -- import ------------------------------------------------------------------------------------


class _Loose(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class LSResult(_Loose):
    id: str = ""  # image-level choices may come without one
    type: str
    from_name: str
    to_name: str = IMAGE
    value: dict[str, Any]
    original_width: int | None = None
    original_height: int | None = None


class LSAnnotation(_Loose):
    id: int
    completed_by: int | dict[str, Any] | None = None
    result: list[LSResult] = Field(default_factory=list)
    was_cancelled: bool = False
    created_at: datetime
    updated_at: datetime | None = None
    parent_prediction: int | None = None
    prediction: dict[str, Any] | None = None  # the prediction shown when it was made


class LSTask(_Loose):
    id: int
    data: dict[str, Any]
    annotations: list[LSAnnotation] = Field(default_factory=list)


@dataclass
class ImportSummary:
    """What the import did: counts, and what it reported without importing."""

    n_tasks: int = 0
    n_items: int = 0
    n_unannotated: int = 0  # tasks with no annotation: no item
    n_not_in_export: int = 0  # exported images with no task in the export (not annotated yet)
    n_skipped: int = 0  # tasks whose annotations were all skipped (cancelled): no item
    n_confirmed: int = 0
    n_corrected: int = 0
    n_rejected: int = 0
    n_drawn: int = 0
    n_healthy_images: int = 0
    n_without_prediction: int = 0  # annotations drawn from scratch: predicted areas unanswered
    reported: list[str] = field(default_factory=list)  # not imported, and why

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def read_export(path: str | Path) -> list[LSTask]:
    """Read a Label Studio JSON export (``exportType=JSON``); errors name the file and task."""
    path = Path(path)
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise LabelStudioError(f"{path}: not found") from None
    except json.JSONDecodeError as exc:
        raise LabelStudioError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    return parse_export(data, path.name)


def parse_export(data: Any, source: str = "export") -> list[LSTask]:
    """Validate a parsed Label Studio JSON export: a list of tasks."""
    if not isinstance(data, list):
        raise LabelStudioError(
            f"{source}: a Label Studio JSON export is a list of tasks, got {type(data).__name__} "
            f"(export with exportType=JSON)"
        )
    tasks = []
    for i, item in enumerate(data):
        try:
            tasks.append(LSTask.model_validate(item))
        except ValidationError as exc:
            tid = item.get("id", "?") if isinstance(item, dict) else "?"
            lines = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5]]
            raise LabelStudioError(
                f"{source}: task #{i} (id {tid}) is not a Label Studio task:\n  "
                + "\n  ".join(lines)
            ) from None
    return tasks


def _operator(completed_by: int | dict[str, Any] | None) -> str:
    if isinstance(completed_by, dict):
        email = completed_by.get("email")
        return str(email) if email else f"labelstudio:{completed_by.get('id', '?')}"
    return f"labelstudio:{completed_by}" if completed_by is not None else "labelstudio:unknown"


def _latest(annotations: list[LSAnnotation]) -> LSAnnotation | None:
    done = [a for a in annotations if not a.was_cancelled]
    if not done:
        return None
    return max(done, key=lambda a: (a.updated_at or a.created_at, a.id))


def _box_pixels(value: dict[str, Any], width: int, height: int) -> tuple[float, ...]:
    """A region's value (percent, rotated about its top-left corner) -> its axis-aligned box in
    the shown image's pixels."""
    x, y = value["x"] / 100 * width, value["y"] / 100 * height
    w, h = value["width"] / 100 * width, value["height"] / 100 * height
    theta = math.radians(float(value.get("rotation", 0) or 0))
    c, s = math.cos(theta), math.sin(theta)
    corners = [(x + u * c - v * s, y + u * s + v * c) for u, v in ((0, 0), (w, 0), (0, h), (w, h))]
    xs, ys = [p[0] for p in corners], [p[1] for p in corners]
    return min(xs), min(ys), max(xs), max(ys)


def _stored_box(
    value: dict[str, Any], ref: ImageRef
) -> tuple[tuple[int, int, int, int], tuple[float, ...]]:
    """A region's value -> (its box in stored pixels, clipped, maybe empty; its shown box)."""
    shown = _box_pixels(value, *ref.shown_size)
    sw, sh = ref.stored_size
    if ref.shown == "original":
        x0, y0, x1, y1 = ref.to_mapping().from_original(
            (shown[0], shown[1], shown[2], shown[3]), max(sw, sh)
        )
    else:
        x0, y0, x1, y1 = (round(v) for v in shown)
    x0, x1 = (min(max(v, 0), sw) for v in (x0, x1))
    y0, y1 = (min(max(v, 0), sh) for v in (y0, y1))
    return (x0, y0, x1, y1), shown


def _single(values: Any, what: str, where: str, bad: list[str]) -> str | None:
    if not isinstance(values, list) or len(values) != 1:
        bad.append(f"{where}: expected one {what}, got {values!r}")
        return None
    return str(values[0])


def _item(
    ann: LSAnnotation,
    image_id: str,
    ref: ImageRef,
    mapping: ExportMapping,
    where: str,
    bad: list[str],
    summary: ImportSummary,
) -> ImageFeedback | None:
    """The feedback item of one annotation (None when it has errors, listed in ``bad``)."""
    n_bad = len(bad)
    labels: dict[str, tuple[str, LSResult]] = {}  # region id -> (its label, its result)
    verdicts: dict[str, str] = {}
    healthy: bool | None = None
    for r in ann.result:
        at = f"{where}, region {r.id!r}"
        if r.from_name == LABEL and r.type == "rectanglelabels":
            label = _single(r.value.get("rectanglelabels"), "label", at, bad)
            if label is not None and label not in mapping.classes:
                bad.append(f"{at}: label {label!r} is not a class ({', '.join(mapping.classes)})")
            elif label is not None:
                labels[r.id] = (label, r)
        elif r.from_name == VERDICT and r.type == "choices":
            choice = _single(r.value.get("choices"), "verdict", at, bad)
            if choice is not None:
                verdicts[r.id] = choice
        elif r.from_name == IMAGE_VERDICT and r.type == "choices":
            if HEALTHY_IMAGE in (r.value.get("choices") or []):
                healthy = True
        else:
            bad.append(
                f"{at}: unknown control {r.from_name!r} ({r.type}); the project's config must be "
                f"the exported config.xml"
            )
    for rid in sorted({*labels, *verdicts}):
        if _REGION_ID.match(rid) and rid not in ref.regions:
            bad.append(f"{where}: unknown region id {rid!r} (not a detected area of this image)")
    # the prediction shown when the annotation was made, when it is ours (Label Studio embeds
    # the task's prediction of the project's model version, maybe another round's)
    shown_prediction = ann.prediction or {}
    ours = shown_prediction.get("model_version") == mapping.model_version
    embedded = (shown_prediction.get("result") or []) if ours else []
    for r in embedded:
        rid = str(r.get("id", "")) if isinstance(r, dict) else ""
        if rid not in ref.regions:
            bad.append(f"{where}: its prediction has unknown region id {rid!r}")
    for rid, verdict in verdicts.items():
        if verdict not in (DEFECT, HEALTHY):
            bad.append(f"{where}, region {rid!r}: unknown verdict {verdict!r}")
    if len(bad) > n_bad:
        return None
    areas: list[AreaVerdict] = []
    drawn: list[DrawnArea] = []
    for rid, (label, r) in sorted(labels.items()):
        rejected = verdicts.get(rid) == HEALTHY
        if rid in ref.regions:
            detected = ref.regions[rid]
            if rejected:
                areas.append(AreaVerdict(area_id=detected.area_id, verdict="healthy"))
                summary.n_rejected += 1
                continue
            corrected = label if label != detected.cls else None
            areas.append(
                AreaVerdict(area_id=detected.area_id, verdict="defect", corrected_class=corrected)
            )
            summary.n_confirmed += 1
            summary.n_corrected += corrected is not None
            continue
        if rejected:
            summary.reported.append(
                f"{where}, region {rid!r}: a drawn region marked healthy is ignored "
                f"(a drawn area states a defect)"
            )
            continue
        box, shown = _stored_box(r.value, ref)
        if box[0] >= box[2] or box[1] >= box[3]:
            px = ", ".join(f"{v:.0f}" for v in shown)
            summary.reported.append(
                f"{where}, region {rid!r}: box [{px}] of the {ref.shown} image is empty in "
                f"this image's stored pixels (outside this tile?); not imported"
            )
            continue
        drawn.append(DrawnArea(area_id=DRAWN_PREFIX + rid, cls=label, bbox=box))
        summary.n_drawn += 1
    # predicted regions the annotation dropped: rejected, if it started from the prediction
    from_prediction = (
        ann.parent_prediction is not None
        or bool(embedded)
        or any(rid in ref.regions for rid in labels)
    )
    if from_prediction:
        shown_ids = {str(r["id"]) for r in embedded} if embedded else set(ref.regions)
        for rid in sorted(shown_ids - set(labels)):
            areas.append(AreaVerdict(area_id=ref.regions[rid].area_id, verdict="healthy"))
            summary.n_rejected += 1
    elif ref.regions:
        summary.n_without_prediction += 1
    summary.n_healthy_images += bool(healthy)
    return ImageFeedback(
        image_id=image_id,
        operator=_operator(ann.completed_by),
        timestamp=ann.updated_at or ann.created_at,
        healthy=healthy,
        areas=sorted(areas, key=lambda a: a.area_id),
        drawn=sorted(drawn, key=lambda d: d.area_id),
    )


def import_annotations(
    tasks: list[LSTask], mapping: ExportMapping, source: str = "export"
) -> tuple[FeedbackFile, ImportSummary]:
    """Turn a Label Studio export's latest annotations into a feedback file.

    Args:
        tasks: the export's tasks (:func:`read_export`).
        mapping: the ``mapping.json`` of the export the tasks were imported from.
        source: the export's name, for the errors.

    Raises:
        LabelStudioError: listing every unknown image id, unknown region id, label that is no
            class, and result of an unknown control, with the task id.
    """
    summary = ImportSummary(n_tasks=len(tasks))
    bad: list[str] = []
    items: list[ImageFeedback] = []
    for task in tasks:
        image_id = str(task.data.get("image_id", ""))
        where = f"{source}: task {task.id} (image {image_id!r})"
        ref = mapping.images.get(image_id)
        if ref is None:
            bad.append(f"{where}: unknown image id {image_id!r} (not in the export's mapping)")
            continue
        ann = _latest(task.annotations)
        if ann is None:
            if task.annotations:
                summary.n_skipped += 1
            else:
                summary.n_unannotated += 1
            continue
        item = _item(ann, image_id, ref, mapping, f"{where}, annotation {ann.id}", bad, summary)
        if item is not None:
            items.append(item)
    if bad:
        raise LabelStudioError(
            f"{len(bad)} problem(s) in the Label Studio export:\n  " + "\n  ".join(bad)
        )
    items.sort(key=lambda it: (it.image_id, it.timestamp))
    summary.n_items = len(items)
    in_export = {str(t.data.get("image_id", "")) for t in tasks}
    summary.n_not_in_export = len(set(mapping.images) - in_export)
    return FeedbackFile(tasks_sha256=mapping.tasks_sha256, items=items), summary


def write_feedback(
    feedback: FeedbackFile, path: str | Path, endpoint_url: str | None = None
) -> str:
    """Write the feedback file (canonical JSON, atomically) to a path or an ``s3://`` URI (a
    round's ``feedback/``); where it went."""
    return write_location(path, dump(feedback).encode(), endpoint_url)
