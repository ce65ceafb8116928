"""The stage declaration (src/mentoring/pipeline_spec.py) is the one source: dvc.yaml and the CLI
must say the same thing.

dvc.yaml lists, per stage, the params keys it reads and its deps/outs/metrics/plots; the CLI's
option defaults are the stages' default paths. Both are checked against the declaration here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from typer.testing import CliRunner

from mentoring import pipeline_spec as spec
from mentoring.cli import app
from mentoring.config import Params
from mentoring.pipeline_spec import STAGES, StageSpec

REPO_ROOT = Path(__file__).resolve().parents[2]
DVC = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]
#: inputs no stage writes: operators' feedback files
EXTERNAL = {"data/feedback"}
#: CLI command -> the stage whose paths are its option defaults
COMMANDS = {
    "line run": "line",
    "line generate": "line",
    "line ingest": "line",
    "line preview": "line",
    "validate": "validate",
    "train": "train",  # --strategy baseline: train_baseline's paths (templated defaults)
    "evaluate": "evaluate_baseline",
    "mine": "mine",
    "mentor run": "mentor",
    "mentor simulate": "mentor",
    "mentor import": "mentor",
    "report": "report",
    "register": "register",
}
#: options whose flag is not their role's name
FLAG_ROLES = {("line preview", "out"): "preview"}


def _dvc(template: str) -> str:
    """A declared path as a dvc.yaml matrix stage writes it."""
    return template.replace("{strategy}", "${item.strategy}")


def _listed(stage: dict[str, Any], *keys: str) -> list[str]:
    """The paths of a dvc.yaml stage's deps/outs/metrics/plots (``- path`` or ``- path: {...}``)."""
    return [
        e if isinstance(e, str) else next(iter(e)) for key in keys for e in stage.get(key) or []
    ]


def _covers(path: str, listed: list[str]) -> bool:
    """``path`` is listed, or is a folder holding something listed."""
    return any(x == path or x.startswith(path.rstrip("/") + "/") for x in listed)


def _within(path: str, folders: list[str]) -> bool:
    return any(path == f or path.startswith(f + "/") for f in folders)


def test_dvc_stages_are_the_declared_stages_in_order() -> None:
    assert list(DVC) == list(STAGES)
    assert all(s.name == name for name, s in STAGES.items())


@pytest.mark.parametrize("name", list(STAGES))
def test_dvc_params_are_the_declared_params(name: str) -> None:
    assert DVC[name]["params"] == list(STAGES[name].params)


@pytest.mark.parametrize("name", list(STAGES))
def test_declared_params_exist(name: str) -> None:
    defaults = Params()
    for key in STAGES[name].params:
        section, _, field = key.partition(".")
        assert section in Params.model_fields, f"{name}: {key}"
        if field:
            assert field in type(getattr(defaults, section)).model_fields, f"{name}: {key}"


@pytest.mark.parametrize("name", list(STAGES))
def test_dvc_deps_hold_the_declared_inputs(name: str) -> None:
    s = STAGES[name]
    deps = _listed(DVC[name], "deps")
    for role, path in s.inputs.items():
        assert _covers(_dvc(path), deps), f"{name}: input {role} {_dvc(path)} not in deps {deps}"
    assert f"src/mentoring/stages/{s.module}.py" in deps
    assert (REPO_ROOT / "src" / "mentoring" / "stages" / f"{s.module}.py").exists()


@pytest.mark.parametrize("name", list(STAGES))
def test_dvc_outs_are_the_declared_outputs(name: str) -> None:
    s = STAGES[name]
    outs = _listed(DVC[name], "outs", "metrics", "plots")
    declared = [_dvc(p) for p in s.outputs.values()]
    for role, path in s.outputs.items():
        assert _covers(_dvc(path), outs), f"{name}: output {role} {_dvc(path)} not in {outs}"
    for path in outs:  # nothing written that the declaration does not know of
        assert _within(path, declared), f"{name}: {path} is under no declared output {declared}"
    tracked = _listed(DVC[name], "deps", "outs", "metrics", "plots")
    for path in s.state.values():  # resume checkpoints stay out of DVC
        assert not _covers(_dvc(path), tracked)


@pytest.mark.parametrize("name", list(STAGES))
def test_templated_paths_are_matrix_stages(name: str) -> None:
    templated = any("{strategy}" in p for p in STAGES[name].paths.values())
    assert templated == ("matrix" in DVC[name])
    if templated:
        assert DVC[name]["matrix"] == {"strategy": "${train.strategies}"}


def test_every_input_is_written_upstream() -> None:
    written: list[str] = []
    for s in STAGES.values():
        for role, path in s.inputs.items():
            assert (
                path in EXTERNAL
                or _covers(path, written)
                or any(path.startswith(w + "/") for w in written)
            ), f"{s.name}: input {role} {path} is written by no earlier stage"
        written += s.outputs.values()


def test_default_fills_templates() -> None:
    assert spec.default("train", "model", strategy="transfer+omnia") == Path(
        "models/transfer+omnia.pt"
    )
    assert spec.default("train_baseline", "model", strategy="baseline") == Path(
        "models/baseline.pt"
    )
    assert spec.default("evaluate", "results", strategy="omnia") == Path("results/evaluate/omnia")
    with pytest.raises(KeyError, match="needs strategy"):
        spec.default("train", "model")
    with pytest.raises(KeyError, match="no path 'nope'"):
        spec.default("mine", "nope")
    with pytest.raises(KeyError, match="no stage"):
        spec.stage("nope")
    assert spec.relocate("line", "manifest", "data", Path("d")) == Path("d/manifests/line.parquet")


def test_a_role_is_either_input_or_output() -> None:
    with pytest.raises(ValueError, match="both"):
        StageSpec("x", (), {"a": "p"}, {"a": "q"}, "x")


def test_spec_imports_nothing_heavy() -> None:
    code = (
        "import sys, mentoring.pipeline_spec; "
        "heavy = {'torch', 'mlflow', 'typer', 'pandas', 'kfp'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def _command(path: str) -> Any:
    cmd: Any = typer.main.get_command(app)
    for part in path.split():
        cmd = cmd.commands[part]
    return cmd


def test_every_stage_has_a_command() -> None:
    # train_baseline and evaluate@<strategy> are `train`/`evaluate` with templated defaults
    assert {*COMMANDS.values(), "train_baseline", "evaluate"} == set(STAGES)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_cli_path_defaults_are_the_declared_ones(command: str) -> None:
    s = STAGES[COMMANDS[command]]
    seen = set()
    for param in _command(command).params:
        if param.name == "params":
            assert param.default == Path(spec.PARAMS_FILE)
        elif isinstance(param.default, Path):
            flag = param.opts[0].removeprefix("--").replace("-", "_")
            role = FLAG_ROLES.get((command, flag), flag)
            assert param.default == s.default(role), f"{command} {param.opts[0]}"
            assert param.help, f"{command} {param.opts[0]}: no help"
            seen.add(role)
    assert seen, command


@pytest.mark.parametrize(
    ("command", "shown"),
    [
        ("train", "models/<strategy>.pt"),
        ("train", "results/train/<strategy>"),
        ("evaluate", "results/evaluate/<name>"),
        ("report", "(<strategy>/)"),
    ],
)
def test_help_shows_templates(command: str, shown: str) -> None:
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "240"})
    assert result.exit_code == 0
    assert shown in result.output


def test_the_train_stage_depends_on_every_training_setting() -> None:
    """A changed train.* setting re-runs the trainings under `dvc repro` (train.strategies
    only decides which train stages exist)."""
    from mentoring.config import MentoredTrainParams
    from mentoring.pipeline_spec import STAGES

    read = {f"train.{k}" for k in MentoredTrainParams.model_fields} - {"train.strategies"}
    assert read <= set(STAGES["train"].params)
