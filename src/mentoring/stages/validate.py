"""Stage ``validate``: the great-expectations suite of the image manifest.

Reads ``line`` (domains, splits, image size, classes) and ``validate`` (defect-rate bands,
examples per failure); writes ``<results>/manifest.json`` (the full results, pass or fail) and
``<results>/metrics.json``, then fails with a readable report when any expectation failed, so no
later stage trains on a broken manifest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mentoring.config import Params
from mentoring.data.manifest import read_manifest
from mentoring.io import write_json
from mentoring.validation import ValidationError, check_manifest


def run(params: Params, manifest: Path, results_dir: Path) -> dict[str, Any]:
    """Validate ``manifest``; return (and write) the counts of evaluated and failed expectations.

    Raises:
        ValidationError: after writing both files, listing every failed expectation.
        ManifestError: the manifest is missing or lacks columns.
    """
    df = read_manifest(manifest, check_files=False)
    result = check_manifest(params, df)
    write_json(results_dir / "manifest.json", result.to_dict())
    metrics = {
        "n_images": len(df),
        "n_expectations": result.n_expectations,
        "n_failed": result.n_failed,
        "success": result.success,
    }
    write_json(results_dir / "metrics.json", metrics)
    if not result.success:
        raise ValidationError(result, results_dir / "manifest.json")
    return metrics


def main() -> None:
    """Command-line entry: the same as `mentoring validate` with these arguments."""
    import sys

    from mentoring.cli import app

    app(["validate", *sys.argv[1:]])


if __name__ == "__main__":
    main()
