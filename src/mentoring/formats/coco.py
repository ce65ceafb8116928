"""COCO instance segmentation: import a data set into the ingest layout, export the line back.

**Import** (:func:`import_coco`): an annotation JSON (``images``, ``annotations``,
``categories``) and its image folder become ``<out>/<domain>/<split>/images/<name><suffix>`` (the
bytes as they are) and ``masks/<name>.png``, a class-index mask at the image's resolution (see
:mod:`.mvtec` for the layout and ``classes.json``). Per image, every annotation is rasterised with
``pycocotools.mask``: polygons, RLE (compressed ``counts`` strings and uncompressed ``counts``
lists) and, for an annotation whose segmentation is empty, its ``bbox`` as a box. Annotations are
painted **in the file's order: where instances overlap, the later annotation wins** (crowd
regions, ``iscrowd: 1``, are painted like any other). Category names become classes; an image
without annotations is defect-free (all-zero mask). ``<name>`` is the ``file_name`` without its
suffix, folders joined by ``-``.

**Export** (:func:`export_coco`) writes a COCO data set of a manifest's ground truth and, from a
mining ``tasks.json``, a COCO results list of its detections (operator verdicts from feedback
files in their ``attributes``). Everything is in the **original image's pixels** (the camera
image, before ``line.resize``):

- one COCO image per original image, ids 1..N in the order of the manifest's sorted image ids.
  ``file_name`` is the row's ``source_uri`` (ingested) or ``path`` (relative to the data root);
  ``mentoring_image_ids`` lists the manifest rows it covers: one row, or with ``line.resize:
  tile`` every tile of the image (grouped by ``source_uri``);
- ground truth: the stored mask is **resampled to the original pixels** through the row's
  :class:`~mentoring.data.images.Mapping` (nearest neighbour; tiles pasted at their offsets), then
  every connected component (8-connected) of each class is one instance: ``segmentation``
  (compressed RLE of that resolution), ``bbox`` ``[x, y, w, h]`` and ``area`` of that segmentation,
  so boxes and masks agree exactly. ``category_id`` k is the k-th class (= the mask value);
- detections: one result per mined area, ``bbox`` from ``orig_bbox`` (else ``bbox`` through the
  row's Mapping), ``score``, ``segmentation`` = the area's cells, each cell's box mapped to original
  pixels; ``attributes``: ``area_id``, ``mentoring_image_id`` and, with feedback, ``verdict``
  (``defect``/``healthy``, or ``null`` when no operator saw it), ``corrected_class``,
  ``operator``, ``timestamp`` (the newest record of the area wins, as in
  :mod:`mentoring.feedback.partial`; an image flagged healthy makes its unjudged areas
  ``healthy`` with ``image_healthy: true``).

Example:
    >>> import_coco(Path("ann.json"), Path("images"), Path("data/ingest"), "new", "pool")
    >>> export_coco(Path("data/manifests/line.parquet"), classes, Path("gt.json"),
    ...             tasks=Path("data/mining/tasks.json"))
"""

import json
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any, TypeGuard

import numpy as np
import pandas as pd
import pycocotools.mask as mask_utils
from scipy import ndimage

from mentoring.data.images import BadFile, Mapping, decode_mask
from mentoring.data.manifest import data_root, read_manifest
from mentoring.feedback.schema import MiningTasks, read_feedback, read_tasks
from mentoring.formats.mvtec import (
    FormatError,
    ImportResult,
    Progress,
    Skipped,
    SplitCount,
    check_domain_split,
    clear_or_refuse,
    image_size,
    merge_classes,
    read_classes,
    write_pair,
)
from mentoring.io import sha256_file, write_json

# --- import ---------------------------------------------------------------------------------------


def _load(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FormatError(f"{path}: COCO annotation file not found") from None
    except json.JSONDecodeError as exc:
        raise FormatError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(data, dict):
        raise FormatError(f"{path}: expected a COCO object with images, annotations, categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise FormatError(f"{path}: no {key!r} list (a COCO instance-segmentation file)")
    return data


def _field(obj: dict[str, Any], key: str, kind: type, where: str) -> Any:
    value = obj.get(key) if isinstance(obj, dict) else None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise FormatError(f"{where}: {key!r} missing or not {kind.__name__} ({value!r})")
    return value


def _numbers(values: Any) -> TypeGuard[list[float]]:
    return isinstance(values, list) and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in values
    )


def annotation_shape(ann: dict[str, Any], h: int, w: int, notes: list[str]) -> dict[str, Any]:
    """Check one annotation's geometry against its (h, w) image; return it in pycocotools'
    terms: an RLE (polygons and uncompressed RLE converted), or ``{"bbox": [x, y, w, h]}``.

    Raises:
        FormatError: naming the annotation id (an RLE of another size, no segmentation nor
            bbox, a malformed segmentation).
    """
    aid = ann.get("id")
    seg = ann.get("segmentation")
    if isinstance(seg, list) and seg:
        polys = [p for p in seg if _numbers(p) and len(p) >= 6 and len(p) % 2 == 0]
        if len(polys) < len(seg):
            notes.append(
                f"annotation {aid}: {len(seg) - len(polys)} polygon(s) with fewer than 3 points "
                "or non-numeric coordinates ignored"
                + ("" if polys else "; its bbox is used instead")
            )
        if polys:
            return dict(mask_utils.merge(mask_utils.frPyObjects(polys, h, w)))
        seg = None
    if isinstance(seg, dict) and seg:
        size, counts = seg.get("size"), seg.get("counts")
        if not _numbers(size) or [int(v) for v in size] != [h, w]:
            raise FormatError(f"annotation {aid}: RLE size {size}, its image is [h, w] = {[h, w]}")
        if _numbers(counts):  # uncompressed RLE -> compressed
            return dict(mask_utils.frPyObjects({"size": [h, w], "counts": counts}, h, w))
        if isinstance(counts, str) and counts:
            return {"size": [h, w], "counts": counts.encode("ascii", "replace")}
        raise FormatError(f"annotation {aid}: RLE counts must be a string or a list of integers")
    if seg not in (None, [], {}):
        raise FormatError(f"annotation {aid}: segmentation is neither polygons nor RLE: {seg!r}")
    bbox = ann.get("bbox")
    if not _numbers(bbox) or len(bbox) != 4:
        raise FormatError(f"annotation {aid}: no segmentation and no [x, y, w, h] bbox")
    return {"bbox": [float(v) for v in bbox]}


def _decode(rle: dict[str, Any]) -> np.ndarray:
    with warnings.catch_warnings():
        # pycocotools' Cython RLE object predates numpy 2's copy keyword: harmless, said per call
        warnings.filterwarnings("ignore", "__array__ implementation", DeprecationWarning)
        return np.asarray(mask_utils.decode(rle))


def annotation_mask(shape: dict[str, Any], h: int, w: int, aid: object = None) -> np.ndarray:
    """The (h, w) uint8 0/1 mask of an :func:`annotation_shape` (a bbox: the pixels
    ``[x, x + w) x [y, y + h)``, pycocotools' box rasterisation)."""
    if "bbox" in shape:
        box = np.array([shape["bbox"]], dtype=np.float64)
        return _decode(mask_utils.frPyObjects(box, h, w)[0])
    try:
        mask = _decode(shape)
    except (ValueError, TypeError) as exc:
        raise FormatError(f"annotation {aid}: cannot decode its RLE ({exc})") from None
    if mask.shape != (h, w):
        raise FormatError(f"annotation {aid}: its RLE decodes to {mask.shape}, not {(h, w)}")
    return mask


def _output_name(file_name: str) -> str:
    parts = [p for p in PurePosixPath(file_name).with_suffix("").parts if p not in ("/", "..", ".")]
    return "-".join(parts)


def import_coco(
    ann_file: Path,
    images_dir: Path,
    out: Path,
    domain: str,
    split: str,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> ImportResult:
    """Import a COCO instance-segmentation file into ``out/<domain>/<split>/``.

    Raises:
        FormatError: the file is not COCO; an annotation names an unknown image or category id
            (every such annotation id is listed); two images would get the same name; an
            earlier import is in the way (without ``overwrite``).
    """
    ann_file, images_dir, out = Path(ann_file), Path(images_dir), Path(out)
    check_domain_split(domain, split)
    if not images_dir.is_dir():
        raise FormatError(f"{images_dir}: image folder not found")
    data = _load(ann_file)
    # 1) categories and images, each id once
    categories: dict[int, str] = {}
    for i, cat in enumerate(data["categories"]):
        cid = _field(cat, "id", int, f"{ann_file}: categories[{i}]")
        name = _field(cat, "name", str, f"{ann_file}: category {cid}")
        if cid in categories:
            raise FormatError(f"{ann_file}: category id {cid} appears twice")
        categories[cid] = name
    images: dict[int, dict[str, Any]] = {}
    names: dict[str, int] = {}
    for i, img in enumerate(data["images"]):
        iid = _field(img, "id", int, f"{ann_file}: images[{i}]")
        where = f"{ann_file}: image {iid}"
        file_name = _field(img, "file_name", str, where)
        w, h = _field(img, "width", int, where), _field(img, "height", int, where)
        if iid in images:
            raise FormatError(f"{ann_file}: image id {iid} appears twice")
        if w <= 0 or h <= 0:
            raise FormatError(f"{where}: size {w}x{h}")
        name = _output_name(file_name)
        if name in names:
            raise FormatError(
                f"{ann_file}: images {names[name]} and {iid} would both be named {name!r}"
            )
        names[name] = iid
        images[iid] = {"file_name": file_name, "width": w, "height": h, "name": name}
    # 2) annotations per image, in file order; unknown ids are errors naming the annotation
    per_image: dict[int, list[tuple[int, int, dict[str, Any]]]] = {iid: [] for iid in images}
    bad: list[str] = []
    notes: list[str] = []  # the import's warnings
    for i, ann in enumerate(data["annotations"]):
        aid = _field(ann, "id", int, f"{ann_file}: annotations[{i}]")
        iid, cid = ann.get("image_id"), ann.get("category_id")
        if iid not in images:
            bad.append(f"annotation {aid}: unknown image_id {iid!r}")
        elif cid not in categories:
            bad.append(f"annotation {aid}: unknown category_id {cid!r}")
        else:
            img = images[iid]
            try:
                shape = annotation_shape(ann, img["height"], img["width"], notes)
            except FormatError as exc:
                bad.append(str(exc))
                continue
            per_image[iid].append((aid, cid, shape))
    if bad:
        more = f"\n  ... {len(bad) - 10} more" if len(bad) > 10 else ""
        raise FormatError(
            f"{ann_file}: {len(bad)} bad annotation(s):\n  " + "\n  ".join(bad[:10]) + more
        )
    # 3) classes (category-id order), then each image and its class-index mask
    read_classes(out)
    clear_or_refuse(out, domain, [split], set(names), overwrite, str(ann_file))
    used = [categories[c] for c in sorted(categories)]
    classes, added = merge_classes(out, used, f"{ann_file}: categories")
    value = {cid: classes.index(name) + 1 for cid, name in categories.items()}
    result = ImportResult(out, domain, classes, added, {split: SplitCount()}, warnings=notes)
    count = result.splits[split]
    order = sorted(images, key=lambda k: images[k]["name"])
    for done, iid in enumerate(order, start=1):
        if progress:
            progress(done, len(order))
        img = images[iid]
        src = images_dir / img["file_name"]
        if not src.is_file():
            result.skipped.append(Skipped(str(src), f"image file not found (image {iid})"))
            continue
        h, w = img["height"], img["width"]
        mask = np.zeros((h, w), np.uint8)
        present: set[str] = set()
        for aid, cid, shape in per_image[iid]:  # the later annotation wins where they overlap
            mask[annotation_mask(shape, h, w, aid).astype(bool)] = value[cid]
            present.add(categories[cid])
        try:
            actual = image_size(src)
        except FormatError as exc:
            result.skipped.append(Skipped(str(src), f"{exc} (image {iid})"))
            continue
        if actual != (w, h):
            result.warnings.append(
                f"{src}: the file is {actual[0]}x{actual[1]}, image {iid} says {w}x{h} "
                "(mask made at the JSON's size; ingestion will quarantine the pair)"
            )
        write_pair(out, domain, split, img["name"], src, mask)
        count.images += 1
        if not mask.any():
            count.healthy += 1
        for name in sorted(present):
            if (mask == classes.index(name) + 1).any():
                count.classes[name] += 1
    return result


# --- export ---------------------------------------------------------------------------------------


def _json_rle(rle: dict[str, Any]) -> dict[str, Any]:
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def rle_of(binary: np.ndarray) -> dict[str, Any]:
    """Compressed RLE of an (H, W) 0/1 mask, JSON-ready (``counts`` as text)."""
    return _json_rle(mask_utils.encode(np.asfortranarray(binary.astype(np.uint8))))


def _shape_fields(binary: np.ndarray) -> dict[str, Any]:
    """``segmentation`` (RLE), ``area`` and ``bbox`` [x, y, w, h] of one 0/1 mask."""
    rle = mask_utils.encode(np.asfortranarray(binary.astype(np.uint8)))
    return {
        "segmentation": _json_rle(rle),
        "area": int(mask_utils.area(rle)),
        "bbox": [float(v) for v in mask_utils.toBbox(rle)],
    }


def paste_to_original(canvas: np.ndarray, stored: np.ndarray, mapping: Mapping) -> None:
    """Write ``stored`` (a piece's mask) into ``canvas`` (the original image's), nearest neighbour.

    Each original pixel takes the value of the stored pixel its centre maps to; pixels the piece
    does not cover (another tile, outside a pad's content) are left as they are.
    """
    h, w = canvas.shape
    sh, sw = stored.shape
    xs = np.floor((np.arange(w) + 0.5 - mapping.offset_x) / mapping.scale_x).astype(np.int64)
    ys = np.floor((np.arange(h) + 0.5 - mapping.offset_y) / mapping.scale_y).astype(np.int64)
    vx, vy = (xs >= 0) & (xs < sw), (ys >= 0) & (ys < sh)
    canvas[np.ix_(vy, vx)] = stored[np.ix_(ys[vy], xs[vx])]


def instances(mask: np.ndarray, n_classes: int) -> list[tuple[int, np.ndarray]]:
    """(class value k, 0/1 mask) of every 8-connected component of each class of ``mask``."""
    found = []
    eight = np.ones((3, 3), bool)
    for k in range(1, n_classes + 1):
        labels, _ = ndimage.label(mask == k, structure=eight)
        for i, box in enumerate(ndimage.find_objects(labels), start=1):
            if box is None:
                continue
            binary = np.zeros(mask.shape, np.uint8)
            binary[box] = labels[box] == i
            found.append((k, binary))
    return found


@dataclass
class _CocoImage:
    coco_id: int
    rows: list[dict[str, Any]]
    mappings: list[Mapping]

    @property
    def size(self) -> tuple[int, int]:
        return self.mappings[0].orig_width, self.mappings[0].orig_height


@dataclass
class ExportResult:
    """What an export wrote: counts per class, verdicts, the files."""

    out: Path
    detections_out: Path | None
    n_images: int
    annotations: Counter[str] = field(default_factory=Counter)
    detections: Counter[str] = field(default_factory=Counter)
    verdicts: Counter[str] = field(default_factory=Counter)
    warnings: list[str] = field(default_factory=list)


def _mapping(row: dict[str, Any]) -> Mapping:
    m = Mapping.from_json(str(row["mapping"]), int(row["width"]), int(row["height"]))
    if not row["mapping"]:  # identity: the original is the stored image
        m = Mapping("identity", int(row["orig_width"]), int(row["orig_height"]))
    return m


def _group(df: pd.DataFrame) -> list[_CocoImage]:
    """One COCO image per original image: a row, or all tiles of one source (sorted ids)."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    records: list[dict[str, Any]] = [
        {str(k): v for k, v in r.items()} for r in df.sort_values("image_id").to_dict("records")
    ]
    for row in records:
        m = _mapping(row)
        if m.policy == "tile" and row["source_uri"]:
            key: tuple[str, ...] = ("tile", row["domain"], row["split"], row["source_uri"])
        else:
            key = ("row", row["image_id"])
        groups.setdefault(key, []).append(row)
    ordered = sorted(groups.values(), key=lambda rows: rows[0]["image_id"])
    return [_CocoImage(i, rows, [_mapping(r) for r in rows]) for i, rows in enumerate(ordered, 1)]


def _gt_mask(img: _CocoImage, root: Path, n_classes: int, manifest: Path) -> np.ndarray | None:
    """The class-index mask in original pixels; None when no row of the image has a mask."""
    w, h = img.size
    canvas = np.zeros((h, w), np.uint8)
    labelled = False
    for row, m in zip(img.rows, img.mappings, strict=True):
        if not row["mask_path"]:
            continue
        path = root / str(row["mask_path"])
        try:
            stored = decode_mask(path.read_bytes(), str(path), n_classes)
        except FileNotFoundError:
            raise FormatError(f"{manifest}: row {row['image_id']}: mask {path} not found") from None
        except BadFile as exc:
            raise FormatError(f"{manifest}: row {row['image_id']}: {exc.reason}") from None
        paste_to_original(canvas, stored, m)
        labelled = True
    return canvas if labelled else None


def _bbox_xywh(box: Sequence[int]) -> list[float]:
    x0, y0, x1, y1 = box
    return [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]


def _newer(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    """Record ``a`` (timestamp first) newer than ``b``? A tie is broken by the other fields'
    text, as :mod:`mentoring.feedback.partial` does, so the winner never depends on file order."""
    if a[0] != b[0]:
        return bool(a[0] > b[0])
    return tuple(str(x) for x in a[1:]) > tuple(str(x) for x in b[1:])


def _verdicts(
    tasks: MiningTasks, paths: Sequence[Path], tasks_sha256: str, notes: list[str]
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """The newest verdict per area and healthy flag per image (the mentor import's rule: the
    newest timestamp wins, ties broken by the record's fields, never by file order)."""
    areas = {a.area_id: im.image_id for im in tasks.images for a in im.areas}
    images = {im.image_id for im in tasks.images}
    area_v: dict[str, tuple[Any, ...]] = {}
    image_h: dict[str, tuple[Any, ...]] = {}
    bad: list[str] = []
    for path in sorted(Path(p) for p in paths):
        fb = read_feedback(path)
        if fb.tasks_sha256 and fb.tasks_sha256 != tasks_sha256:
            notes.append(f"{path}: answers another tasks.json (sha256 {fb.tasks_sha256[:12]}...)")
        for item in fb.items:
            if item.image_id not in images:
                bad.append(f"{path}: unknown image {item.image_id!r}")
                continue
            for av in item.areas:
                if areas.get(av.area_id) != item.image_id:
                    bad.append(f"{path}: unknown area {av.area_id!r} of image {item.image_id!r}")
                    continue
                if av.corrected_class is not None and av.corrected_class not in tasks.classes:
                    bad.append(f"{path}: area {av.area_id!r}: unknown class {av.corrected_class!r}")
                    continue
                rec = (item.timestamp, av.verdict, av.corrected_class, item.operator)
                if av.area_id not in area_v or _newer(rec, area_v[av.area_id]):
                    area_v[av.area_id] = rec
            if item.healthy is not None:
                rec_h = (item.timestamp, item.healthy, item.operator)
                if item.image_id not in image_h or _newer(rec_h, image_h[item.image_id]):
                    image_h[item.image_id] = rec_h
    if bad:
        more = f"\n  ... {len(bad) - 10} more" if len(bad) > 10 else ""
        raise FormatError(
            f"{len(bad)} feedback record(s) reference unknown ids:\n  "
            + "\n  ".join(bad[:10])
            + more
        )

    def when(t: datetime) -> str:
        return t.isoformat().replace("+00:00", "Z")

    by_area = {
        a: {
            "verdict": v,
            "corrected_class": c,
            "operator": op,
            "timestamp": when(t),
        }
        for a, (t, v, c, op) in area_v.items()
    }
    by_image = {
        i: {"healthy": hl, "operator": op, "timestamp": when(t)}
        for i, (t, hl, op) in image_h.items()
    }
    return by_area, by_image


def export_coco(
    manifest: Path,
    classes: Sequence[str],
    out: Path,
    tasks: Path | None = None,
    feedback: Sequence[Path] = (),
    detections_out: Path | None = None,
    domain: str | None = None,
    split: str | None = None,
    progress: Progress | None = None,
) -> ExportResult:
    """Write the ground truth of ``manifest`` as a COCO data set (``out``) and, with ``tasks``,
    its detections as a COCO results list (``detections_out``, default
    ``<out stem>.detections.json``), with the verdicts of ``feedback`` files.

    ``classes`` are the line's classes (``line.classes``): mask value k is ``classes[k-1]`` and
    COCO category k. ``domain``/``split`` keep only those rows.

    Raises:
        FormatError: a mask is missing or has values beyond ``classes``; a task names an image
            not exported or a class not in ``classes``; feedback names unknown images/areas;
            ``feedback`` without ``tasks``.
    """
    manifest, out = Path(manifest), Path(out)
    classes = list(classes)
    if feedback and tasks is None:
        raise FormatError("--feedback needs --tasks: verdicts are attached to the mined areas")
    df = read_manifest(manifest, check_files=False)
    if domain is not None:
        df = df[df["domain"] == domain]
    if split is not None:
        df = df[df["split"] == split]
    if df.empty:
        raise FormatError(f"{manifest}: no row of domain {domain!r}, split {split!r} to export")
    root = data_root(manifest)
    groups = _group(df)
    by_row = {
        r["image_id"]: (g, m) for g in groups for r, m in zip(g.rows, g.mappings, strict=True)
    }
    result = ExportResult(out, None, len(groups))
    task_set = read_tasks(tasks) if tasks is not None else None
    by_area: dict[str, dict[str, Any]] = {}
    by_image: dict[str, dict[str, Any]] = {}
    if task_set is not None:
        assert tasks is not None
        by_area, by_image = _verdicts(task_set, feedback, sha256_file(tasks), result.warnings)
        # every task maps to an exported image and a category, checked before anything is written
        bad = [
            f"image {t.image_id!r} is not among the exported manifest rows "
            f"({manifest}, domain {domain}, split {split})"
            for t in task_set.images
            if t.image_id not in by_row
        ] + [
            f"area {a.area_id!r}: class {a.cls!r} not in {classes}"
            for t in task_set.images
            for a in t.areas
            if a.cls not in classes
        ]
        if bad:
            more = f"\n  ... {len(bad) - 10} more" if len(bad) > 10 else ""
            raise FormatError(f"{tasks}:\n  " + "\n  ".join(bad[:10]) + more)
    # 1) ground truth: one COCO image per original image, instances in original pixels
    coco_images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    steps = len(groups) + (len(task_set.images) if task_set else 0)
    for done, img in enumerate(groups, start=1):
        if progress:
            progress(done, steps)
        w, h = img.size
        first = img.rows[0]
        entry: dict[str, Any] = {
            "id": img.coco_id,
            "file_name": str(first["source_uri"] or first["path"]),
            "width": w,
            "height": h,
            "mentoring_image_ids": [str(r["image_id"]) for r in img.rows],
            "domain": str(first["domain"]),
            "split": str(first["split"]),
        }
        flags = [by_image[r["image_id"]] for r in img.rows if r["image_id"] in by_image]
        if flags:
            entry["operator_healthy"] = flags[-1]["healthy"]
        mask = _gt_mask(img, root, len(classes), manifest)
        entry["labelled"] = mask is not None
        coco_images.append(entry)
        for k, binary in instances(mask, len(classes)) if mask is not None else []:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": img.coco_id,
                    "category_id": k,
                    **_shape_fields(binary),
                    "iscrowd": 0,
                }
            )
            result.annotations[classes[k - 1]] += 1
    dataset = {
        "info": {"description": f"mentoring export of {manifest.name}", "version": "1"},
        "licenses": [],
        "categories": [
            {"id": k, "name": c, "supercategory": "defect"} for k, c in enumerate(classes, 1)
        ],
        "images": coco_images,
        "annotations": annotations,
    }
    write_json(out, dataset)
    if task_set is None:
        return result
    # 2) detections: each mined area in original pixels, with the operator's verdict
    detections = []
    stride = task_set.stride
    for done, t in enumerate(task_set.images, start=len(groups) + 1):
        if progress:
            progress(done, steps)
        img, m = by_row[t.image_id]
        w, h = img.size
        flag = by_image.get(t.image_id)
        for a in t.areas:
            cells = np.zeros((h, w), np.uint8)
            for r, c in a.cells:
                x0, y0, x1, y1 = m.to_original(
                    (c * stride, r * stride, (c + 1) * stride, (r + 1) * stride)
                )
                cells[y0:y1, x0:x1] = 1
            box = a.orig_bbox if a.orig_bbox is not None else m.to_original(a.bbox)
            attributes: dict[str, Any] = {"area_id": a.area_id, "mentoring_image_id": t.image_id}
            if feedback:
                verdict = by_area.get(a.area_id)
                if verdict is None and flag is not None and flag["healthy"]:
                    verdict = {
                        "verdict": "healthy",
                        "corrected_class": None,
                        "operator": flag["operator"],
                        "timestamp": flag["timestamp"],
                        "image_healthy": True,
                    }
                attributes |= verdict or {
                    "verdict": None,
                    "corrected_class": None,
                    "operator": None,
                    "timestamp": None,
                }
                result.verdicts[str(attributes["verdict"] or "none")] += 1
                if attributes["corrected_class"]:
                    result.verdicts["corrected"] += 1
            detections.append(
                {
                    "image_id": img.coco_id,
                    "category_id": classes.index(a.cls) + 1,
                    "bbox": _bbox_xywh(box),
                    "score": float(a.score),
                    "segmentation": rle_of(cells),
                    "attributes": attributes,
                }
            )
            result.detections[a.cls] += 1
    result.detections_out = Path(detections_out or out.with_name(f"{out.stem}.detections.json"))
    write_json(result.detections_out, detections)
    return result
