"""Image manifests: one row per image, stored as parquet.

Columns (see :data:`COLUMNS`): ``image_id`` (unique), ``path`` and ``mask_path`` (relative to the
data root, the folder that holds ``line/`` and ``manifests/``), ``domain``, ``split``,
``part_ref``, ``width``, ``height``, ``channels``, ``sha256`` (of the image file),
``defect_classes`` (comma-separated classes present in the pixel mask, "" when healthy),
``n_defects`` and ``n_nuisances`` (what the generator drew; 0 for ingested data).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mentoring.io import write_with

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
    df = df.sort_values("image_id").reset_index(drop=True)
    write_with(path, lambda tmp: df.to_parquet(tmp, index=False))


def read_manifest(path: str | Path, check_files: bool = True) -> pd.DataFrame:
    """Read a manifest; with ``check_files``, every image and mask must exist.

    Raises:
        ManifestError: naming the manifest and the first missing files or columns.
    """
    path = Path(path)
    if not path.exists():
        raise ManifestError(f"{path}: manifest not found (run `mentoring line generate` first)")
    df = pd.read_parquet(path)
    missing_cols = [c for c in COLUMNS if c not in df.columns]
    if missing_cols:
        raise ManifestError(f"{path}: manifest lacks columns {missing_cols}")
    if check_files:
        root = data_root(path)
        missing = [
            str(root / p)
            for col in ("path", "mask_path")
            for p in df[col]
            if p and not (root / p).exists()
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
