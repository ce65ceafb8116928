"""Stage ``register``: register every trained model and run the promotion gate.

Reads ``tracking``, ``promotion``, ``train.strategies`` and what ``evaluate`` reads; reads each
model's ``mlflow.json`` (its logged model and lineage, written by the training stages) and its
evaluation ``metrics.json``. Then:

1. registers the baseline and every strategy but ``promotion.exclude`` as versions of
   ``tracking.registered_model`` (idempotent: same fingerprint, same version), tagged with their
   metrics and lineage;
2. with no champion yet, the baseline becomes champion;
3. picks the candidate (``promotion.candidate``: ``best`` = the highest new-domain mAP among the
   strategies whose original-domain mAP is within tolerance, or a strategy name) and marks it
   ``challenger``; every mAP here is of ``promotion.gate_level`` (``defect``, the default: the
   detected areas matched to defects, or ``cell``, see :mod:`mentoring.evaluation`);
4. evaluates the champion and the candidate, both loaded from the registry, on the same current
   evaluation sets, and promotes the candidate only if the gate (:func:`mentoring.registry.decide`)
   says so.

Writes ``<results>/decision.json`` (everything above, with reasons) and ``<results>/metrics.json``.
A refusal is a normal outcome, not an error.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mentoring.config import Params
from mentoring.evaluation import LEVELS, level, score_domains, summary
from mentoring.io import write_json
from mentoring.registry import Decision, Registry, RegistryError, decide
from mentoring.runtime import setup_torch
from mentoring.tracking import Tracker

#: per-domain evaluation keys copied onto version tags (cell level: ``<domain>_<key>``)
TAG_KEYS = ("map", "precision", "recall", "false_reject_rate", "escape_rate")
#: defect-level keys copied onto version tags (``<domain>_defect_<key>``)
DEFECT_TAG_KEYS = ("map", "precision", "recall", "false_alarms_per_image")


def _read(path: Path, what: str) -> dict[str, Any]:
    if not path.exists():
        raise FileNotFoundError(f"{path}: {what} not found")
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def variant_paths(
    name: str,
    train_results: Path,
    eval_results: Path,
    baseline_train: Path | None,
    baseline_eval: Path | None,
) -> tuple[Path, Path]:
    """(training results folder, evaluation results folder) of ``baseline`` or a strategy."""
    if name == "baseline" and baseline_train is not None and baseline_eval is not None:
        return baseline_train, baseline_eval
    return train_results / name, eval_results / name


def maps(evaluation: dict[str, Any], gate_level: str = "defect") -> dict[str, float]:
    """``{"original": mAP, "new": mAP}`` of an evaluation's ``domains`` at ``gate_level``."""
    return {d: float(level(m, gate_level)["map"]) for d, m in evaluation["domains"].items()}


def pick_candidate(
    evaluations: dict[str, dict[str, Any]],
    champion: dict[str, float],
    choice: str,
    max_original_drop: float,
    gate_level: str = "defect",
) -> str:
    """The strategy to put before the gate.

    ``best``: the top new-domain mAP among strategies that lose at most ``max_original_drop``
    original-domain mAP to the champion; when none does, the top new-domain mAP (the gate will
    refuse it, with its reasons).
    """
    if choice != "best":
        if choice not in evaluations:
            raise ValueError(
                f"promotion.candidate {choice!r} is not a registered strategy "
                f"({sorted(evaluations)})"
            )
        return choice
    if not evaluations:
        raise ValueError("no strategy to promote: train.strategies minus promotion.exclude")
    admissible = {
        s: ev
        for s, ev in evaluations.items()
        if champion["original"] - maps(ev, gate_level)["original"] <= max_original_drop
    }
    pool = admissible or evaluations
    return max(pool, key=lambda s: maps(pool[s], gate_level)["new"])


def run(
    params: Params,
    manifest: Path,
    baseline_train: Path | None,
    baseline_eval: Path | None,
    train_results: Path,
    eval_results: Path,
    results_dir: Path,
) -> dict[str, Any]:
    """Register, gate and maybe promote; return the decision record (also ``decision.json``).

    ``baseline_train`` / ``baseline_eval`` are None when this run trained no baseline (a
    retraining that starts from the registry's champion); there must then be a champion.
    """
    tracker = Tracker.open(params, manifest)  # checks the store before any work
    uri = tracker.uri
    gate = params.promotion
    lvl = gate.gate_level
    registry = Registry(uri, params.tracking.registered_model)
    champion_before = registry.champion()  # a broken registry stops us here, clearly

    # 1. register every model (the baseline first: it is the fallback champion)
    with_baseline = baseline_train is not None and baseline_eval is not None
    if champion_before is None and not with_baseline:
        raise RegistryError(
            f"{registry.name} has no champion and this run trained no baseline to make one"
        )
    strategies = [s for s in params.train.strategies if s not in gate.exclude]
    names = ["baseline", *strategies] if with_baseline else strategies
    evaluations: dict[str, dict[str, Any]] = {}
    versions: dict[str, str] = {}
    registered = []
    for name in names:
        tdir, edir = variant_paths(name, train_results, eval_results, baseline_train, baseline_eval)
        info = _read(tdir / "mlflow.json", f"tracking record of {name!r} (train it with tracking)")
        if "model_uri" not in info:
            raise ValueError(
                f"{tdir / 'mlflow.json'}: {name!r} was trained without logging its model "
                f"(tracking.log_models: false); nothing to register"
            )
        if info["tracking_uri"] != uri:
            raise ValueError(
                f"{tdir / 'mlflow.json'}: {name!r} was logged to {info['tracking_uri']}, "
                f"not to the current tracking store {uri}; retrain it or set "
                f"MLFLOW_TRACKING_URI back"
            )
        ev = _read(edir / "metrics.json", f"evaluation of {name!r}")
        evaluations[name] = ev
        tags: dict[str, Any] = {
            "variant": name,
            "fingerprint": info["fingerprint"],
            **{k: info[k] for k in ("git_commit", "params_sha256", "manifest_sha256")},
            "pipeline_key": info["pipeline_key"],
        }
        for domain, m in ev["domains"].items():
            tags |= {f"{domain}_{k}": f"{m[k]:.4f}" for k in TAG_KEYS}
            if "defect" in m:
                tags |= {f"{domain}_defect_{k}": f"{m['defect'][k]:.4f}" for k in DEFECT_TAG_KEYS}
        mv, created = registry.register(info["model_uri"], info["run_id"], tags)
        versions[name] = str(mv.version)
        registered.append({"variant": name, "version": str(mv.version), "created": created})

    # 2. the first model
    first: Decision | None = None
    if champion_before is None:  # with_baseline holds: checked above
        first = decide(
            maps(evaluations["baseline"], lvl), None, gate.min_gain, gate.max_original_drop, lvl
        )
        registry.promote(versions["baseline"], first.reasons[0], by="pipeline", decision=first)
    champion = registry.champion()
    assert champion is not None
    champion_version = str(champion.version)

    # 3. the candidate, and both scored on the current evaluation sets
    device = setup_torch(params.base)
    scores: dict[str, dict[str, Any]] = {}
    candidates = {n: evaluations[n] for n in names if n != "baseline"}
    champion_scores = _score(registry, champion_version, params, manifest, device)
    scores[champion_version] = champion_scores
    strategy = pick_candidate(
        candidates, maps(champion_scores, lvl), gate.candidate, gate.max_original_drop, lvl
    )
    candidate_version = versions[strategy]
    registry.set_challenger(candidate_version)
    if candidate_version == champion_version:
        decision = Decision(
            False,
            [f"candidate {strategy!r} is version {candidate_version}, already the champion"],
            maps(champion_scores, lvl),
            maps(champion_scores, lvl),
            gate.min_gain,
            gate.max_original_drop,
            extra={"level": lvl},
        )
    else:
        cand_scores = _score(registry, candidate_version, params, manifest, device)
        scores[candidate_version] = cand_scores
        decision = decide(
            maps(cand_scores, lvl),
            maps(champion_scores, lvl),
            gate.min_gain,
            gate.max_original_drop,
            lvl,
        )

    # 4. record, and promote when the gate says so
    now = datetime.now(UTC).replace(microsecond=0).isoformat()
    registry.set_tags(
        candidate_version,
        {
            "gate_decision": "promoted" if decision.promote else "refused",
            "gate_reasons": " | ".join(decision.reasons),
            "gate_at": now,
            "gate_champion_version": champion_version,
        },
    )
    if decision.promote:
        registry.promote(candidate_version, "promotion gate", by="pipeline", decision=decision)
    after = registry.aliases()
    record: dict[str, Any] = {
        "registered_model": registry.name,
        "tracking_uri": uri,
        "at": now,
        "registered": registered,
        "first_model": first.as_dict() if first else None,
        "candidate": {
            "variant": strategy,
            "version": candidate_version,
            "domains": scores.get(candidate_version, champion_scores)["domains"],
        },
        "champion": {
            "variant": champion.tags.get("variant"),
            "version": champion_version,
            "domains": champion_scores["domains"],
        },
        "decision": "promoted" if decision.promote else "refused",
        "reasons": decision.reasons,
        "gate": {
            "level": lvl,
            "min_gain": gate.min_gain,
            "max_original_drop": gate.max_original_drop,
        },
        "aliases": after,
    }
    write_json(results_dir / "decision.json", record)
    cm, km = maps(champion_scores, lvl), maps(record["candidate"], lvl)
    metrics: dict[str, Any] = {
        "promoted": int(decision.promote),
        "champion_version": int(after["champion"]),
        "candidate_version": int(candidate_version),
        "candidate_map_new": km["new"],
        "candidate_map_original": km["original"],
        "champion_map_new": cm["new"],
        "champion_map_original": cm["original"],
        "gain_new": km["new"] - cm["new"],
        "drop_original": cm["original"] - km["original"],
        "gate_level_defect": int(lvl == "defect"),  # 1: the mAPs above are defect level
    }
    # both levels, whichever decided
    for name in LEVELS:
        for who, sc in (("candidate", record["candidate"]), ("champion", champion_scores)):
            for d, v in maps(sc, name).items():
                metrics[f"{who}_{name}_map_{d}"] = v
    write_json(results_dir / "metrics.json", metrics)
    # attach the decision to this pipeline's parent run
    tracker.log_artifacts(tracker.parent_run_id, [results_dir / "decision.json"], "register")
    tracker.log_metrics(tracker.parent_run_id, {"register": metrics})
    return record


def _score(
    registry: Registry, version: str, params: Params, manifest: Path, device: str
) -> dict[str, Any]:
    """Per-domain metrics (both levels, without per-class detail) of a registry version."""
    model, classes = registry.load(version)
    if tuple(classes) != params.line.classes:
        raise RegistryError(
            f"{registry.name} version {version} predicts classes {classes}, not the line's "
            f"{list(params.line.classes)}: it cannot be compared on these evaluation sets"
        )
    return {
        "domains": {
            domain: summary(scores.metrics)
            for domain, scores in score_domains(params, manifest, model.to(device), device)
        }
    }


def main() -> None:
    """Command-line entry: the same as `mentoring register` with these arguments."""
    import sys

    from mentoring.cli import app

    app(["register", *sys.argv[1:]])


if __name__ == "__main__":
    main()
