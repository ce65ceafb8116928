"""Image manifests: one row per image, stored as parquet.

Columns (see :data:`COLUMNS`): ``image_id`` (unique), ``path`` and ``mask_path`` (relative to the
data root, the folder that holds ``line/`` and ``manifests/``), ``domain``, ``split``,
``part_ref``, ``width``, ``height``, ``channels``, ``sha256`` (of the image file),
``defect_classes`` (comma-separated classes present in the pixel mask, "" when healthy),
``n_defects`` and ``n_nuisances`` (what the generator drew; 0 for ingested data).

``mask_sha256`` (of the mask file; "" without a mask, or in a manifest written before it
existed) makes the manifest a fingerprint of every file it names: two lines whose images or masks
differ in one byte have different manifests. This is what lets the pipeline's stages depend on
the manifest instead of on the image folder (see ``dvc.yaml``); :func:`verify_files` checks the
files against it.

Ingested rows also say where the image came from (:data:`OPTIONAL_COLUMNS`, filled with their
defaults for a manifest written before they existed): ``source_uri`` and ``etag`` (the object
read: local path or ``s3://...``, and its ETag), ``source_sha256`` (of the original bytes),
``orig_width``/``orig_height`` (the camera image's size), ``mapping`` (JSON of
:class:`mentoring.data.images.Mapping`: stored pixels -> original pixels; "" = identity),
``camera``, ``acquired_at`` and ``sidecar`` (the optional sidecar JSON, as JSON text).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads

from mentoring.io import sha256_file, write_with

COLUMNS: tuple[str, ...] = (
    "image_id",
    "path",
    "mask_path",
    "domain",
    "split",
    "part_ref",
    "width",
    "height",
    "channels",
    "sha256",
    "defect_classes",
    "n_defects",
    "n_nuisances",
)

#: column -> default for manifests that predate it (synthetic data: identity, no source)
OPTIONAL_COLUMNS: dict[str, str | int] = {
    "mask_sha256": "",  # "": no mask, or a manifest from before the column (not checked)
    "source_uri": "",
    "etag": "",
    "source_sha256": "",
    "orig_width": -1,  # -1: same as width
    "orig_height": -1,
    "mapping": "",
    "camera": "",
    "acquired_at": "",
    "sidecar": "",
}


def with_optional_columns(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with every optional column present (defaults; orig size = stored size)."""
    df = df.copy()
    for col, default in OPTIONAL_COLUMNS.items():
        if col not in df.columns:
            df[col] = pd.Series([default] * len(df), index=df.index)
    for orig, size in (("orig_width", "width"), ("orig_height", "height")):
        values = df[orig].astype("int64")
        df[orig] = values.where(values >= 0, df[size].astype("int64"))
    return df


class ManifestError(ValueError):
    """A manifest that cannot be used; the message names the manifest and the rows/files."""


def data_root(manifest_path: str | Path) -> Path:
    """The folder manifest paths are relative to: the parent of ``manifests/``."""
    return Path(manifest_path).resolve().parent.parent


def write_manifest(df: pd.DataFrame, path: str | Path) -> None:
    """Write a manifest atomically, rows sorted by image_id."""
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ManifestError(f"{path}: manifest lacks columns {missing}")
    df = with_optional_columns(df)
    known = [*COLUMNS, *OPTIONAL_COLUMNS]
    df = df[known + [c for c in df.columns if c not in known]]  # one column order everywhere
    df = df.sort_values("image_id").reset_index(drop=True)
    write_with(path, lambda tmp: df.to_parquet(tmp, index=False))


def _read_parquet(path: Path) -> pd.DataFrame:
    """``pd.read_parquet(path)``, the same frame, through arrow's system allocator.

    Arrow's default allocator (mimalloc) keeps the parquet reader's scratch memory after the read:
    measured, reading a 15,000-row manifest left 50 MiB more resident than the frame needs
    against 23 MiB through the system allocator, 1,500 rows 26 against 10 MiB. A stage that reads
    the manifest and then streams the images kept that as a floor that grows with the line."""
    pool = pa.system_memory_pool()
    table = pads.dataset(path, format="parquet").to_table(memory_pool=pool)
    return table.to_pandas(memory_pool=pool)


def read_manifest(path: str | Path, check_files: bool = True) -> pd.DataFrame:
    """Read a manifest; with ``check_files``, every image and mask must exist.

    Raises:
        ManifestError: naming the manifest and the first missing files or columns.
    """
    path = Path(path)
    if not path.exists():
        raise ManifestError(f"{path}: manifest not found (run `mentoring line generate` first)")
    df = _read_parquet(path)
    missing_cols = [c for c in COLUMNS if c not in df.columns]
    if missing_cols:
        raise ManifestError(f"{path}: manifest lacks columns {missing_cols}")
    df = with_optional_columns(df)
    if check_files:
        root = str(data_root(path))
        # os.path on strings: a Path per file interns its parts (a table that stays as large)
        missing = [
            os.path.join(root, p)
            for col in ("path", "mask_path")
            for p in df[col]
            if p and not os.path.exists(os.path.join(root, p))
        ]
        if missing:
            more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
            raise ManifestError(
                f"{path}: {len(missing)} referenced file(s) missing: {missing[:5]}{more}"
            )
    return df


def select(df: pd.DataFrame, domain: str, split: str) -> pd.DataFrame:
    """Rows of one domain and split, in image_id order."""
    return df[(df["domain"] == domain) & (df["split"] == split)].sort_values("image_id")


def verify_files(
    df: pd.DataFrame,
    manifest: str | Path,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Check every image (``sha256``) and mask (``mask_sha256``, where set) against the files
    under the manifest's data root; return the number of files checked.

    ``progress(done, total)`` is called every 1,000 rows and at the end.

    Raises:
        ManifestError: naming the manifest, how many files are missing or differ, and the
            first five of each with the image id (nothing is changed on disk).
    """
    root = data_root(manifest)
    df = with_optional_columns(df)
    missing: list[str] = []
    differ: list[str] = []
    checked = 0
    cols = ("image_id", "path", "sha256", "mask_path", "mask_sha256")
    total = len(df)
    rows = df[list(cols)].itertuples(index=False, name=None)
    for i, (image_id, path, sha, mask_path, mask_sha) in enumerate(rows, 1):
        for rel, want in ((path, sha), (mask_path, mask_sha)):
            if not rel or not want:
                continue
            # a plain string: a Path per file interns its parts (memory growing with the line)
            file = os.path.join(root, rel)
            try:
                got = sha256_file(file)
            except FileNotFoundError:
                missing.append(f"{image_id}: {file}")
                continue
            checked += 1
            if got != want:
                differ.append(f"{image_id}: {file} (sha256 {got[:12]}..., manifest {want[:12]}...)")
        if progress is not None and (i % 1000 == 0 or i == total):
            progress(i, total)
    if missing or differ:
        parts = [
            f"{len(bad)} {what}: {bad[:5]}"
            + (f" (and {len(bad) - 5} more)" if len(bad) > 5 else "")
            for what, bad in (("file(s) missing", missing), ("file(s) differ from it", differ))
            if bad
        ]
        raise ManifestError(
            f"{manifest}: the files do not match the manifest: {'; '.join(parts)}. "
            "Regenerate or re-ingest the line (`dvc repro line`, or `dvc checkout data/line`)."
        )
    return checked
