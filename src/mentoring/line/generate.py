"""Write a synthetic line to disk: PNG images, PNG class masks and a parquet manifest.

Layout (``design.md``)::

    <data>/line/<domain>/<split>/images/<image_id>.png
    <data>/line/<domain>/<split>/masks/<image_id>.png     uint8 class index, 0 = healthy
    <data>/manifests/line.parquet

Each image is rendered from its own random stream ``(seed, domain, split, index)``, so the result
is the same whatever the number of worker processes, and growing a split keeps existing images.

Example:
    >>> from mentoring.config import load_params
    >>> generate_line(load_params("params.yaml"), "data")  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from mentoring.config import Params
from mentoring.data.manifest import write_manifest
from mentoring.io import write_bytes
from mentoring.line.render import Canvas, render

#: (domain, split) pairs of a line, with the SplitSizes field giving their size.
SPLITS: tuple[tuple[str, str, str], ...] = (
    ("original", "train", "original_train"),
    ("original", "eval", "original_eval"),
    ("new", "pool", "new_pool"),
    ("new", "eval", "new_eval"),
)
_SPLIT_CODE = {"train": 0, "eval": 1, "pool": 2}
_DOMAIN_CODE = {"original": 0, "new": 1}


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=3)
    return buf.getvalue()


def _render_chunk(job: dict[str, Any]) -> list[dict[str, Any]]:
    """Render and write a chunk of images of one split (runs in a worker process)."""
    params: Params = job["params"]
    line = params.line
    domain, split, root = job["domain"], job["split"], Path(job["root"])
    canvas = Canvas(line.image_size)
    setup = line.setups[domain]
    rows = []
    for i in job["indices"]:
        rng = np.random.default_rng(
            [params.line.seed, _DOMAIN_CODE.get(domain, 2), _SPLIT_CODE.get(split, 3), i]
        )
        r = render(
            canvas,
            rng,
            setup,
            line.classes,
            line.part_refs,
            line.defect_rate,
            line.max_defects,
            line.channels,
        )
        image_id = f"{domain}-{split}-{i:06d}"
        rel_img = Path("line") / domain / split / "images" / f"{image_id}.png"
        rel_mask = Path("line") / domain / split / "masks" / f"{image_id}.png"
        img_bytes = _png(np.round(r.image * 255).astype(np.uint8))
        write_bytes(root / rel_img, img_bytes)
        mask_bytes = _png(r.mask)
        write_bytes(root / rel_mask, mask_bytes)
        present = sorted(
            {line.classes[k - 1] for k in np.unique(r.mask) if k > 0}, key=line.classes.index
        )
        rows.append(
            {
                "image_id": image_id,
                "path": rel_img.as_posix(),
                "mask_path": rel_mask.as_posix(),
                "domain": domain,
                "split": split,
                "part_ref": r.part_ref,
                "width": line.image_size,
                "height": line.image_size,
                "channels": line.channels,
                "sha256": hashlib.sha256(img_bytes).hexdigest(),
                "defect_classes": ",".join(present),
                "n_defects": len(r.defects),
                "n_nuisances": len(r.nuisances),
                "mask_sha256": hashlib.sha256(mask_bytes).hexdigest(),
            }
        )
    return rows


def generate_line(
    params: Params,
    data_dir: str | Path,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Render every split of the active profile into ``data_dir``; return the manifest path.

    Args:
        params: validated parameters (``base.profile`` and ``line``, whose ``seed`` picks the line).
        data_dir: the data root; ``line/`` and ``manifests/line.parquet`` are written in it.
        progress: called as ``progress(done, total)`` after each chunk of images.
    """
    root = Path(data_dir)
    sizes = params.sizes
    jobs: list[dict[str, Any]] = []
    chunk = 64
    for domain, split, field in SPLITS:
        n = getattr(sizes, field)
        for start in range(0, n, chunk):
            jobs.append(
                {
                    "params": params,
                    "domain": domain,
                    "split": split,
                    "root": str(root),
                    "indices": list(range(start, min(start + chunk, n))),
                }
            )
    total = sum(len(j["indices"]) for j in jobs)
    workers = params.line.workers or os.cpu_count() or 1
    rows: list[dict[str, Any]] = []
    with ExitStack() as stack:
        if workers > 1 and len(jobs) > 1:
            pool = stack.enter_context(ProcessPoolExecutor(max_workers=workers))
            results: Iterator[list[dict[str, Any]]] = pool.map(_render_chunk, jobs)
        else:
            results = map(_render_chunk, jobs)
        for chunk_rows in results:
            rows.extend(chunk_rows)
            if progress:
                progress(len(rows), total)
    manifest = root / "manifests" / "line.parquet"
    write_manifest(pd.DataFrame(rows), manifest)
    return manifest
