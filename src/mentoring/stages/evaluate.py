"""Stage ``evaluate``: per-domain metrics and plots of a trained model.

Reads ``base``, ``line`` (classes, coverage), ``model.stride`` and ``evaluate``; writes
``<results>/metrics.json`` (one entry per domain: the cell-level metrics with the defect level as
their ``defect`` block, see :mod:`mentoring.evaluation`), ``<results>/plots/pr_<domain>.png``
(cell level), ``<results>/plots/predictions_<domain>.png``, ``<results>/plots/levels.png`` (both
levels side by side), and ``<results>/validation.json`` (the metrics
suite: every rate in [0, 1], no NaN; a failure stops the stage).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mentoring.config import Params
from mentoring.evaluation import (
    plot_levels,
    plot_pr_curves_of,
    plot_predictions,
    score_domains,
    summary,
)
from mentoring.io import write_json
from mentoring.registry import open_model
from mentoring.runtime import setup_torch
from mentoring.tracking import Tracker
from mentoring.validation import validate_metrics


def run(
    params: Params,
    manifest: Path,
    model_path: Path | str,
    results_dir: Path,
    name: str = "model",
    track: bool = True,
) -> dict[str, Any]:
    """Evaluate ``model_path`` on each domain's evaluation split; return metrics per domain.

    With ``track``, the metrics and plots join the model's variant run in MLflow.
    """
    tracker = Tracker.open(params, manifest) if track else None  # fail before any work
    device = setup_torch(params.base)
    model, classes, _ = open_model(params, model_path, device, name)
    if classes != params.line.classes:
        raise ValueError(
            f"{model_path}: model classes {list(classes)} differ from "
            f"line.classes {list(params.line.classes)}"
        )
    cfg = params.evaluate
    metrics: dict[str, Any] = {"model": name, "domains": {}}
    for domain, scores in score_domains(params, manifest, model, device, cfg.n_examples):
        m = scores.metrics
        metrics["domains"][domain] = m
        plot_pr_curves_of(
            scores.cells,
            f"{name} · {domain} domain · cell mAP {m['map']:.3f} "
            f"(defect mAP {m['defect']['map']:.3f})",
            results_dir / "plots" / f"pr_{domain}.png",
        )
        if cfg.n_examples and scores.examples:
            idx, images, probs, targets = zip(*scores.examples, strict=True)
            plot_predictions(
                np.stack(images),
                np.stack(probs),
                np.stack(targets),
                classes,
                [scores.ids[i] for i in idx],
                cfg.threshold,
                f"{name} · {domain} domain",
                results_dir / "plots" / f"predictions_{domain}.png",
            )
    plot_levels(
        metrics["domains"], f"{name}: defect and cell level", results_dir / "plots/levels.png"
    )
    write_json(results_dir / "metrics.json", metrics)
    # every rate in [0, 1], no NaN: a broken evaluation must not reach the promotion gate
    validate_metrics(params, metrics, results_dir / "validation.json")
    if tracker is not None:
        run_id = tracker.variant_run(name)
        tracker.log_params(run_id, {"evaluate": cfg.model_dump(mode="json")})
        tracker.log_metrics(
            run_id,
            {d: summary(m) for d, m in metrics["domains"].items()},
        )
        tracker.log_artifacts(
            run_id,
            [results_dir / "metrics.json", *sorted((results_dir / "plots").glob("*.png"))],
            "evaluation",
        )
    return metrics


def main() -> None:
    """Command-line entry: the same as `mentoring evaluate` with these arguments."""
    import sys

    from mentoring.cli import app

    app(["evaluate", *sys.argv[1:]])


if __name__ == "__main__":
    main()
