"""Stage ``train_baseline``: train the deployed (baseline) segmenter on the original domain.

Reads ``base``, ``line`` (classes, coverage), ``model`` and ``train_baseline``; writes the model
file, ``<results>/metrics.json``, ``<results>/history.json`` and ``<results>/plots/loss.png``.
Resumes from ``<checkpoint>`` after a kill. Runs as one of ``torchrun``'s processes too
(``train_baseline.nproc`` > 1, :mod:`mentoring.training.distributed`): rank 0 alone writes and
logs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import torch

from mentoring.config import Params
from mentoring.data.batch import Batch, SingleSource
from mentoring.data.store import digest, labelled_split
from mentoring.losses import supervised_bce
from mentoring.models.segmenter import Segmenter
from mentoring.runtime import seed_everything, setup_torch
from mentoring.tracking import Tracker
from mentoring.training import distributed
from mentoring.training.loop import fingerprint, train
from mentoring.training.outputs import (
    epoch_callback,
    log_training,
    model_arch,
    start_tracking,
    training_metrics,
    write_outputs,
)


def run(
    params: Params,
    manifest: Path,
    model_out: Path,
    results_dir: Path,
    checkpoint: Path | None = None,
    show_progress: bool = True,
    track: bool = True,
) -> dict[str, Any]:
    """Train the baseline on ``original/train``; return final training metrics.

    With ``track``, the run is logged to MLflow (checked before training starts).
    """
    # under torchrun, rank 0 alone tracks and writes; every rank trains its share of each batch
    is_main = distributed.is_main()
    tracker = Tracker.open(params, manifest) if track and is_main else None
    with distributed.process_group(setup_torch(params.base)) as device:
        line, cfg = params.line, params.train_baseline
        _, images, targets = labelled_split(params, manifest, "original", "train", cfg.num_workers)
        seed_everything(params.base.seed)
        run_id = start_tracking(tracker, "baseline", params, {"train_baseline": cfg.model_dump()})
        arch = model_arch(params)
        model = Segmenter(**arch)
        fp = fingerprint(
            arch,
            cfg.model_dump(exclude={"nproc"}),  # any nproc trains the same model: resumable
            params.base.seed,
            digest(images, targets),
            # bf16 trains other weights; fp32 fingerprints stay those of earlier versions
            *([params.base.precision] if params.base.precision != "fp32" else []),
        )
        source = SingleSource(images, targets, cfg.batch_size, cfg.augment)

        def loss_fn(batch: Batch, _progress: float) -> tuple[torch.Tensor, dict[str, float]]:
            return supervised_bce(model(batch.images), batch.targets), {}

        history = train(
            model,
            source,
            loss_fn,
            cfg,
            params.base.seed,
            description="baseline",
            checkpoint=checkpoint,
            fingerprint_value=fp,
            device=device,
            show_progress=show_progress,
            on_epoch=epoch_callback(results_dir, tracker, run_id),
            precision=params.base.precision,
            channels_last=params.base.channels_last,
            compile=params.base.compile,
        )
        extra = {"n_images": len(images)}
        if not is_main:
            return training_metrics("baseline", history, extra)
        metrics = write_outputs(
            "baseline", model, arch, line.classes, fp, history, model_out, results_dir, extra
        )
        if tracker is not None and run_id is not None:
            log_training(tracker, run_id, params, model, history, results_dir, metrics, fp)
        return metrics


def main() -> None:
    """Command-line entry: the same as `mentoring train` with these arguments."""
    import sys

    from mentoring.cli import app

    app(["train", *sys.argv[1:]])


if __name__ == "__main__":
    main()
