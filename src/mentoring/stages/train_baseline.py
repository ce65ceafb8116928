"""Stage ``train_baseline``: train the deployed (baseline) segmenter on the original domain.

Reads ``base``, ``line`` (classes, coverage), ``model`` and ``train_baseline``; writes the model
file, ``<results>/metrics.json``, ``<results>/history.json`` and ``<results>/plots/loss.png``.
Resumes from ``<checkpoint>`` after a kill.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from mentoring.config import Params
from mentoring.data.batch import Batch, SingleSource
from mentoring.data.dataset import CellDataset
from mentoring.io import write_json, write_with
from mentoring.losses import supervised_bce
from mentoring.models.segmenter import Segmenter
from mentoring.models.store import save_model
from mentoring.runtime import seed_everything, setup_torch
from mentoring.tracking import Tracker
from mentoring.training.loop import EpochStats, fingerprint, tensor_digest, train


def model_arch(params: Params) -> dict[str, Any]:
    """Constructor arguments of the segmenter for these params."""
    return {
        "in_channels": params.line.channels,
        "n_classes": len(params.line.classes),
        "width": params.model.width,
        "depth": params.model.depth,
        "stride": params.model.stride,
        "context_stages": params.model.context_stages,
        "prior": params.model.prior,
    }


def plot_history(history: list[EpochStats], path: Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(5, 3.4))
    ax.plot([h.epoch for h in history], [h.loss for h in history], marker="o")
    ax.set(xlabel="epoch", ylabel="training loss", title=title, yscale="log")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    write_with(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)


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
    tracker = Tracker.open(params, manifest) if track else None
    device = setup_torch(params.base)
    line, cfg = params.line, params.train_baseline
    data = CellDataset.from_manifest(
        manifest, "original", "train", line.classes, params.model.stride, line.cell_min_coverage
    )
    seed_everything(params.base.seed)
    run_id = start_tracking(tracker, "baseline", params, {"train_baseline": cfg.model_dump()})
    arch = model_arch(params)
    model = Segmenter(**arch)
    fp = fingerprint(
        arch,
        cfg.model_dump(),
        params.base.seed,
        tensor_digest(data.split.images, data.split.targets),
    )
    source = SingleSource(data.split.images, data.split.targets, cfg.batch_size, cfg.augment)

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
    )
    metrics = write_outputs(
        "baseline",
        model,
        arch,
        line.classes,
        fp,
        history,
        model_out,
        results_dir,
        {"n_images": len(data)},
    )
    if tracker is not None and run_id is not None:
        log_training(tracker, run_id, params, model, history, results_dir, metrics, fp)
    return metrics


def start_tracking(
    tracker: Tracker | None, name: str, params: Params, section: dict[str, Any]
) -> str | None:
    """The variant run of ``name`` with its params logged; None without tracking."""
    if tracker is None:
        return None
    run_id = tracker.variant_run(name)
    tracker.log_params(
        run_id,
        {
            **section,
            "model": params.model.model_dump(mode="json"),
            "seed": params.base.seed,
            "profile": params.base.profile,
        },
    )
    return run_id


def epoch_callback(
    results_dir: Path, tracker: Tracker | None, run_id: str | None
) -> Callable[[list[EpochStats]], None]:
    """Per epoch: keep ``history.json`` current and, when tracking, log the epoch."""
    write = history_writer(results_dir)
    if tracker is None or run_id is None:
        return write
    log = tracker.epoch_logger(run_id)

    def both(history: list[EpochStats]) -> None:
        write(history)
        log(history)

    return both


def log_training(
    tracker: Tracker,
    run_id: str,
    params: Params,
    model: Segmenter,
    history: list[EpochStats],
    results_dir: Path,
    metrics: dict[str, Any],
    fp: str,
) -> dict[str, Any]:
    """Log final metrics, plots and the model; write ``<results>/mlflow.json`` (the lineage
    the ``register`` stage reads). Returns that record."""
    tracker.log_history(run_id, history)
    tracker.log_metrics(run_id, {"final": {k: v for k, v in metrics.items() if k != "epochs"}})
    tracker.log_artifacts(
        run_id,
        [
            results_dir / "metrics.json",
            results_dir / "history.json",
            results_dir / "plots/loss.png",
        ],
        "training",
    )
    record: dict[str, Any] = {
        "tracking_uri": tracker.uri,
        "experiment_id": tracker.experiment_id,
        "run_id": run_id,
        "fingerprint": fp,
        **tracker.lineage,
    }
    if params.tracking.log_models:
        line = params.line
        record |= tracker.log_model(
            run_id,
            model,
            line.classes,
            (line.channels, line.image_size, line.image_size),
            tags={"fingerprint": fp, "variant": metrics["name"]},
        )
    write_json(results_dir / "mlflow.json", record)
    return record


def history_writer(results_dir: Path) -> Callable[[list[EpochStats]], None]:
    """The per-epoch callback that keeps ``<results>/history.json`` current during training."""
    return lambda hist: write_json(results_dir / "history.json", [asdict(h) for h in hist])


def write_outputs(
    name: str,
    model: Segmenter,
    arch: dict[str, Any],
    classes: tuple[str, ...],
    fp: str,
    history: list[EpochStats],
    model_out: Path,
    results_dir: Path,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """Save a trained model, its history, loss plot and ``metrics.json``; return the metrics."""
    save_model(
        model_out,
        model,
        arch,
        classes,
        meta={"name": name, "fingerprint": fp, "epochs": len(history)},
    )
    history_writer(results_dir)(history)  # also when a finished run only resumed
    plot_history(history, results_dir / "plots" / "loss.png", f"{name} training loss")
    metrics = {
        "name": name,
        "final_loss": history[-1].loss,
        "final_parts": history[-1].parts,
        "epochs": len(history),
        "seconds": sum(h.seconds for h in history),
        "images_per_s": sum(h.images_per_s for h in history) / len(history),
        **extra,
    }
    write_json(results_dir / "metrics.json", metrics)
    return metrics


def main() -> None:
    """Command-line entry: the same as `mentoring train` with these arguments."""
    import sys

    from mentoring.cli import app

    app(["train", *sys.argv[1:]])


if __name__ == "__main__":
    main()
