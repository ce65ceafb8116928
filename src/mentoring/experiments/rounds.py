"""Multi-round mentoring: the deployed model mines, operators answer, a new model is promoted
only through the gate, and the next round mines with the champion.

Round r (1-based), per seed:

1. the champion (the baseline in round 1) mines the new pool;
2. what operators answered in earlier rounds is left out (:func:`unmentored`: areas whose cells
   are all annotated on their class, images flagged healthy), then ``mine.budget`` (the
   operators' images per round) keeps the best-ranked images of the rest;
3. the simulated operator answers the rest; its labels join the earlier rounds'
   (:func:`merge_labels`, the newer round wins where both annotated);
4. ``strategy`` trains on every round's labels so far, with the champion as "the baseline"
   (``transfer`` starts from it, ``omnia`` reads its confident background);
5. the candidate is evaluated and goes through the promotion gate (``promotion.*``, at
   ``promotion.gate_level``) against the champion: promoted, it mines round r + 1.

A refused candidate stays off the line, but when the champion has nothing left for operators
(every area it detects is answered: with ``mine.budget: null`` round 1 takes them all), round
r + 1 is mined by the refused candidate instead, as a model run in shadow mode is: its detections
are what the next training must correct. Each round records which model mined it.

The curve is new-domain mAP (defect and cell level) against the cumulative number of operator
verdicts (area verdicts + images flagged healthy).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from mentoring.config import Params
from mentoring.experiments.rows import seed_baseline, seed_dir


def verdicts(mentor_metrics: dict[str, Any]) -> int:
    """Operator decisions of one round: areas confirmed or infirmed, images flagged healthy."""
    return int(
        mentor_metrics["n_confirmed"]
        + mentor_metrics["n_infirmed"]
        + mentor_metrics["n_healthy_images"]
        + mentor_metrics.get("n_drawn", 0)
    )


def run_rounds(
    params: Params,
    manifest: Path,
    workdir: Path,
    strategy: str,
    rounds: int,
    log: Callable[[str], None] = print,
    show_progress: bool = False,
) -> dict[str, Any]:
    """Every round of ``base.seed``; returns the points of the curve and each round's record."""
    from mentoring.feedback.partial import PartialLabels, merge_labels, unmentored
    from mentoring.feedback.schema import read_tasks, write_tasks
    from mentoring.registry import decide
    from mentoring.stages import evaluate, mentor, mine, train
    from mentoring.stages.register import maps

    d = seed_dir(workdir, params.base.seed)
    baseline, champion_eval = seed_baseline(params, manifest, d, show_progress)
    level = params.promotion.gate_level
    budget = params.mine.budget
    unbudgeted = params.model_copy(update={"mine": params.mine.model_copy(update={"budget": None})})
    champion, name, total = baseline, "baseline", 0
    points = [{"round": 0, "verdicts": 0, "evaluation": champion_eval, "promoted": True}]
    labels: PartialLabels | None = None
    root = d / f"rounds/{strategy}"
    refused: tuple[Path, str] | None = None  # the last round's candidate, when the gate refused it
    for r in range(1, rounds + 1):
        rd = root / f"round_{r}"
        miners = [(champion, name)] + ([refused] if refused is not None else [])
        for i, (miner, miner_name) in enumerate(miners):
            # the budget applies to what is left once answered areas are out, best first
            mined = mine.run(
                unbudgeted,
                manifest,
                miner,
                rd / "mining/all_tasks.json",
                rd / "mine",
                model_name=miner_name,
            )
            tasks = read_tasks(rd / "mining/all_tasks.json")
            left_out: dict[str, int] = {}
            if labels is not None:
                tasks, left_out = unmentored(tasks, labels)
            if budget is not None:
                tasks = tasks.model_copy(update={"images": tasks.images[:budget]})
            if tasks.images:
                break
            if i == 0 and refused is not None:
                log(
                    f"seed {params.base.seed}: round {r}: the champion ({name}) has nothing left "
                    f"to mentor; the refused {refused[1]} mines in shadow mode"
                )
        write_tasks(rd / "mining/tasks.json", tasks, tasks.images)
        if not tasks.images:
            log(f"seed {params.base.seed}: round {r}: nothing left to mentor; stopping")
            break
        mentored = mentor.run(
            params,
            manifest,
            rd / "mining/tasks.json",
            rd / "feedback",
            rd / "feedback/partial_labels.npz",
            rd / "mentor",
        )
        total += verdicts(mentored)
        new = PartialLabels.load(rd / "feedback/partial_labels.npz")
        labels = new if labels is None else merge_labels(labels, new)
        labels.save(rd / "labels_so_far.npz")
        model = rd / "model.pt"
        train.run(
            params,
            strategy,
            manifest,
            rd / "labels_so_far.npz",
            champion,
            model,
            rd / "train",
            checkpoint=rd / "checkpoint.pt",
            show_progress=show_progress,
            track=False,
        )
        ev = evaluate.run(params, manifest, model, rd / "eval", f"round-{r}", track=False)
        decision = decide(
            maps(ev, level),
            maps(champion_eval, level),
            params.promotion.min_gain,
            params.promotion.max_original_drop,
            level,
        )
        if decision.promote:
            champion, champion_eval, name, refused = model, ev, f"round-{r}", None
        else:
            refused = (model, f"round-{r}")
        points.append(
            {
                "round": r,
                "mined_by": miner_name,
                "verdicts": total,
                "evaluation": ev,
                "promoted": decision.promote,
                "reasons": decision.reasons,
                "mine": mined,
                "mentor": mentored,
                "left_out": left_out,
                "n_images_mentored": len(labels.ids),
            }
        )
        m = ev["domains"]
        log(
            f"seed {params.base.seed}: round {r}: {total} verdicts, defect mAP new "
            f"{m['new']['defect']['map']:.3f} original {m['original']['defect']['map']:.3f}"
            f" -> {'promoted' if decision.promote else 'refused'}"
        )
    return {"strategy": strategy, "points": points}
