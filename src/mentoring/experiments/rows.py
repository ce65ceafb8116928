"""Experiment rows: a strategy plus parameter overrides, trained and evaluated over seeds.

A row is one line of a results table: ``name`` (unique, used for file names), ``strategy`` (as in
``train.strategies``), ``set`` (dotted ``train.*``, ``mine.*`` or ``mentor.*`` overrides) and an
optional ``label``. Rows read from YAML::

    rows:
      - name: scratch-exclusive
        strategy: scratch
        set: {train.confirm_exclusive: true}
        label: "w/ new data, confirmation = other classes healthy"

Per seed, every row shares the seed's baseline; rows with the same ``mine.*``/``mentor.*``
overrides share one mining and one simulated operator. Each training keeps its checkpoint (keyed
by a fingerprint of everything it reads), so re-running an experiment, or another experiment in
the same work folder, trains only what changed.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mentoring.config import ConfigError, Params, parse_strategy, with_overrides

#: the sections a row may override (the baseline and the line stay the seed's)
ROW_SECTIONS = ("train", "mine", "mentor")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


@dataclass(frozen=True)
class Row:
    name: str
    strategy: str
    set: dict[str, Any] = field(default_factory=dict)
    label: str | None = None

    def params(self, base: Params) -> Params:
        return with_overrides(base, self.set, source=f"row {self.name!r}") if self.set else base

    def data_key(self) -> str:
        """Which mining + operator the row needs: ``default``, or a hash of its overrides."""
        data = {k: v for k, v in self.set.items() if not k.startswith("train.")}
        if not data:
            return "default"
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:10]


def check_rows(rows: list[Row], source: str = "rows") -> list[Row]:
    """Validate names (unique, file-safe), strategies and override sections."""
    seen: set[str] = set()
    problems = []
    for i, r in enumerate(rows):
        where = f"{source}: row {i + 1} ({r.name!r})"
        if not _NAME.match(r.name) or r.name == "baseline":
            problems.append(f"{where}: a name of letters, digits, '_', '.', '+', '-' is needed")
        if r.name in seen:
            problems.append(f"{where}: the name is used twice")
        seen.add(r.name)
        try:
            parse_strategy(r.strategy)
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
        for key in r.set:
            if key.split(".")[0] not in ROW_SECTIONS or "." not in key:
                problems.append(
                    f"{where}: cannot set {key!r}; rows set {', '.join(ROW_SECTIONS)} keys only "
                    "(the baseline and the line are shared by every row of a seed)"
                )
    if problems:
        raise ConfigError("\n".join(problems))
    return rows


def load_rows(path: Path) -> list[Row]:
    """Rows from a YAML file (``rows:`` list of mappings), checked."""
    if not path.exists():
        raise ConfigError(f"{path}: rows file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    items = data.get("rows") if isinstance(data, dict) else None
    if not isinstance(items, list) or not items:
        raise ConfigError(f"{path}: expected a non-empty 'rows:' list")
    rows = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or "name" not in item:
            raise ConfigError(f"{path}: row {i + 1}: expected a mapping with a 'name'")
        unknown = sorted(set(item) - {"name", "strategy", "set", "label"})
        if unknown:
            raise ConfigError(f"{path}: row {i + 1}: unknown key(s) {unknown}")
        overrides = item.get("set") or {}
        if not isinstance(overrides, dict):
            raise ConfigError(f"{path}: row {i + 1}: 'set' must be a mapping of dotted keys")
        name = str(item["name"])
        rows.append(Row(name, str(item.get("strategy", name)), dict(overrides), item.get("label")))
    return check_rows(rows, str(path))


def strategy_rows(params: Params) -> list[Row]:
    """One row per strategy of ``train.strategies``, named after it."""
    return [Row(s, s) for s in params.train.strategies]


def seed_dir(workdir: Path, seed: int) -> Path:
    return workdir / f"seed_{seed}"


def _truth(params: Params, manifest: Path, ids: list[str]) -> dict[str, Any]:
    from mentoring.data.dataset import load_split, rows_by_id
    from mentoring.data.manifest import data_root, read_manifest

    df = rows_by_id(read_manifest(manifest, check_files=False), ids, str(manifest))
    split = load_split(
        df,
        data_root(manifest),
        tuple(params.line.classes),
        params.model.stride,
        params.line.cell_min_coverage,
    )
    return dict(zip(split.ids, split.targets.numpy(), strict=True))


def row_label_noise(
    params: Params, row: Row, manifest: Path, labels: Path, baseline: Path
) -> dict[str, float] | None:
    """The label noise (:func:`mentoring.feedback.quality.label_noise`) of what ``row`` trains
    on: the operator's partial labels after the row's strategy and options. None for oracles."""
    import numpy as np

    from mentoring.feedback.quality import label_noise
    from mentoring.models.store import load_model
    from mentoring.runtime import setup_torch
    from mentoring.stages.train import new_data

    if "oracle" in parse_strategy(row.strategy):
        return None
    device = setup_torch(params.base)
    model, _ = load_model(baseline, device)
    new = new_data(params, row.strategy, manifest, labels, model, device)
    truth = _truth(params, manifest, new.ids)
    t = np.stack([truth[i] for i in new.ids])
    return label_noise(new.targets.numpy(), new.annotated.numpy(), t)


def seed_baseline(
    params: Params, manifest: Path, d: Path, show_progress: bool = False
) -> tuple[Path, dict[str, Any]]:
    """The seed's baseline (trained once, resumed from its checkpoint) and its evaluation."""
    from mentoring.stages import evaluate, train_baseline

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
    return baseline, evaluate.run(
        params, manifest, baseline, d / "eval/baseline", "baseline", track=False
    )


def run_seed(
    params: Params,
    manifest: Path,
    workdir: Path,
    rows: list[Row] | None = None,
    log: Callable[[str], None] = print,
    show_progress: bool = False,
    noise: bool = False,
) -> dict[str, Any]:
    """Baseline, mining, mentoring, every row's training and evaluation for ``base.seed``.

    Returns ``evaluations`` (variant -> evaluation, ``baseline`` first), ``mine`` and ``mentor``
    (the default mining's metrics), ``training`` (row -> training metrics), ``histories`` (row ->
    per-epoch history), ``data`` (mining/operator key -> their metrics), ``row_data`` (row ->
    its key) and, with ``noise``,
    ``label_noise`` (row -> label noise by kind).
    """
    from mentoring.stages import evaluate, mentor, mine, train

    rows = check_rows(rows if rows is not None else strategy_rows(params))
    d = seed_dir(workdir, params.base.seed)
    baseline, baseline_eval = seed_baseline(params, manifest, d, show_progress)
    evals = {"baseline": baseline_eval}
    log(f"seed {params.base.seed}: baseline done")
    out: dict[str, Any] = {
        "evaluations": evals,
        "training": {},
        "histories": {},
        "label_noise": {},
        "data": {},
        "row_data": {},
    }
    labels_of: dict[str, Path] = {}
    for row in rows:
        p = row.params(params)
        key = row.data_key()
        if key not in labels_of:
            sub = "" if key == "default" else f"-{key}"
            tasks = d / f"mining{sub}/tasks.json"
            mined = mine.run(p, manifest, baseline, tasks, d / f"mine{sub}")
            labels_of[key] = d / f"feedback{sub}/partial_labels.npz"
            mentored = mentor.run(
                p, manifest, tasks, d / f"feedback{sub}", labels_of[key], d / f"mentor{sub}"
            )
            if key == "default":
                out["mine"], out["mentor"] = mined, mentored
            out["data"][key] = {"mine": mined, "mentor": mentored}
        out["row_data"][row.name] = key
        model = d / f"models/{row.name}.pt"
        out["training"][row.name] = train.run(
            p,
            row.strategy,
            manifest,
            labels_of[key],
            baseline,
            model,
            d / f"train/{row.name}",
            checkpoint=d / f"checkpoints/{row.name}.pt",
            show_progress=show_progress,
            track=False,
        )
        hist = d / f"train/{row.name}/history.json"
        out["histories"][row.name] = json.loads(hist.read_text()) if hist.exists() else []
        evals[row.name] = evaluate.run(
            p, manifest, model, d / f"eval/{row.name}", row.name, track=False
        )
        if noise:
            out["label_noise"][row.name] = row_label_noise(
                p, row, manifest, labels_of[key], baseline
            )
        m = evals[row.name]["domains"]
        log(
            f"seed {params.base.seed}: {row.name}: defect mAP new {m['new']['defect']['map']:.3f} "
            f"original {m['original']['defect']['map']:.3f}, new precision "
            f"{m['new']['defect']['precision']:.3f}; cell mAP new {m['new']['map']:.3f} "
            f"original {m['original']['map']:.3f}"
        )
    return out
