"""Stage ``line``: render the synthetic production line and its contact sheet.

Reads ``base.profile`` and ``line`` (``line.seed`` picks the line; ``line.source: folder``
ingests ``line.ingest_dir`` instead, ``line.source: s3`` the same layout under ``line.s3.uri``,
see :mod:`mentoring.line.ingest`; ``line.source: dvc`` reads
the line of a DVC-versioned repository at one revision, ``line.dvc``, see
:mod:`mentoring.data.versioned`); writes ``<data>/line/``, ``<data>/manifests/line.parquet``,
``<results>/metrics.json`` and ``<results>/plots/preview.png``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mentoring.config import Params
from mentoring.data.ingest import BatchReport
from mentoring.data.manifest import read_manifest
from mentoring.data.versioned import fetch_line
from mentoring.io import writable_dir, write_json
from mentoring.line.generate import generate_line
from mentoring.line.ingest import Quarantined, ingest_line
from mentoring.line.preview import contact_sheet


def run(
    params: Params,
    data_dir: Path,
    results_dir: Path,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Generate (or ingest) the line; return (and write) counts and defect rates per split.

    With ``line.source: folder | s3``, ``metrics["ingest"]`` has each split's reconciled counts and
    ``metrics["quarantined"]`` lists the files that could not be
    used, with their reasons (also in ``<data>/quarantine/report.json``). With ``line.source:
    dvc``, ``metrics["data_version"]`` is ``{repo, rev, commit, path}``: the full commit sha the
    revision resolved to is the data's version.
    """
    writable_dir(data_dir)  # a volume this user cannot write: say so before any work
    quarantined: list[Quarantined] = []
    reports: list[BatchReport] = []
    data_version: dict[str, str] | None = None
    if params.line.source in ("folder", "s3"):
        source = params.line.ingest_dir if params.line.source == "folder" else params.line.s3.uri
        manifest, quarantined, reports = ingest_line(params, source, data_dir, progress=progress)
    elif params.line.source == "dvc":
        src = params.line.dvc
        manifest, info = fetch_line(src.repo, src.rev, src.path, data_dir, progress=progress)
        data_version = {k: info[k] for k in ("repo", "rev", "commit", "path")}
    else:
        manifest = generate_line(params, data_dir, progress=progress)
    df = read_manifest(manifest, check_files=False)
    metrics: dict[str, Any] = {
        "n_images": len(df),
        "source": params.line.source,
        "profile": params.base.profile,
        "n_quarantined": len(quarantined),
        "quarantined": [asdict(q) for q in quarantined],
        "splits": {},
    }
    if reports:
        metrics["ingest"] = {f"{r.domain}/{r.split}": r.to_dict() for r in reports}
        metrics["resize"] = params.line.resize
    if data_version is not None:
        metrics["data_version"] = data_version
    for (domain, split), sub in df.groupby(["domain", "split"], sort=True):
        metrics["splits"][f"{domain}/{split}"] = {
            "n_images": len(sub),
            "defect_rate": float((sub["defect_classes"] != "").mean()),
            "nuisances_per_image": float(sub["n_nuisances"].mean()),
        }
    write_json(results_dir / "metrics.json", metrics)
    contact_sheet(
        manifest, results_dir / "plots" / "preview.png", params.line.classes, seed=params.line.seed
    )
    return metrics


def main() -> None:
    """Command-line entry: the same as `mentoring line run` with these arguments."""
    import sys

    from mentoring.cli import app

    app(["line", "run", *sys.argv[1:]])


if __name__ == "__main__":
    main()
