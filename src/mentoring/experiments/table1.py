"""The paper's Table 1 on the synthetic line, over several seeds.

For each seed (``base.seed``; the line itself is fixed by ``line.seed``): train the baseline, mine
the new pool with it, let the simulated operator answer, train every strategy of
``train.strategies`` and evaluate everything per domain, at defect and cell level. The report
(:mod:`mentoring.reporting`) aggregates mean and standard deviation per variant and level.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from mentoring.config import Params


def seed_dir(workdir: Path, seed: int) -> Path:
    return workdir / f"seed_{seed}"


def run_seed(
    params: Params,
    manifest: Path,
    workdir: Path,
    log: Callable[[str], None] = print,
    show_progress: bool = False,
) -> dict[str, Any]:
    """Baseline, mining, mentoring, every strategy and their evaluations for ``base.seed``."""
    from mentoring.stages import evaluate, mentor, mine, train, train_baseline

    d = seed_dir(workdir, params.base.seed)
    baseline = d / "models/baseline.pt"
    train_baseline.run(
        params,
        manifest,
        baseline,
        d / "train/baseline",
        checkpoint=d / "checkpoints/baseline.pt",
        show_progress=show_progress,
        track=False,  # an experiment of its own: its results are the report's files
    )
    evals = {
        "baseline": evaluate.run(
            params, manifest, baseline, d / "eval/baseline", "baseline", track=False
        )
    }
    log(f"seed {params.base.seed}: baseline done")
    mined = mine.run(params, manifest, baseline, d / "mining/tasks.json", d / "mine")
    mentored = mentor.run(
        params,
        manifest,
        d / "mining/tasks.json",
        d / "feedback",
        d / "feedback/partial_labels.npz",
        d / "mentor",
    )
    for strategy in params.train.strategies:
        model = d / f"models/{strategy}.pt"
        train.run(
            params,
            strategy,
            manifest,
            d / "feedback/partial_labels.npz",
            baseline,
            model,
            d / f"train/{strategy}",
            checkpoint=d / f"checkpoints/{strategy}.pt",
            show_progress=show_progress,
            track=False,
        )
        evals[strategy] = evaluate.run(
            params, manifest, model, d / f"eval/{strategy}", strategy, track=False
        )
        m = evals[strategy]["domains"]["new"]
        log(
            f"seed {params.base.seed}: {strategy}: new defect mAP {m['defect']['map']:.3f}, "
            f"precision {m['defect']['precision']:.3f}; cell mAP {m['map']:.3f}, "
            f"precision {m['precision']:.3f}"
        )
    return {"evaluations": evals, "mine": mined, "mentor": mentored}
