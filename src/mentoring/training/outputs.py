"""What every training stage writes and logs: the model file, its history, loss plot, metrics,
and its MLflow run. Shared by the baseline and the strategy stages (and any runner adapter)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from mentoring.config import Params
from mentoring.io import write_json, write_with
from mentoring.models.segmenter import Segmenter
from mentoring.models.store import save_model
from mentoring.tracking import Tracker
from mentoring.training.loop import EpochStats


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


#: loss parts drawn beside the total (L_S, L_W, the domain loss, the distillation loss)
LOSS_PARTS = {"l_s": "L_S", "l_w": "L_W", "l_d": "L_D (domain)", "l_k": "L_K (distillation)"}


def plot_history(history: list[EpochStats], path: Path, title: str) -> None:
    """The training loss per epoch and its parts; with DANN, the domain segmenter's accuracy
    (0.5 = chance) on a second axis."""
    epochs = [h.epoch for h in history]
    fig, ax = plt.subplots(figsize=(5.6, 3.6))
    ax.plot(epochs, [h.loss for h in history], marker="o", label="loss")
    for key, name in LOSS_PARTS.items():
        values = [h.parts.get(key, 0.0) for h in history]
        if history and all(key in h.parts and v > 0 for h, v in zip(history, values, strict=True)):
            ax.plot(epochs, values, lw=1, ls="--", label=name)
    ax.set(xlabel="epoch", ylabel="training loss", title=title, yscale="log")
    ax.grid(alpha=0.3)
    handles, names = ax.get_legend_handles_labels()
    acc = [h.parts.get("d_acc", 0.0) for h in history]
    if history and all("d_acc" in h.parts for h in history):
        ax2 = ax.twinx()
        ax2.plot(epochs, acc, color="black", lw=1, marker=".", label="domain accuracy")
        ax2.axhline(0.5, color="grey", lw=0.8, ls=":")
        ax2.set(ylabel="domain accuracy", ylim=(0.0, 1.0))
        h2, n2 = ax2.get_legend_handles_labels()
        handles, names = handles + h2, names + n2
    if len(handles) > 1:
        ax.legend(handles, names, fontsize=7)
    fig.tight_layout()
    write_with(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)


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
    metrics = training_metrics(name, history, extra)
    write_json(results_dir / "metrics.json", metrics)
    return metrics


def training_metrics(name: str, history: list[EpochStats], extra: dict[str, Any]) -> dict[str, Any]:
    """The final training metrics of a history (what ``metrics.json`` holds)."""
    return {
        "name": name,
        "final_loss": history[-1].loss,
        "final_parts": history[-1].parts,
        "epochs": len(history),
        "seconds": sum(h.seconds for h in history),
        "images_per_s": sum(h.images_per_s for h in history) / len(history),
        **extra,
    }
