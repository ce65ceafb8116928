"""Stage ``report``: the paper's Table 1 from this pipeline run's evaluations.

Reads ``base.seed``, ``line`` and ``model.stride`` (t-SNE features) and ``train.strategies``;
reads the baseline's and every strategy's evaluation ``metrics.json`` and, for the t-SNE figure,
the ``scratch`` and ``scratch+dann`` models when they were trained. Writes ``table1.json``,
``table1.md``, ``plots/variants.png`` and ``plots/tsne.png`` under ``<out>`` (the layout of
``mentoring experiment table1``, one seed) and attaches them to the pipeline's parent run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mentoring.config import Params
from mentoring.reporting import KEYS, plot_tsne, report
from mentoring.tracking import Tracker

#: the models compared in the t-SNE figure (without and with DANN)
TSNE_MODELS = ("scratch", "scratch+dann")


def run(
    params: Params,
    manifest: Path,
    baseline_eval: Path,
    eval_results: Path,
    models_dir: Path,
    out: Path,
    track: bool = True,
) -> dict[str, Any]:
    """Aggregate the evaluations into Table 1; return the aggregate."""
    tracker = Tracker.open(params, manifest) if track else None
    evals: dict[str, dict[str, Any]] = {}
    for name, path in [
        ("baseline", baseline_eval / "metrics.json"),
        *[(s, eval_results / s / "metrics.json") for s in params.train.strategies],
    ]:
        if not path.exists():
            raise FileNotFoundError(f"{path}: evaluation of {name!r} not found (run `evaluate`)")
        evals[name] = json.loads(path.read_text())
    tsne = {m: models_dir / f"{m}.pt" for m in TSNE_MODELS if (models_dir / f"{m}.pt").exists()}
    sep = (
        plot_tsne(tsne, params, manifest, out / "plots" / "tsne.png", seed=params.base.seed)
        if tsne
        else None
    )
    result = report({params.base.seed: evals}, out, sep)
    if tracker is not None:
        parent = tracker.parent_run_id
        tracker.log_artifacts(
            parent,
            [out / "table1.md", out / "table1.json", *sorted((out / "plots").glob("*.png"))],
            "report",
        )
        tracker.log_metrics(
            parent,
            {v: {k: r[k]["mean"] for k in KEYS if k in r} for v, r in result["variants"].items()},
        )
    return result


def main() -> None:
    """Command-line entry: the same as `mentoring report` with these arguments."""
    import sys

    from mentoring.cli import app

    app(["report", *sys.argv[1:]])


if __name__ == "__main__":
    main()
