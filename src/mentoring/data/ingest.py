"""Ingestion: bring images from a store (local folder or S3 prefix) into the data folder.

One engine serves ``mentoring ingest s3://bucket/prefix --domain new --split pool`` (a batch
added to an existing data folder, e.g. the day's images) and the ``line`` stage with
``line.source: folder | s3`` (the four splits of a line). For one (domain, split) the source
prefix holds::

    images/<any/sub/path>/<name>.(png|jpg|jpeg|bmp|tif|tiff)   the camera images, any size
    images/<any/sub/path>/<name>.json                          optional sidecar (part_ref, camera,
                                                               acquired_at, anything else kept)
    masks/<any/sub/path>/<name>.png                            class-index mask (0 healthy,
                                                               k = the k-th of line.classes)

(without an ``images/`` folder, every object outside ``masks/`` is an image candidate).

**What it guarantees**

- *Nothing lost*: every listed object ends in exactly one bucket: ``ingested``, ``quarantined``
  (copied under ``<data>/quarantine/<domain>/<split>/`` with a kind and a reason, listed in
  ``<data>/quarantine/report.json``), ``already_present`` or ``skipped`` (with a reason). The
  reconciliation ``listed == ingested + quarantined + already_present + skipped`` is checked at
  the end of every run; a mismatch is an error.
- *Idempotent*: an object whose source URI and ETag are already in the manifest (or already in
  the quarantine report) is not fetched again; a changed ETag with the same sha256 is
  ``already_present``; new content under an ingested key is skipped with the reason (the first
  version stays: labels may point at it).
- *Resumable*: each finished object is appended to a journal (``<data>/ingest/journal/``);
  a run killed halfway and restarted reuses what the journal holds and ends with exactly the
  manifest of an uninterrupted run, with no duplicate. The journal is removed on success.
- *Fast and bounded*: objects are fetched and decoded by ``concurrency`` threads with at most
  ``2 x concurrency`` in flight (memory does not grow with the number of objects); S3 requests
  retry in botocore's adaptive mode.

Each stored image is fitted to ``line.image_size`` with ``line.resize``
(:func:`mentoring.data.images.fit`); the manifest keeps the source URI, ETag, sha256 of the
original bytes, its size and the pixel mapping. Content seen under two keys is reported.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
import time
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from mentoring.config import Params
from mentoring.data.images import (
    IMAGE_SUFFIXES,
    REFETCHED_KINDS,
    RETRIED_KINDS,
    BadFile,
    decode_image,
    decode_mask,
    encode_png,
    fit,
)
from mentoring.data.manifest import read_manifest, with_optional_columns, write_manifest
from mentoring.io import write_bytes, write_json
from mentoring.storage import LocalStore, ObjectInfo, S3Store, StorageError

#: sidecar keys that get their own manifest column
SIDECAR_COLUMNS = {"part_ref": "part_ref", "part": "part_ref", "camera": "camera"}
SIDECAR_TIME_KEYS = ("acquired_at", "acquisition_time", "timestamp")

INT_COLUMNS = (
    "width",
    "height",
    "channels",
    "n_defects",
    "n_nuisances",
    "orig_width",
    "orig_height",
)
Progress = Callable[[int, int, int], None]  # (objects done, objects listed, bytes fetched)

#: the splits a batch may go to (``mentoring ingest --split``)
KNOWN_SPLITS: tuple[str, ...] = ("pool", "train", "eval")
#: longest stored file name: ``<image id>-r000c000.png`` within the usual 255-byte limit
MAX_NAME_BYTES = 255
#: a fetch that failed is tried again this many times in the same run (after a pause)
REFETCH_PASSES = 2
REFETCH_PAUSE_S = 0.5


class IngestError(ValueError):
    """An ingestion that cannot run or does not reconcile; the message names the source."""


@dataclass(frozen=True)
class Quarantined:
    """A file that could not be used: where it was, the kind (images.QUARANTINE_KINDS), why.

    ``copy``: where its bytes were copied, relative to the data folder ("" when not copied: a
    fetch that failed, a link or FIFO never opened, an unsafe key). ``inputs``: the image's
    pairing when it was judged (its and its mask's and sidecar's keys and ETags): a quarantined
    image is judged again when that changes (a mask uploaded or replaced, a new version).
    ``attempts``: runs that quarantined it (a retried kind counts up until it succeeds).
    """

    file: str
    reason: str
    kind: str = "corrupt"
    etag: str = ""
    copy: str = ""
    inputs: str = ""
    attempts: int = 1

    @property
    def retried(self) -> bool:
        return self.kind in RETRIED_KINDS


@dataclass
class BatchReport:
    """Counts of one (domain, split) ingestion; ``skipped`` maps a reason to its count."""

    source: str
    domain: str
    split: str
    listed: int = 0
    ingested: int = 0
    quarantined: int = 0
    already_present: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    to_retry: int = 0  # quarantined for a cause that can go away (RETRIED_KINDS): tried again
    recovered: int = 0  # objects quarantined by an earlier run and ingested by this one
    images_stored: int = 0  # stored (model-sized) images: more than ingested with tiles
    bytes_fetched: int = 0
    resumed: int = 0  # objects taken from the journal of an interrupted run
    duplicate_content: list[list[str]] = field(default_factory=list)  # keys with equal sha256
    quarantine_kinds: dict[str, int] = field(default_factory=dict)
    retry_kinds: dict[str, int] = field(default_factory=dict)  # what is left to retry, by kind
    seconds: float = 0.0
    resolved: set[str] = field(default_factory=set, repr=False)  # URIs no longer quarantined

    def reconciles(self) -> bool:
        total = (
            self.ingested
            + self.quarantined
            + self.to_retry
            + self.already_present
            + sum(self.skipped.values())
        )
        return total == self.listed

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("resolved")
        d["reconciled"] = self.reconciles()
        d["images_per_s"] = self.listed / self.seconds if self.seconds > 0 else 0.0
        return d


@dataclass(frozen=True)
class _Item:
    """One image to ingest, with its mask and sidecar objects when they exist."""

    image: ObjectInfo
    name: str  # relative path under images/ without suffix
    mask: ObjectInfo | None
    sidecar: ObjectInfo | None


@dataclass
class _Outcome:
    key: str
    etag: str
    bucket: str  # ingested | quarantined | already_present | skipped:<reason>
    objects: int  # how many listed objects this outcome accounts for
    rows: list[dict[str, Any]] = field(default_factory=list)
    quarantine: list[Quarantined] = field(default_factory=list)
    source_sha256: str = ""
    bytes: int = 0


def _suffix(key: str) -> str:
    name = key.rsplit("/", 1)[-1]
    return "." + name.rsplit(".", 1)[-1].lower() if "." in name else ""


def _stem(rel: str) -> str:
    return rel.rsplit(".", 1)[0] if "." in rel.rsplit("/", 1)[-1] else rel


def image_id_of(domain: str, split: str, name: str) -> str:
    """``<domain>-<split>-<name>`` with sub-folders joined by '.' (ids hold no '/')."""
    return f"{domain}-{split}-{name.replace('/', '.')}"


def plan(
    objects: list[ObjectInfo], prefix: str
) -> tuple[list[_Item], list[tuple[ObjectInfo, str, str]], dict[str, int]]:
    """Pair images with masks and sidecars; return (items, orphans to quarantine, skipped).

    ``orphans`` are (object, kind, reason); ``skipped`` maps a reason to a count.
    """
    p = prefix.rstrip("/") + "/" if prefix else ""
    rel = {o.key: o.key[len(p) :] for o in objects}
    has_images_dir = any(r.startswith("images/") for r in rel.values())
    images: dict[str, ObjectInfo] = {}
    sidecars: dict[str, ObjectInfo] = {}
    masks: dict[str, ObjectInfo] = {}
    orphans: list[tuple[ObjectInfo, str, str]] = []
    others: list[ObjectInfo] = []
    skipped: Counter[str] = Counter()
    for obj in objects:
        r = rel[obj.key]
        base = r.rsplit("/", 1)[-1]
        if base.startswith("."):
            skipped["hidden file"] += 1
            continue
        if obj.problem:
            orphans.append((obj, obj.problem_kind, f"{obj.key!r}: {obj.problem}"))
            continue
        if any(unicodedata.category(ch) == "Cc" for ch in obj.key):
            reason = f"{obj.key!r}: control characters in the name (rename it)"
            orphans.append((obj, "bad_name", reason))
            continue
        if r == "classes.json" or (r.startswith("masks/") and _suffix(r) == ".json"):
            skipped["layout metadata"] += 1
            continue
        if r.startswith("masks/"):
            masks[_stem(r[len("masks/") :])] = obj
            continue
        if has_images_dir and not r.startswith("images/"):
            skipped["outside images/ and masks/"] += 1
            continue
        name = r[len("images/") :] if has_images_dir else r
        if _suffix(name) == ".json":
            sidecars[_stem(name)] = obj
            continue
        others.append(obj)
        stem, rank = (
            _stem(name),
            IMAGE_SUFFIXES.index(_suffix(name)) if _suffix(name) in IMAGE_SUFFIXES else -1,
        )
        if rank >= 0:
            # two images with one name (a.png, a.jpg): the first suffix of IMAGE_SUFFIXES is the
            # image (it gets the mask and sidecar); the other is a duplicate id
            held = images.get(stem)
            if held is None or rank < IMAGE_SUFFIXES.index(_suffix(rel[held.key])):
                images[stem] = obj
    items: list[_Item] = []
    rest: list[_Item] = []
    claimed: set[str] = set()
    for obj in others:
        r = rel[obj.key]
        name = r[len("images/") :] if has_images_dir else r
        stem = _stem(name)
        if _suffix(name) not in IMAGE_SUFFIXES or images.get(stem) is not obj:
            # not an image suffix, or a second file with the same name (a.png and a.jpg):
            # decoded by the worker to tell "wrong extension" / "not an image" / "duplicate id"
            rest.append(_Item(obj, stem, None, None))
            continue
        claimed.add(stem)
        items.append(_Item(obj, stem, masks.get(stem), sidecars.get(stem)))
    items += rest  # after the paired images: a name clash quarantines the unpaired file
    for stem, obj in sorted(masks.items()):
        if stem not in claimed:
            orphans.append((obj, "mask_without_image", f"{obj.key}: mask without an image"))
    for stem, obj in sorted(sidecars.items()):
        if stem not in claimed:
            orphans.append(
                (obj, "bad_sidecar", f"{obj.key}: sidecar JSON without an image ({stem}.*)")
            )
    return items, orphans, dict(skipped)


class _Journal:
    """Append-only JSON lines of finished objects; a torn last line (killed) is ignored."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.done: dict[str, dict[str, Any]] = {}
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue
                self.done[entry["key"]] = entry
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "a")  # closed by close()
        self._lock = threading.Lock()

    def add(self, outcome: _Outcome) -> None:
        entry = {
            "key": outcome.key,
            "etag": outcome.etag,
            "bucket": outcome.bucket,
            "objects": outcome.objects,
            "rows": outcome.rows,
            "quarantine": [asdict(q) for q in outcome.quarantine],
            "source_sha256": outcome.source_sha256,
        }
        with self._lock:
            self._file.write(json.dumps(entry, sort_keys=True) + "\n")
            self._file.flush()

    def close(self, remove: bool) -> None:
        self._file.close()
        if remove:
            self.path.unlink(missing_ok=True)


@dataclass(frozen=True)
class _Context:
    store: LocalStore | S3Store
    domain: str
    split: str
    data_dir: Path
    classes: tuple[str, ...]
    channels: int
    size: int
    policy: str
    masks_required: bool
    prefix: str = ""  # keys' common prefix, left out of the quarantine copy's path
    min_side: int = 8  # smaller images are too_small (the model's stride)


def _copy_path(ctx: _Context, key: str) -> str:
    """Where the quarantine copy of ``key`` goes, relative to the data folder: the key's own
    path, or ``_renamed/<sha of the key>-<tail>`` when that path is unusable (control
    characters, '..', an over-long segment)."""
    rel = key[len(ctx.prefix) :].lstrip("/") if key.startswith(ctx.prefix) else key
    parts = rel.split("/")
    plain = all(
        part not in ("", ".", "..")
        and len(part.encode()) <= MAX_NAME_BYTES
        and not any(unicodedata.category(ch) == "Cc" for ch in part)
        for part in parts
    )
    if not plain or len(rel.encode()) > 1024:
        tail = "".join(ch for ch in parts[-1] if unicodedata.category(ch) != "Cc")[-60:]
        rel = f"_renamed/{hashlib.sha256(key.encode()).hexdigest()[:16]}-{tail or 'object'}"
    return (Path("quarantine") / ctx.domain / ctx.split / rel).as_posix()


def _quarantine(
    ctx: _Context,
    key: str,
    data: bytes | None,
    kind: str,
    reason: str,
    etag: str,
    inputs: str = "",
) -> Quarantined:
    copy = ""
    if data is not None:
        copy = _copy_path(ctx, key)
        write_bytes(ctx.data_dir / copy, data)
    return Quarantined(ctx.store.uri(key), reason, kind, etag, copy, inputs)


def _inputs(item: _Item) -> str:
    """The pairing an image was judged with: its, its mask's and its sidecar's keys and ETags."""
    parts = [
        f"{o.key}@{o.etag}" if o is not None else "-" for o in (item.image, item.mask, item.sidecar)
    ]
    return "|".join(parts)


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON (only finite numbers are)")


def _sidecar_fields(meta: dict[str, Any]) -> dict[str, str]:
    out = {"part_ref": "", "camera": "", "acquired_at": ""}
    for key, col in SIDECAR_COLUMNS.items():
        if key in meta and not out[col]:
            out[col] = str(meta[key])
    for key in SIDECAR_TIME_KEYS:
        if key in meta:
            out["acquired_at"] = str(meta[key])
            break
    return out


def _stored_as_is(data: bytes, key: str, channels: int) -> bool:
    """True when ``data`` is a PNG whose pixels decode to what would be stored (8-bit, the
    line's mode, no EXIF rotation): re-encoding it would only cost CPU."""
    if _suffix(key) != ".png":
        return False
    with Image.open(io.BytesIO(data)) as im:  # header only: cheap
        upright = im.getexif().get(0x0112, 1) == 1
        return upright and im.mode == ("L" if channels == 1 else "RGB")


def _process(ctx: _Context, item: _Item) -> _Outcome:
    """Fetch, check, fit and store one image (with its mask and sidecar). Runs in a worker."""
    img_obj = item.image
    n_objects = 1 + (item.mask is not None) + (item.sidecar is not None)
    out = _Outcome(img_obj.key, img_obj.etag, "ingested", n_objects)
    fetched: dict[str, bytes] = {}

    def get(obj: ObjectInfo) -> bytes | None:
        try:
            data = ctx.store.read_bytes(obj.key)
        except StorageError as exc:
            out.quarantine.append(
                Quarantined(ctx.store.uri(obj.key), f"{exc}", "fetch_failed", obj.etag)
            )
            return None
        out.bytes += len(data)
        fetched[obj.key] = data
        return data

    def reject_all(kind: str, reason: str) -> _Outcome:
        out.bucket = "quarantined"
        for obj in (img_obj, item.mask, item.sidecar):
            if obj is not None and not any(
                q.file == ctx.store.uri(obj.key) for q in out.quarantine
            ):
                why = reason if obj is img_obj else f"its image {img_obj.key}: {reason}"
                inputs = _inputs(item) if obj is img_obj else ""
                out.quarantine.append(
                    _quarantine(ctx, obj.key, fetched.get(obj.key), kind, why, obj.etag, inputs)
                )
        return out

    data = get(img_obj)
    if data is None:
        return reject_all("fetch_failed", f"{img_obj.key}: could not be read")
    out.source_sha256 = hashlib.sha256(data).hexdigest()
    try:
        image = decode_image(data, img_obj.key, ctx.channels)
    except BadFile as exc:
        return reject_all(exc.kind, exc.reason)
    h, w = image.shape[:2]
    if min(h, w) < ctx.min_side:
        return reject_all(
            "too_small",
            f"{img_obj.key}: {w}x{h} is smaller than the model's stride ({ctx.min_side} pixels)",
        )
    mask = None
    if item.mask is not None:
        mdata = get(item.mask)
        if mdata is None:
            return reject_all("fetch_failed", f"{item.mask.key}: could not be read")
        try:
            mask = decode_mask(mdata, item.mask.key, len(ctx.classes))
        except BadFile as exc:
            return reject_all(exc.kind, f"mask {exc.reason}")
        if mask.shape != (h, w):
            return reject_all(
                "mask_size_mismatch",
                f"{item.mask.key}: mask is {mask.shape[1]}x{mask.shape[0]}, its image is {w}x{h}",
            )
    elif ctx.masks_required:
        return reject_all(
            "image_without_mask",
            f"{img_obj.key}: no mask masks/{item.name}.png (required in {ctx.domain}/{ctx.split})",
        )
    meta: dict[str, Any] = {}
    if item.sidecar is not None:
        sdata = get(item.sidecar)
        if sdata is None:
            return reject_all("fetch_failed", f"{item.sidecar.key}: could not be read")
        try:
            meta = json.loads(sdata, parse_constant=_refuse_constant)
            if not isinstance(meta, dict):
                raise ValueError("not a JSON object")
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            if isinstance(exc, RecursionError):
                exc = ValueError("nested deeper than the JSON parser's limit")
            # the image is fine: keep it, quarantine only the sidecar
            meta = {}
            out.quarantine.append(
                _quarantine(
                    ctx,
                    item.sidecar.key,
                    sdata,
                    "bad_sidecar",
                    f"{item.sidecar.key}: sidecar JSON unusable ({exc}); image ingested without it",
                    item.sidecar.etag,
                )
            )
    side = _sidecar_fields(meta)
    base_id = image_id_of(ctx.domain, ctx.split, item.name)
    rel = Path("line") / ctx.domain / ctx.split
    for piece in fit(image, mask, ctx.size, ctx.policy):
        image_id = base_id + piece.suffix
        # a PNG already model-sized, in the line's mode and upright is stored as it came
        as_is = piece.image is image and _stored_as_is(data, img_obj.key, ctx.channels)
        img_bytes = data if as_is else encode_png(piece.image)
        path = (rel / "images" / f"{image_id}.png").as_posix()
        write_bytes(ctx.data_dir / path, img_bytes)
        mask_rel, present, mask_sha = "", "", ""
        if piece.mask is not None:
            mask_rel = (rel / "masks" / f"{image_id}.png").as_posix()
            mask_bytes = encode_png(piece.mask)
            write_bytes(ctx.data_dir / mask_rel, mask_bytes)
            mask_sha = hashlib.sha256(mask_bytes).hexdigest()
            values = sorted(int(v) for v in np.unique(piece.mask) if v > 0)
            present = ",".join(ctx.classes[v - 1] for v in values)
        out.rows.append(
            {
                "image_id": image_id,
                "path": path,
                "mask_path": mask_rel,
                "domain": ctx.domain,
                "split": ctx.split,
                "part_ref": side["part_ref"],
                "width": ctx.size,
                "height": ctx.size,
                "channels": ctx.channels,
                "sha256": hashlib.sha256(img_bytes).hexdigest(),
                "defect_classes": present,
                "n_defects": 0,
                "n_nuisances": 0,
                "source_uri": ctx.store.uri(img_obj.key),
                "etag": img_obj.etag,
                "source_sha256": out.source_sha256,
                "orig_width": w,
                "orig_height": h,
                "mapping": piece.mapping.to_json(),
                "camera": side["camera"],
                "acquired_at": side["acquired_at"],
                "sidecar": json.dumps(meta, sort_keys=True) if meta else "",
                "mask_sha256": mask_sha,
            }
        )
    return out


def _process_safely(ctx: _Context, item: _Item) -> _Outcome:
    """:func:`_process`, with anything unexpected about this one item quarantined (retried on
    the next run) instead of stopping the batch."""
    try:
        return _process(ctx, item)
    except Exception as exc:  # one object's failure must not stop the batch
        why = f"{item.image.key}: {type(exc).__name__}: {exc}"
        out = _Outcome(item.image.key, item.image.etag, "quarantined", 0)
        for obj in (item.image, item.mask, item.sidecar):
            if obj is not None:
                out.objects += 1
                reason = why if obj is item.image else f"its image {why}"
                inputs = _inputs(item) if obj is item.image else ""
                out.quarantine.append(
                    Quarantined(
                        ctx.store.uri(obj.key), reason, "unexpected_error", obj.etag, "", inputs
                    )
                )
        return out


def _bounded(
    pool: ThreadPoolExecutor, fn: Callable[[_Item], _Outcome], items: list[_Item], window: int
) -> Iterator[_Outcome]:
    """Results of fn over items with at most ``window`` in flight (completion order)."""
    pending: set[Future[_Outcome]] = set()
    it = iter(items)
    for item in it:
        pending.add(pool.submit(fn, item))
        if len(pending) >= window:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in done:
                yield f.result()
    while pending:
        done, pending = wait(pending, return_when=FIRST_COMPLETED)
        for f in done:
            yield f.result()


def _read_quarantine(report_path: Path) -> list[dict[str, Any]]:
    """The quarantine report's entries ([] when there is none yet)."""
    if not report_path.exists():
        return []
    try:
        entries = json.loads(report_path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise IngestError(f"{report_path}: not a quarantine report ({exc})") from None
    if not isinstance(entries, list):
        raise IngestError(f"{report_path}: not a quarantine report (a JSON list)")
    return entries


def ingest_split(
    params: Params,
    store: LocalStore | S3Store,
    prefix: str,
    domain: str,
    split: str,
    data_dir: Path,
    existing: pd.DataFrame,
    masks_required: bool,
    concurrency: int = 8,
    progress: Progress | None = None,
    listed: list[ObjectInfo] | None = None,
) -> tuple[BatchReport, list[dict[str, Any]], list[Quarantined]]:
    """Ingest one (domain, split) from ``store`` under ``prefix``.

    ``existing`` is the manifest so far (rows of earlier runs): their objects are not fetched
    again. ``listed``: the store's listing when the caller already has it (a line's four
    splits share one listing instead of listing S3 again per split). Returns (report, new
    manifest rows, quarantined files of this run); ``report.resolved`` holds the URIs an
    earlier run quarantined that are now ingested (:func:`finish` drops them from the report).

    What an earlier run quarantined is judged again when its kind is retried
    (:data:`~mentoring.data.images.RETRIED_KINDS`: a failed fetch is fetched again, a missing
    mask or image paired again) or when its pairing changed (a mask uploaded or replaced);
    otherwise it is counted as quarantined without being fetched.
    """
    start = time.perf_counter()
    report = BatchReport(store.uri(prefix), domain, split)
    under = prefix.rstrip("/") + "/" if prefix else ""
    listing = (
        [o for o in listed if o.key.startswith(under)]
        if listed is not None
        else list(store.list(under))
    )
    report.listed = len(listing)
    items, orphans, skipped = plan(listing, prefix)
    report.skipped.update(skipped)
    ctx = _Context(
        store,
        domain,
        split,
        data_dir,
        params.line.classes,
        params.line.channels,
        params.line.image_size,
        params.line.resize,
        masks_required,
        prefix.rstrip("/") + "/" if prefix else "",
        params.model.stride,
    )
    # what earlier runs already did: ingested (by source URI) and quarantined (by URI + etag)
    existing = with_optional_columns(existing)
    known = existing[existing["source_uri"] != ""].drop_duplicates("source_uri")
    known_etag = dict(zip(known["source_uri"], known["etag"], strict=True))
    known_sha = dict(zip(known["source_uri"], known["source_sha256"], strict=True))
    known_ids = set(existing["image_id"])
    before = {q["file"]: q for q in _read_quarantine(data_dir / "quarantine" / "report.json")}

    journal = _Journal(
        data_dir
        / "ingest"
        / "journal"
        / f"{hashlib.sha256(store.uri(prefix).encode()).hexdigest()[:16]}-{domain}-{split}.jsonl"
    )
    rows: list[dict[str, Any]] = []
    bad: list[Quarantined] = []
    sha_keys: dict[str, list[str]] = defaultdict(list)
    done = 0

    def tick(n: int, nbytes: int = 0) -> None:
        nonlocal done
        done += n
        report.bytes_fetched += nbytes
        if progress:
            progress(done, report.listed, report.bytes_fetched)

    def still(uri: str, etag: str, kind: str | None = None, inputs: str | None = None) -> bool:
        """True when an earlier run's verdict on ``uri`` still holds: same ETag (and kind and
        pairing where given), and not a kind that is fetched again on every run."""
        q = before.get(uri)
        return (
            q is not None
            and q.get("etag", "") == etag
            and q.get("kind") not in REFETCHED_KINDS
            and (kind is None or q.get("kind") == kind)
            and (inputs is None or q.get("inputs", "") == inputs)
        )

    def count_held(uri: str, n: int) -> None:
        kind = before[uri].get("kind", "")
        if kind in RETRIED_KINDS:
            report.to_retry += n
            report.retry_kinds[kind] = report.retry_kinds.get(kind, 0) + n
        else:
            report.quarantined += n
        tick(n)

    def fetch(obj: ObjectInfo) -> bytes | Quarantined:
        try:
            return store.read_bytes(obj.key)
        except StorageError as exc:
            return Quarantined(store.uri(obj.key), f"{exc}", "fetch_failed", obj.etag)

    tick(sum(skipped.values()))
    for obj, kind, reason in orphans:
        uri = store.uri(obj.key)
        if still(uri, obj.etag, kind):
            count_held(uri, 1)  # the same object, still unpaired or still unusable
            continue
        data = None if obj.problem else fetch(obj)
        if isinstance(data, Quarantined):
            q = data
        else:
            q = _quarantine(ctx, obj.key, data, kind, reason, obj.etag)
        outcome = _Outcome(obj.key, obj.etag, "quarantined", 1, [], [q])
        _account(report, outcome, rows, bad, sha_keys)
        tick(1, len(data) if isinstance(data, bytes) else 0)

    todo: list[_Item] = []
    ids_seen: dict[str, str] = {}
    for item in items:
        uri = store.uri(item.image.key)
        n_obj = 1 + (item.mask is not None) + (item.sidecar is not None)
        if uri in known_etag:
            if known_etag[uri] != item.image.etag:
                # a new ETag (re-upload, multipart copy...): the same bytes are already present;
                # new content under an ingested key is skipped, the first version stays
                data = fetch(item.image)
                if isinstance(data, Quarantined):
                    outcome = _Outcome(item.image.key, item.image.etag, "quarantined", 1)
                    outcome.quarantine.append(data)
                    _account(report, outcome, rows, bad, sha_keys)
                    report.already_present += n_obj - 1
                    tick(n_obj)
                    continue
                tick(0, len(data))
                if hashlib.sha256(data).hexdigest() != known_sha.get(uri):
                    reason = "content changed after ingestion (the first version is kept)"
                    report.skipped[reason] = report.skipped.get(reason, 0) + n_obj
                    tick(n_obj)
                    continue
            # a sidecar quarantined beside its ingested image is still quarantined
            held = [
                o
                for o in (item.mask, item.sidecar)
                if o is not None and still(store.uri(o.key), o.etag)
            ]
            for o in held:
                count_held(store.uri(o.key), 1)
            report.already_present += n_obj - len(held)
            tick(n_obj - len(held))
            continue
        if still(uri, item.image.etag, inputs=_inputs(item)):
            count_held(uri, n_obj)
            continue
        entry = journal.done.get(item.image.key)
        if entry is not None and entry["etag"] == item.image.etag:
            report.resumed += 1
            outcome = _Outcome(
                entry["key"],
                entry["etag"],
                entry["bucket"],
                entry["objects"],
                entry["rows"],
                [Quarantined(**q) for q in entry["quarantine"]],
                entry["source_sha256"],
            )
            _account(report, outcome, rows, bad, sha_keys)
            _resolve(report, outcome, item, store, before)
            tick(outcome.objects)
            continue
        image_id = image_id_of(domain, split, item.name)
        problem = ""
        if len(f"{image_id}-r000c000.png".encode()) > MAX_NAME_BYTES:
            problem = (
                f"{item.image.key!r}: its image id would be {len(image_id.encode())} bytes long, "
                f"too long for a file name ({MAX_NAME_BYTES} bytes with its suffix): shorten "
                "the folders or the name"
            )
            kind = "bad_name"
        clash = ids_seen.get(image_id) or (image_id if image_id in known_ids else None)
        if clash is not None and not problem:
            problem = (
                f"{item.image.key}: image id {image_id} is already taken by "
                f"{clash if clash != image_id else 'an earlier ingestion'}"
            )
            kind = "duplicate_id"
        if problem:
            data = fetch(item.image)
            if isinstance(data, Quarantined):
                q = data
            else:
                q = _quarantine(ctx, item.image.key, data, kind, problem, item.image.etag)
            # a clash only concerns the image: its mask and sidecar are counted with it
            outcome = _Outcome(item.image.key, item.image.etag, "quarantined", 1, [], [q])
            for part in (item.mask, item.sidecar):
                if part is not None:
                    why = f"its image {problem}"
                    outcome.objects += 1
                    outcome.quarantine.append(
                        Quarantined(store.uri(part.key), why, q.kind, part.etag)
                    )
            journal.add(outcome)
            _account(report, outcome, rows, bad, sha_keys)
            tick(outcome.objects, len(data) if isinstance(data, bytes) else 0)
            continue
        ids_seen[image_id] = item.image.key
        todo.append(item)

    # a failed fetch is tried again in this run, after a pause; what still fails is left to
    # retry (the next run fetches it again)
    by_key = {item.image.key: item for item in todo}
    for attempt in range(REFETCH_PASSES + 1):
        again: list[_Item] = []
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="ingest") as pool:
            for outcome in _bounded(
                pool, lambda it: _process_safely(ctx, it), todo, 2 * concurrency
            ):
                failed = any(q.kind == "fetch_failed" for q in outcome.quarantine)
                if failed and attempt < REFETCH_PASSES:
                    again.append(by_key[outcome.key])
                    tick(0, outcome.bytes)
                    continue
                journal.add(outcome)
                _account(report, outcome, rows, bad, sha_keys)
                _resolve(report, outcome, by_key[outcome.key], store, before)
                tick(outcome.objects, outcome.bytes)
        if not again:
            break
        time.sleep(REFETCH_PAUSE_S * (attempt + 1))
        todo = sorted(again, key=lambda it: it.image.key)

    # the same content under two keys (this run and earlier ones)
    for sha, uris in zip(known["source_sha256"], known["source_uri"], strict=True):
        if sha in sha_keys:
            sha_keys[sha].append(uris)
    report.duplicate_content = sorted(sorted(set(k)) for k in sha_keys.values() if len(set(k)) > 1)
    report.images_stored = len(rows)
    report.quarantine_kinds = dict(Counter(q.kind for q in bad))
    report.seconds = time.perf_counter() - start
    if not report.reconciles():
        journal.close(remove=False)
        raise IngestError(
            f"{report.source}: reconciliation failed: listed {report.listed} != ingested "
            f"{report.ingested} + quarantined {report.quarantined} + to retry "
            f"{report.to_retry} + already present {report.already_present} + skipped "
            f"{sum(report.skipped.values())}"
        )
    journal.close(remove=False)  # removed by the caller once the manifest is written
    return report, rows, bad


def _resolve(
    report: BatchReport,
    outcome: _Outcome,
    item: _Item,
    store: LocalStore | S3Store,
    before: dict[str, dict[str, Any]],
) -> None:
    """Note the objects of an ingested item that an earlier run had quarantined."""
    if outcome.bucket != "ingested":
        return
    still_bad = {q.file for q in outcome.quarantine}
    for obj in (item.image, item.mask, item.sidecar):
        if obj is None:
            continue
        uri = store.uri(obj.key)
        if uri in before and uri not in still_bad:
            report.resolved.add(uri)
            report.recovered += 1


def _account(
    report: BatchReport,
    outcome: _Outcome,
    rows: list[dict[str, Any]],
    bad: list[Quarantined],
    sha_keys: dict[str, list[str]],
) -> None:
    # one quarantine entry per object quarantined (a bad sidecar beside an ingested image)
    n_bad = len(outcome.quarantine)
    for q in outcome.quarantine:
        if q.kind in RETRIED_KINDS:
            report.to_retry += 1
            report.retry_kinds[q.kind] = report.retry_kinds.get(q.kind, 0) + 1
        else:
            report.quarantined += 1
    if outcome.bucket == "ingested":
        report.ingested += outcome.objects - n_bad
        rows.extend(outcome.rows)
        if outcome.rows:
            sha_keys[outcome.source_sha256].append(outcome.rows[0]["source_uri"])
    elif outcome.bucket == "quarantined":
        if n_bad != outcome.objects:
            raise AssertionError(f"{outcome.key}: {outcome.objects} objects, {n_bad} entries")
    elif outcome.bucket == "already_present":
        report.already_present += outcome.objects
    else:
        reason = outcome.bucket.split(":", 1)[1]
        report.skipped[reason] = report.skipped.get(reason, 0) + outcome.objects
    bad.extend(outcome.quarantine)


def journal_paths(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "ingest" / "journal").glob("*.jsonl"))


def finish(
    data_dir: Path,
    manifest: Path,
    rows: list[dict[str, Any]],
    bad: list[Quarantined],
    base: pd.DataFrame,
    resolved: set[str] | None = None,
) -> pd.DataFrame:
    """Write the manifest (``base`` + ``rows``) and the quarantine report, then drop journals.

    The report keeps one entry per file: this run's verdict replaces an earlier one (its
    ``attempts`` counted up when the same object is quarantined again); ``resolved`` files (now
    ingested) leave it, with their quarantine copies.
    """
    report_path = data_dir / "quarantine" / "report.json"
    entries = {q["file"]: q for q in _read_quarantine(report_path)}
    for q in bad:
        entry = asdict(q)
        old = entries.get(q.file)
        if old is not None and old.get("etag", "") == q.etag:
            entry["attempts"] = int(old.get("attempts", 1)) + 1
        entry["retried"] = q.retried
        entries[q.file] = entry
    for uri in sorted(resolved or ()):
        gone = entries.pop(uri, None)
        if gone and gone.get("copy"):
            (data_dir / gone["copy"]).unlink(missing_ok=True)
    frames = [f for f in (with_optional_columns(base), pd.DataFrame(rows)) if not f.empty]
    df = pd.concat(frames, ignore_index=True) if frames else with_optional_columns(base)
    for col in INT_COLUMNS:
        df[col] = df[col].astype("int64")
    dup = df["image_id"][df["image_id"].duplicated()]
    if not dup.empty:
        raise IngestError(f"{manifest}: duplicate image ids {sorted(set(dup))[:10]}")
    write_manifest(df, manifest)
    write_json(report_path, list(entries.values()))
    for path in journal_paths(data_dir):
        path.unlink(missing_ok=True)
    return df


def existing_manifest(manifest: Path) -> pd.DataFrame:
    """The manifest so far, or an empty one."""
    if manifest.exists():
        return read_manifest(manifest, check_files=False)
    from mentoring.data.manifest import COLUMNS, OPTIONAL_COLUMNS

    return pd.DataFrame({c: [] for c in (*COLUMNS, *OPTIONAL_COLUMNS)})


def ingest_batch(
    params: Params,
    source: str,
    domain: str,
    split: str,
    data_dir: Path,
    results_dir: Path,
    masks_required: bool | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """``mentoring ingest``: add the objects of ``source`` to ``data_dir``'s manifest.

    ``source`` is ``s3://bucket/prefix`` or a folder holding ``images/`` (and ``masks/``) or
    images directly. ``masks_required`` None = required except in new/pool. Writes
    ``<data>/manifests/line.parquet`` (existing rows kept), ``<data>/quarantine/report.json``,
    ``<results>/metrics.json`` (the reconciled counts and the validation summary) and
    ``<results>/validate/`` (the batch and acquisition-drift suites on the rows just ingested:
    JSON and Data Docs, :func:`mentoring.validation.validate_ingested`); returns the metrics.

    Raises:
        IngestError: unknown domain, unreadable source, or counts that do not reconcile.
    """
    from mentoring.line.ingest import open_line_source

    if domain not in params.line.setups:
        raise IngestError(
            f"--domain {domain!r} is not a domain of line.setups ({sorted(params.line.setups)})"
        )
    if split not in KNOWN_SPLITS:
        raise IngestError(f"--split {split!r} is not a split of the line ({list(KNOWN_SPLITS)})")
    if masks_required is None:
        masks_required = (domain, split) != ("new", "pool")
    store = open_line_source(params, source)
    manifest = data_dir / "manifests" / "line.parquet"
    base = existing_manifest(manifest)
    try:
        report, rows, bad = ingest_split(
            params,
            store,
            "",
            domain,
            split,
            data_dir,
            base,
            masks_required,
            params.line.s3.concurrency,
            progress,
        )
    except StorageError as exc:
        raise IngestError(f"{source}: {exc}") from None
    full = finish(data_dir, manifest, rows, bad, base, report.resolved)
    from mentoring.validation import validate_ingested

    checked = validate_ingested(
        pd.DataFrame(rows), full, data_dir, params, results_dir / "validate"
    )
    metrics = report.to_dict()
    metrics["validation"] = {
        k: checked[k]
        for k in ("success", "n_expectations", "n_failed", "n_warnings", "failures", "warnings")
    }
    metrics["validation"]["drifted"] = checked["drifted"]
    metrics["validation"]["data_docs"] = str(checked["files"].get("data_docs", ""))
    metrics["manifest"] = str(manifest)
    metrics["quarantine_report"] = str(data_dir / "quarantine" / "report.json")
    metrics["resize"] = params.line.resize
    metrics["quarantined_files"] = [asdict(q) for q in bad]
    write_json(results_dir / "metrics.json", metrics)
    return metrics
