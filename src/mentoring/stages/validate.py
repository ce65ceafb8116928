"""Stage ``validate``: the great-expectations suites of the image manifest and of its images.

Reads ``line`` (domains, splits, image size, channels, classes) and ``validate`` (defect-rate
bands, drift reference and tolerance, examples per failure) and the manifest's images, whose
bytes it checks against the manifest's ``sha256`` and ``mask_sha256`` (so that a stage reading
the images through the manifest reads what the manifest says); writes, under ``<results>/``:

- ``manifest.json``: the manifest suite's full results (pass or fail);
- ``drift.json``: the acquisition-drift figures of every (domain, split) against
  ``validate.drift_reference`` and the suite's full results (see
  :class:`~mentoring.validation.DriftReport`);
- ``data_docs/index.html``: great-expectations Data Docs of both;
- ``metrics.json``: counts, success, and which (domain, split) drifted.

It fails with a readable report when a critical expectation failed, so no later stage trains on
a broken manifest (drift is then not measured), and with a :class:`ManifestError` naming the
files when an image or mask is missing or differs from its checksum (before writing anything).
A drift is a warning, logged (logger ``mentoring.stages.validate``, level WARNING: on stderr by
default) with the figures, never a failure.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from mentoring.config import Params
from mentoring.data.manifest import data_root, read_manifest, verify_files
from mentoring.io import write_json
from mentoring.runtime import progress_bar
from mentoring.validation import (
    DriftReport,
    ValidationError,
    check_manifest,
    manifest_drift,
    write_data_docs,
)

log = logging.getLogger(__name__)


def run(
    params: Params, manifest: Path, results_dir: Path, show_progress: bool = False
) -> dict[str, Any]:
    """Validate ``manifest`` and its images' acquisition; return (and write) the counts.

    Returns:
        ``n_images``, ``n_files_verified`` (images and masks whose sha256 matched; 0 when the
        suite failed), ``n_expectations`` (both suites), ``n_failed``, ``n_warnings``,
        ``success``, ``n_drifted`` and ``drift`` (``<domain>/<split>`` -> drifted from the
        reference).

    Raises:
        ValidationError: after writing every file, listing every failed expectation.
        ManifestError: the manifest is missing or lacks columns, or files are missing or differ
            from their checksums (nothing written).
        ImageError: an image of the manifest cannot be read.
    """
    df = read_manifest(manifest, check_files=False)
    result = check_manifest(params, df)
    verified = 0
    if result.success:  # a valid manifest: its checksums are well-formed
        with progress_bar(show_progress, "checksums", len(df)) as advance:
            seen = [0]

            def tick(done: int, _total: int) -> None:
                advance(done - seen[0])
                seen[0] = done

            verified = verify_files(df, manifest, progress=tick)
        drift = manifest_drift(params, df, data_root(manifest))
    else:
        drift = DriftReport.not_measured(params, "the manifest failed its suite")
    write_json(results_dir / "manifest.json", result.to_dict())
    write_json(results_dir / "drift.json", drift.to_dict())
    suites = [result, *([drift.result] if drift.result is not None else [])]
    write_data_docs(suites, results_dir / "data_docs")
    metrics = {
        "n_images": len(df),
        "n_files_verified": verified,
        "n_expectations": sum(s.n_expectations for s in suites),
        "n_failed": result.n_failed,
        "n_warnings": sum(s.n_warnings for s in suites),
        "success": result.success,
        "n_drifted": len(drift.drifted),  # a number, for `dvc metrics` and Kubeflow's metrics
        "drift": {name: b["drifted"] for name, b in drift.batches.items()},
    }
    write_json(results_dir / "metrics.json", metrics)
    if not result.success:
        raise ValidationError(result, results_dir / "manifest.json")
    if drift.drifted:
        log.warning(drift.summary())
    return metrics


def main() -> None:
    """Command-line entry: the same as `mentoring validate` with these arguments."""
    import sys

    from mentoring.cli import app

    app(["validate", *sys.argv[1:]])


if __name__ == "__main__":
    main()
