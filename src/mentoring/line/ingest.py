"""Ingest a line (its four splits) from a folder or an S3 prefix instead of generating one.

Layout of the source (``line.ingest_dir`` or ``line.s3.uri``), the generated line's::

    <domain>/<split>/images/<name>.(png|jpg|jpeg|bmp|tif|tiff)   any size, gray or RGB
    <domain>/<split>/images/<name>.json                          optional sidecar
    <domain>/<split>/masks/<name>.png     class-index mask: 0 healthy, k = line.classes[k - 1]

with the domains of ``line.setups`` and the splits ``original/train``, ``original/eval``,
``new/pool`` and ``new/eval``. Masks are required except in ``new/pool`` (a real pool is
unlabelled until operators mentor it; the simulated operator and the oracle need them).

Each split goes through the ingestion engine (:mod:`mentoring.data.ingest`): images of any size
are fitted with ``line.resize``; a file that cannot be used is **quarantined** under
``<data>/quarantine/`` with its kind and reason (``<data>/quarantine/report.json``); nothing is
dropped silently and the counts reconcile. The source is never modified. A ``classes.json`` at
the source's root (written by ``mentoring import mvtec|coco``) must match ``line.classes``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from mentoring.config import Params
from mentoring.data.images import REFETCHED_KINDS
from mentoring.data.ingest import (
    BatchReport,
    IngestError,
    Quarantined,
    existing_manifest,
    finish,
    ingest_split,
)
from mentoring.io import write_json
from mentoring.line.generate import SPLITS
from mentoring.storage import LocalStore, S3Store, StorageError, open_store

__all__ = ["IngestError", "Quarantined", "ingest_line", "open_line_source"]

#: splits whose images may come without masks
UNLABELLED_OK = {("new", "pool")}


def open_line_source(params: Params, source: str | Path) -> LocalStore | S3Store:
    """The store of a line source (a folder, or an S3 URI with ``line.s3``'s settings)."""
    s3 = params.line.s3
    return open_store(
        source,
        endpoint_url=s3.endpoint_url or None,
        max_attempts=s3.max_attempts,
        max_pool_connections=max(10, s3.concurrency + 2),
    )


def _check_classes(params: Params, store: LocalStore | S3Store) -> None:
    if not store.exists("classes.json"):
        return
    declared = store.read_json("classes.json")
    if list(declared) != list(params.line.classes):
        raise IngestError(
            f"{store.uri('classes.json')} names the classes {declared} (mask value k = the k-th), "
            f"but line.classes is {list(params.line.classes)}: set "
            f"-S 'line.classes={declared}' (same names, same order)"
        )


def ingest_line(
    params: Params,
    source: str | Path,
    data_dir: Path,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Path, list[Quarantined], list[BatchReport]]:
    """Ingest the four splits of ``source`` into ``data_dir``; return (manifest, quarantined,
    per-split reports).

    Raises:
        IngestError: ``source`` is missing, holds an unknown domain, a split is missing or ends
            up empty, or the counts do not reconcile.
    """
    store = open_line_source(params, source)
    try:
        objects = list(store.list())
    except StorageError as exc:
        raise IngestError(f"line source {source}: {exc}") from None
    if isinstance(store, LocalStore) and not Path(source).is_dir():
        raise IngestError(f"line.ingest_dir {source}: folder not found")
    _check_classes(params, store)
    listing = [o.key for o in objects]
    found = {k.split("/", 1)[0] for k in listing if "/" in k}
    known = set(params.line.setups)
    if found - known:
        raise IngestError(
            f"{source}: unknown domain folder(s) {sorted(found - known)}; "
            f"domains are the keys of line.setups: {sorted(known)}"
        )
    for domain, split, _ in SPLITS:
        if not any(k.startswith(f"{domain}/{split}/images/") for k in listing):
            raise IngestError(f"{source}: missing {domain}/{split}/images/ (see the layout)")
    manifest = data_dir / "manifests" / "line.parquet"
    base = existing_manifest(manifest).iloc[0:0]  # a line is ingested whole, not added to
    (data_dir / "quarantine" / "report.json").unlink(missing_ok=True)
    rows, bad, reports = [], [], []
    total = len(listing)
    offset = 0
    for domain, split, _ in SPLITS:
        start = offset

        def tick(done: int, _listed: int, _bytes: int, start: int = start) -> None:
            if progress:
                progress(min(start + done, total), total)

        report, new_rows, new_bad = ingest_split(
            params,
            store,
            f"{domain}/{split}",
            domain,
            split,
            data_dir,
            base,
            masks_required=(domain, split) not in UNLABELLED_OK,
            concurrency=params.line.s3.concurrency,
            progress=tick,
            listed=objects,
        )
        offset += report.listed
        rows += new_rows
        bad += new_bad
        reports.append(report)
        if not new_rows:
            write_json(data_dir / "quarantine" / "report.json", [asdict(b) for b in bad])
            raise IngestError(
                f"{source}: no usable image in {domain}/{split} ({report.quarantined} "
                f"quarantined, see {data_dir / 'quarantine' / 'report.json'})"
            )
    unread = [b for b in bad if b.kind in REFETCHED_KINDS]
    if unread:
        write_json(data_dir / "quarantine" / "report.json", [asdict(b) for b in bad])
        raise IngestError(
            f"{source}: {len(unread)} object(s) could not be read even after retries (first: "
            f"{unread[0].reason}); the line would be incomplete, so nothing is written. Run "
            "the stage again once the store answers (see "
            f"{data_dir / 'quarantine' / 'report.json'})"
        )
    finish(data_dir, manifest, rows, bad, base)
    return manifest, bad, reports
