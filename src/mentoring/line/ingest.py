"""Ingest a line from a folder of real images instead of generating one.

Layout of the folder (``line.ingest_dir``), the same as the generated line's::

    <domain>/<split>/images/<name>.(png|jpg|jpeg|bmp|tif|tiff)
    <domain>/<split>/masks/<name>.png     class-index mask: 0 healthy, k = line.classes[k - 1]

with the domains of ``line.setups`` and the splits ``original/train``, ``original/eval``,
``new/pool`` and ``new/eval``. Masks are required except in ``new/pool`` (a real pool is
unlabelled until operators mentor it; the simulated operator and the oracle need them).

Every readable image of the right size becomes a PNG under ``<data>/line/<domain>/<split>/`` and
a manifest row (id ``<domain>-<split>-<name>``); the source folder is never modified. A file that
cannot be used (unreadable, wrong size, a mask with unknown class values or of another shape, a
labelled image without mask, a mask without image) is **quarantined**: copied to
``<data>/quarantine/<domain>/<split>/`` and listed with its reason in
``<data>/quarantine/report.json``. Nothing is dropped silently.
"""

from __future__ import annotations

import hashlib
import io
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from mentoring.config import Params
from mentoring.data.manifest import write_manifest
from mentoring.io import write_bytes, write_json
from mentoring.line.generate import SPLITS

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
#: splits whose images may come without masks
UNLABELLED_OK = {("new", "pool")}


class IngestError(ValueError):
    """The ingest folder cannot give a line (missing split, unknown domain...)."""


@dataclass(frozen=True)
class Quarantined:
    file: str  # path in the source folder
    reason: str


def _read(path: Path, mode: str) -> np.ndarray:
    with Image.open(path) as im:
        im.load()
        return np.asarray(im.convert(mode) if mode else im)


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=3)
    return buf.getvalue()


def ingest_line(
    params: Params,
    source: Path,
    data_dir: Path,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Path, list[Quarantined]]:
    """Copy the usable images of ``source`` into ``data_dir``; return (manifest, quarantined).

    Raises:
        IngestError: ``source`` is missing, holds an unknown domain, or a split is missing or
            ends up empty.
    """
    line = params.line
    if not source.is_dir():
        raise IngestError(f"line.ingest_dir {source}: folder not found")
    known = set(line.setups)
    found = {p.name for p in source.iterdir() if p.is_dir()}
    if found - known:
        raise IngestError(
            f"{source}: unknown domain folder(s) {sorted(found - known)}; "
            f"domains are the keys of line.setups: {sorted(known)}"
        )
    size = (line.image_size, line.image_size)
    jobs = []
    for domain, split, _ in SPLITS:
        images_dir = source / domain / split / "images"
        if not images_dir.is_dir():
            raise IngestError(f"{source}: missing {domain}/{split}/images/ (see the layout)")
        jobs.append((domain, split, sorted(p for p in images_dir.iterdir() if p.is_file())))
    total = sum(len(files) for *_, files in jobs)
    rows, bad, done = [], [], 0
    quarantine = data_dir / "quarantine"

    def reject(path: Path, domain: str, split: str, reason: str) -> None:
        dest = quarantine / domain / split / path.parent.name / path.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dest)
        bad.append(Quarantined(str(path), reason))

    for domain, split, files in jobs:
        masks_dir = source / domain / split / "masks"
        stems = set()
        for path in files:
            done += 1
            if progress:
                progress(done, total)
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                reject(path, domain, split, f"not an image file ({path.suffix or 'no suffix'})")
                continue
            stems.add(path.stem)
            try:
                image = _read(path, "L" if line.channels == 1 else "RGB")
            except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
                reject(path, domain, split, f"cannot read image ({exc})")
                continue
            if image.shape[:2] != size:
                reject(
                    path,
                    domain,
                    split,
                    f"image is {image.shape[1]}x{image.shape[0]}, line.image_size is {size[0]}",
                )
                continue
            mask_file = masks_dir / f"{path.stem}.png"
            mask = None
            if mask_file.exists():
                try:
                    mask = _read(mask_file, "")
                except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
                    reject(path, domain, split, f"its mask {mask_file} cannot be read ({exc})")
                    reject(mask_file, domain, split, f"cannot read mask ({exc})")
                    continue
                if mask.ndim != 2 or mask.shape != size or mask.max() > len(line.classes):
                    reason = (
                        f"mask has shape {mask.shape}, expected {size}"
                        if mask.ndim != 2 or mask.shape != size
                        else f"mask values up to {int(mask.max())}, line.classes has "
                        f"{len(line.classes)}"
                    )
                    reject(path, domain, split, f"its mask {mask_file}: {reason}")
                    reject(mask_file, domain, split, reason)
                    continue
            elif (domain, split) not in UNLABELLED_OK:
                reject(path, domain, split, f"no mask {mask_file} (required in {domain}/{split})")
                continue
            image_id = f"{domain}-{split}-{path.stem}"
            rel = Path("line") / domain / split
            img_bytes = _png(image)
            write_bytes(data_dir / rel / "images" / f"{image_id}.png", img_bytes)
            mask_rel = ""
            present: list[str] = []
            if mask is not None:
                mask_rel = (rel / "masks" / f"{image_id}.png").as_posix()
                write_bytes(data_dir / mask_rel, _png(mask.astype(np.uint8)))
                present = [line.classes[k - 1] for k in sorted(set(np.unique(mask)) - {0})]
            rows.append(
                {
                    "image_id": image_id,
                    "path": (rel / "images" / f"{image_id}.png").as_posix(),
                    "mask_path": mask_rel,
                    "domain": domain,
                    "split": split,
                    "part_ref": "",
                    "width": size[1],
                    "height": size[0],
                    "channels": line.channels,
                    "sha256": hashlib.sha256(img_bytes).hexdigest(),
                    "defect_classes": ",".join(present),
                    "n_defects": 0,
                    "n_nuisances": 0,
                }
            )
        if masks_dir.is_dir():
            for orphan in sorted(p for p in masks_dir.iterdir() if p.stem not in stems):
                reject(orphan, domain, split, "mask without an image")
        if not any(r["domain"] == domain and r["split"] == split for r in rows):
            write_json(quarantine / "report.json", [asdict(b) for b in bad])
            raise IngestError(
                f"{source}: no usable image in {domain}/{split} "
                f"({sum(1 for b in bad if f'/{domain}/{split}/' in b.file)} quarantined, see "
                f"{quarantine / 'report.json'})"
            )
    write_json(quarantine / "report.json", [asdict(b) for b in bad])
    manifest = data_dir / "manifests" / "line.parquet"
    write_manifest(pd.DataFrame(rows), manifest)
    return manifest, bad
