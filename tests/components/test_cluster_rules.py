"""The compiled pipelines against the rules a Kubeflow Pipelines cluster applies to them.

kfp's local runners share one filesystem, mount the workspace into every task and cache nothing,
so a pipeline can pass every local run and still fail on a cluster. Each rule below is read from
the KFP backend's source at 2.17.0 (the version the README targets; the file is named with each
rule) and checked over every compiled variant: both pipelines, ``kfp.store`` workspace / pvc /
artifacts, ``kfp.trainer`` task / trainjob. These rules could only be read in the backend's
source (no cluster runs here); what runs here is in test_run_local.py (the mount rule is also
enforced by the components themselves, ``adapter.line_root``) and test_submit.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mentoring.config import load_params
from mentoring.orchestration.adapter import SECRETS_ENV
from mentoring.pipelines.platform import GPU_TASKS, MLFLOW_KEYS, S3_KEYS
from mentoring.pipelines.submit import PIPELINES, compile_pipeline

REPO = Path(__file__).resolve().parents[2]
#: backend/src/v2/component/constants.go: WorkspaceMountPath
WORKSPACE_MOUNT = "/kfp-workspace"
WORKSPACE_PLACEHOLDER = "{{$.workspace_path}}"
VARIANTS = [
    (pipeline, store, trainer)
    for pipeline in PIPELINES
    for store in ("workspace", "pvc", "artifacts")
    for trainer in ("task", "trainjob")
    if pipeline == "retraining" or trainer == "task"
]
#: the tasks whose result depends on the outside world (registry, S3, MLflow, a branch, a
#: feedback folder): never served from the cache
OUTSIDE_WORLD = {
    "start_run", "finish_run", "line_version", "champion", "fetch_model", "mine",
    "import_feedback", "import_round", "train", "train_baseline", "train_distributed", "evaluate",
    "report", "register",
}  # fmt: skip


def _component(ref: str) -> str:
    """``comp-evaluate-3`` -> ``evaluate``."""
    name = ref.removeprefix("comp-")
    return re.sub(r"-\d+$", "", name).replace("-", "_")


def _compile(tmp: Path, pipeline: str, store: str, trainer: str) -> tuple[dict, dict]:
    params = load_params(REPO / "params.yaml", {"kfp.store": store, "kfp.trainer": trainer})
    path = compile_pipeline(pipeline, params, tmp / f"{pipeline}-{store}-{trainer}.yaml")
    docs = list(yaml.safe_load_all(path.read_text()))
    return docs[0], (docs[1] if len(docs) > 1 else {})


def _container_tasks(spec: dict) -> Iterator[tuple[str, dict, dict]]:
    """(component name, task, component spec) of every container task, at any depth."""
    dags = [spec["root"]["dag"]] + [c["dag"] for c in spec["components"].values() if "dag" in c]
    for dag in dags:
        for task in dag["tasks"].values():
            comp = spec["components"][task["componentRef"]["name"]]
            if "executorLabel" in comp:
                yield _component(task["componentRef"]["name"]), task, comp


def _workspace(spec: dict, platform: dict) -> dict | None:
    """The compiled workspace config (the platform document's ``pipelineConfig``)."""
    config = platform.get("platforms", {}).get("kubernetes", {}).get("pipelineConfig", {})
    return config.get("workspace")


@pytest.fixture(scope="module", params=VARIANTS, ids=lambda v: "-".join(v))
def variant(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, str, str, dict, dict]:
    pipeline, store, trainer = request.param
    spec, platform = _compile(tmp_path_factory.mktemp("rules"), pipeline, store, trainer)
    return pipeline, store, trainer, spec, platform


def test_every_task_reading_the_store_gets_the_workspace_mounted(variant: Any) -> None:
    """backend/src/v2/driver/driver.go, ``needsWorkspaceMount``: the workspace PVC is mounted
    only into a pod with a string input parameter containing ``{{$.workspace_path}}`` or
    ``/kfp-workspace`` (or an artifact from a workspace importer, which these pipelines have
    not). A task that reads the line (a ``line`` input) or writes it (``ingest``) needs it."""
    _, store, _, spec, _ = variant
    readers = 0
    for name, task, comp in _container_tasks(spec):
        reads = "line" in comp.get("inputDefinitions", {}).get("artifacts", {})
        if not (reads or name == "ingest"):
            continue
        readers += 1
        constants = [
            str(p["runtimeValue"]["constant"])
            for p in task.get("inputs", {}).get("parameters", {}).values()
            if "runtimeValue" in p
        ]
        mounted = any(WORKSPACE_PLACEHOLDER in c or WORKSPACE_MOUNT in c for c in constants)
        if store == "workspace":
            assert mounted, f"task {name} reads the line but would start without the workspace"
        else:
            assert not mounted, f"task {name}: a workspace placeholder without a workspace"
    assert readers >= 3


def test_workspace_claim_is_accepted(variant: Any) -> None:
    """backend/src/v2/compiler/argocompiler/argo.go, ``GetWorkspacePVC`` and
    ``convertStructToPVCSpec``: a size that parses, a patch of ``accessModes`` and
    ``storageClassName`` only, access modes present (no administrator default is assumed), a
    storage class omitted or non-empty. Parallel train pods on several GPU nodes need
    ReadWriteMany (the default)."""
    _, store, _, spec, platform = variant
    workspace = _workspace(spec, platform)
    if store != "workspace":
        assert workspace is None
        return
    assert re.fullmatch(r"\d+(\.\d+)?(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?", workspace["size"])
    patch = workspace["kubernetes"]["pvcSpecPatch"]
    assert set(patch) <= {"accessModes", "storageClassName"}, patch
    modes = patch["accessModes"]
    assert modes and set(modes) <= {
        "ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod",
    }  # fmt: skip
    assert modes == ["ReadWriteMany"]  # params.yaml's default: train pods on several nodes
    assert patch.get("storageClassName", "x") != ""


def test_workspace_claim_settings_compile(tmp_path: Path) -> None:
    params = load_params(
        REPO / "params.yaml",
        {"kfp.workspace_access_modes": ["ReadWriteOnce"], "kfp.workspace_storage_class": "nfs"},
    )
    path = compile_pipeline("mining", params, tmp_path / "m.yaml")
    spec, platform = list(yaml.safe_load_all(path.read_text()))
    patch = _workspace(spec, platform)["kubernetes"]["pvcSpecPatch"]
    assert patch == {"accessModes": ["ReadWriteOnce"], "storageClassName": "nfs"}


def test_nothing_that_reads_the_outside_world_is_cached(variant: Any) -> None:
    """backend/src/v2/driver/cache.go and cacheutils/cache.go: a task with caching enabled is
    served from the cache when its input parameters, input artifact names, output specs,
    command, image and PVC names match an earlier execution. A task whose result depends on
    anything else (the registry, S3, a folder, a branch, MLflow) must not be cached; the ingest
    step may be only when its images travel as its artifact, and then its key must hold what
    the source is now (``line_version``'s outputs, read uncached at run time)."""
    _, store, _, spec, _ = variant
    seen = set()
    for name, task, _ in _container_tasks(spec):
        seen.add(name)
        cached = bool(task.get("cachingOptions", {}).get("enableCache"))
        if name in OUTSIDE_WORLD:
            assert not cached, f"task {name} reads the outside world but is cached"
        if name == "ingest":
            assert cached == (store == "artifacts"), name
            inputs = task["inputs"]["parameters"]
            for key, output in (("source_key", "key"), ("dataset_rev", "rev")):
                producer = inputs[key]["taskOutputParameter"]
                assert producer == {"outputParameterKey": output, "producerTask": "line-version"}
    assert {"ingest", "line_version", "start_run", "finish_run"} <= seen
    assert ("champion" in seen) == (variant[0] == "retraining")


def test_secrets_and_resources(variant: Any) -> None:
    """backend/src/v2/driver/k8s.go (secretAsEnv, optional keys): with optional secrets a
    missing one leaves the variables unset and the pod starts; every task carries the map of
    variable -> secret that ``adapter.check_cluster_env`` names when it fails at once. Every
    task has requests and limits; the training tasks GPU nodes."""
    _, _, trainer, spec, platform = variant
    params = load_params(REPO / "params.yaml", {"kfp.trainer": trainer})
    cfg = params.kfp
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for executor, body in spec["deploymentSpec"]["executors"].items():
        container = body["container"]
        env = {e["name"]: e["value"] for e in container.get("env", [])}
        pairs = dict(p.split("=") for p in env[SECRETS_ENV].split(","))
        assert pairs == {
            **{v: cfg.mlflow_secret for v in MLFLOW_KEYS.values()},
            **{v: cfg.s3_secret for v in S3_KEYS.values()},
        }
        secrets = {s["secretName"]: s for s in k8s[executor]["secretAsEnv"]}
        keys = {kv["secretKey"] for kv in secrets[cfg.mlflow_secret]["keyToEnv"]}
        assert "MLFLOW_TRACKING_URI" in keys and secrets[cfg.mlflow_secret]["optional"]
        res = container["resources"]
        assert {"cpuRequest", "cpuLimit", "memoryRequest", "memoryLimit"} <= set(res), executor
        component = _component(executor.removeprefix("exec-"))
        if component in GPU_TASKS and trainer == "task":
            assert res["accelerator"]["resourceCount"] == str(cfg.gpu.count)
            assert k8s[executor]["nodeSelector"]["labels"] == cfg.gpu.node_selector
