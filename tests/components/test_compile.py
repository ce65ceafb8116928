"""The Kubeflow pipelines compile, their committed YAML is current, and the compiled platform
settings are what params.yaml's ``kfp`` section says (GPU nodes, resources, secrets, retries).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from mentoring.config import load_params
from mentoring.orchestration.adapter import params_from, pipeline_value
from mentoring.pipelines.platform import GPU_TASKS, NO_RETRY
from mentoring.pipelines.submit import PIPELINES, compile_all, compile_pipeline

REPO = Path(__file__).resolve().parents[2]
COMPONENTS = sorted(p for p in (REPO / "components").glob("*.py") if p.name != "__init__.py")
#: component -> the stage module it adapts (the others talk to the registry or MLflow only)
STAGE_OF = {
    "ingest": "line",
    "validate": "validate",
    "train_baseline": "train_baseline",
    "mine": "mine",
    "import_feedback": "mentor",
    "import_round": "mentor",
    "train": "train",
    "evaluate": "evaluate",
    "report": "report",
    "register": "register",
}


def _load(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(pipeline spec, kubernetes platform spec) of a compiled YAML."""
    docs = list(yaml.safe_load_all(path.read_text()))
    return docs[0], (docs[1] if len(docs) > 1 else {})


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("compiled")
    compile_all(load_params(REPO / "params.yaml"), out)
    return {n: out / f"{n}.yaml" for n in PIPELINES}


@pytest.mark.parametrize("name", PIPELINES)
def test_committed_yaml_is_current(name: str, compiled: dict[str, Path]) -> None:
    committed = REPO / "pipelines" / "compiled" / f"{name}.yaml"
    assert committed.exists(), f"{committed} missing: run `mentoring kfp compile`"
    assert compiled[name].read_text() == committed.read_text(), (
        f"{committed} is out of date with params.yaml / components/ / pipelines/: "
        f"run `mentoring kfp compile` and commit pipelines/compiled/"
    )


def test_pipelines_compile_without_torch(tmp_path: Path) -> None:
    """Heavy imports stay inside component bodies: compiling never imports torch or mlflow."""
    code = (
        "import sys\n"
        "for m in ('torch', 'mlflow', 'sklearn', 'great_expectations'):\n"
        "    sys.modules[m] = None  # any import of them now raises ImportError\n"
        "from pathlib import Path\n"
        "from mentoring.config import load_params\n"
        "from mentoring.pipelines.submit import compile_all\n"
        f"compile_all(load_params({str(REPO / 'params.yaml')!r}), Path({str(tmp_path)!r}))\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mining.yaml", "retraining.yaml"]


def test_no_credential_value_in_yaml(tmp_path: Path) -> None:
    """Credentials reach tasks from Kubernetes secrets by name, never as values in the YAML."""
    secrets = {
        "AWS_ACCESS_KEY_ID": "AKIA-TEST-7f3c9e",
        "AWS_SECRET_ACCESS_KEY": "s3cr3t-test-value-51d2",
        "MLFLOW_TRACKING_URI": "http://mlflow.internal.test:5000",
        "MLFLOW_TRACKING_PASSWORD": "mlflow-pw-test-88a1",
    }
    env = {**os.environ, **secrets}
    code = (
        "from pathlib import Path\n"
        "from mentoring.config import load_params\n"
        "from mentoring.pipelines.submit import compile_all\n"
        f"compile_all(load_params({str(REPO / 'params.yaml')!r}), Path({str(tmp_path)!r}))\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, env=env)
    for path in tmp_path.glob("*.yaml"):
        text = path.read_text()
        for key, value in secrets.items():
            assert value not in text, f"{path}: value of {key} compiled into the YAML"
        assert "mentoring-mlflow" in text and "mentoring-s3" in text  # by secret name


@pytest.mark.parametrize("name", PIPELINES)
def test_params_defaults_are_params_yaml(name: str, compiled: dict[str, Path]) -> None:
    spec, _ = _load(compiled[name])
    inputs = spec["root"]["inputDefinitions"]["parameters"]
    params = load_params(REPO / "params.yaml")
    assert inputs["params"]["defaultValue"] == pipeline_value(params)
    # and the components rebuild exactly these params from it
    assert params_from(inputs["params"]["defaultValue"]) == params
    if name == "retraining":
        assert inputs["strategies"]["defaultValue"] == list(params.train.strategies)


def _executors(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return spec["deploymentSpec"]["executors"]


def _component_of(executor: str) -> str:
    """``exec-train-baseline-2`` -> ``train_baseline``."""
    name = executor.removeprefix("exec-")
    parts = name.split("-")
    if parts[-1].isdigit():
        parts = parts[:-1]
    return "_".join(parts)


def test_retraining_platform_settings(compiled: dict[str, Path]) -> None:
    params = load_params(REPO / "params.yaml")
    cfg = params.kfp
    spec, platform = _load(compiled["retraining"])
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    seen = set()
    for executor, body in _executors(spec).items():
        component = _component_of(executor)
        seen.add(component)
        container = body["container"]
        command = " ".join(container["command"])
        assert "pip install" not in command, f"{executor}: installs packages at run time"
        res = container["resources"]
        want = cfg.resources_of(component)
        assert res["cpuRequest"] == float(want.cpu) and res["cpuLimit"] == float(want.cpu_limit)
        kubernetes = k8s[executor]
        secret_names = {s["secretName"] for s in kubernetes["secretAsEnv"]}
        assert secret_names == {cfg.mlflow_secret, cfg.s3_secret}
        if component in GPU_TASKS:
            assert container["image"] == cfg.gpu_image
            assert res["accelerator"]["resourceType"] == cfg.gpu.resource
            assert res["accelerator"]["resourceCount"] == str(cfg.gpu.count)
            assert kubernetes["nodeSelector"]["labels"] == cfg.gpu.node_selector
            assert kubernetes["tolerations"] == [
                {"key": cfg.gpu.toleration_key, "operator": "Exists", "effect": "NoSchedule"}
            ]
            (shm,) = kubernetes["emptyDirMounts"]
            assert shm["mountPath"] == "/dev/shm" and shm["medium"] == "Memory"
        else:
            assert container["image"] == cfg.image
            assert "accelerator" not in res and "nodeSelector" not in kubernetes
    assert seen >= set(STAGE_OF) - {"mine"} | {"mine", "champion", "fetch_model"}
    # retries on the tasks that talk to S3 / MLflow, not on the deterministic checks
    tasks = {
        n: t
        for dag in [spec["root"]["dag"], *(c.get("dag", {}) for c in spec["components"].values())]
        for n, t in dag.get("tasks", {}).items()
    }
    for name, task in tasks.items():
        if "componentRef" not in task or task["componentRef"]["name"].startswith("comp-condition"):
            continue
        component = _component_of("exec-" + task["componentRef"]["name"].removeprefix("comp-"))
        if component.startswith(("condition", "for_loop", "exit_handler")):
            continue
        if component in NO_RETRY:
            assert "retryPolicy" not in task, name
        else:
            assert task["retryPolicy"]["maxRetryCount"] == cfg.retry.count, name
    # the image store: a Pipeline Run Workspace
    assert spec["root"]["dag"] and "workspace" in yaml.safe_dump(platform)


def test_store_settings(tmp_path: Path) -> None:
    """kfp.store: pvc mounts the claim on every task; artifacts uses neither."""
    for store in ("pvc", "artifacts"):
        params = load_params(REPO / "params.yaml", {"kfp.store": store})
        path = compile_pipeline("mining", params, tmp_path / f"{store}.yaml")
        _, platform = _load(path)
        text = path.read_text()
        assert "workspace_path" not in text
        k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
        mounts = [e.get("pvcMount") for e in k8s.values()]
        if store == "pvc":
            assert all(m and m[0]["mountPath"] == params.kfp.pvc_mount for m in mounts)
        else:
            assert not any(mounts)


@pytest.mark.parametrize("path", COMPONENTS, ids=lambda p: p.stem)
def test_component_is_a_thin_adapter(path: Path) -> None:
    """One @dsl.component per file, no packages installed, kfp not installed, and the body of a
    stage's component calls ``mentoring.stages.<stage>.run``."""
    tree = ast.parse(path.read_text())
    funcs = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    assert len(funcs) == 1, f"{path}: one component function per file"
    (fn,) = funcs
    (decorator,) = fn.decorator_list
    assert isinstance(decorator, ast.Call) and ast.unparse(decorator.func) == "dsl.component"
    kwargs = {k.arg: ast.unparse(k.value) for k in decorator.keywords}
    assert kwargs.get("install_kfp_package") == "False"
    assert "packages_to_install" not in kwargs and kwargs.get("base_image") == "IMAGE"
    top_imports = {
        n.module or "" for n in tree.body if isinstance(n, ast.ImportFrom | ast.Import)
    } | {a.name for n in tree.body if isinstance(n, ast.Import) for a in n.names}
    assert not {"torch", "mlflow"} & {m.split(".")[0] for m in top_imports}
    stage = STAGE_OF.get(path.stem)
    if stage:
        body = ast.unparse(fn)
        assert f"from mentoring.stages import {stage} as stage" in body
        assert "stage.run(" in body


def test_trainer_trainjob_trains_strategies_on_several_nodes(tmp_path: Path) -> None:
    """kfp.trainer: trainjob swaps the strategies' training task for `train_distributed` (a
    Kubeflow Trainer TrainJob) with the GPU settings passed through to the job's nodes."""
    params = load_params(REPO / "params.yaml", {"kfp.trainer": "trainjob", "kfp.trainjob_nodes": 3})
    spec, _ = _load(compile_pipeline("retraining", params, tmp_path / "retraining.yaml"))
    executors = _executors(spec)
    assert "exec-train-distributed" in executors and "exec-train" not in executors
    text = (tmp_path / "retraining.yaml").read_text()
    assert "taskConfigPassthroughs" in text
    loop = next(
        c["dag"]["tasks"] for n, c in spec["components"].items() if n.startswith("comp-for-loop")
    )
    task = loop["train-distributed"]
    assert task["inputs"]["parameters"]["num_nodes"]["runtimeValue"]["constant"] == 3
