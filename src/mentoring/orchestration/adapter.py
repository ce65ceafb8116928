"""Plumbing shared by the Kubeflow component bodies.

A component body (``components/<name>.py``) does three things: rebuild the typed
:class:`~mentoring.config.Params` from the pipeline's ``params`` dict (same validation, same
errors as ``params.yaml``), lay out its input artifacts as the files the stage reads, and call
``mentoring.stages.<name>.run``. This module holds the parts they share, so each body stays a
few lines.

Where the line's images live (``kfp.store``): in the Pipeline Run Workspace or a PVC
(``store_dir`` non-empty: one copy for the whole run, the ``Dataset`` artifact carries the
manifest and the store path) or in the ``Dataset`` artifact itself (``store_dir`` empty: copied
through the artifact store at every step, fine for small lines).
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mentoring.config import Params, parse_params
from mentoring.io import sha256_file, write_json
from mentoring.tracking import GIT_ENV, PIPELINE_ENV, numeric

#: the source named in params errors raised inside a component
PARAMS_SOURCE = "pipeline parameter 'params'"
#: the manifest inside a line root (the layout of `mentoring line generate`)
MANIFEST = Path("manifests/line.parquet")
#: a full git commit sha: the only revision a cached dataset step may be keyed on
SHA = re.compile(r"^[0-9a-f]{40}$")


def params_from(params: Mapping[str, Any], sets: Mapping[str, Any] | None = None) -> Params:
    """The typed params of a pipeline's ``params`` dict, with dotted overrides ``sets``.

    Raises:
        ConfigError: naming the pipeline parameter, the section and the key.
    """
    data = copy.deepcopy(dict(params))
    for dotted, value in (sets or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    parsed = parse_params(data, source=PARAMS_SOURCE)
    check_cluster_env(parsed)
    return parsed


#: set by the KFP backend in every pod it runs (2.17.0 backend/src/v2/compiler/argocompiler/
#: common.go); kfp's local runners do not set it
POD_ENV = "KFP_POD_NAME"
#: ``VAR=secret,...`` compiled into every task (pipelines/platform.py)
SECRETS_ENV = "MENTORING_SECRETS"


class ClusterEnvError(RuntimeError):
    """A task on a cluster lacks a variable that only a Kubernetes secret can give it."""


def check_cluster_env(params: Params, env: Mapping[str, str] | None = None) -> None:
    """On a cluster, fail at once when the tracking store would be pod-local.

    The MLflow secret is mounted as optional environment variables: a missing or misnamed
    secret (or key) leaves ``MLFLOW_TRACKING_URI`` unset, and every task would then track into
    a sqlite file inside its own pod, lost with it, and the run would fail at its end, after
    the GPU training. Each task checks first (every component body starts with
    :func:`params_from`), so the first task fails, naming the secret and the variable.

    Raises:
        ClusterEnvError: in a KFP pod, the tracking URI is a local file.
    """
    env = os.environ if env is None else env
    if not env.get(POD_ENV):
        return  # not on a cluster: kfp.local, dvc repro, the CLI keep the embedded store
    uri = env.get("MLFLOW_TRACKING_URI") or params.tracking.uri  # tracking.resolve_uri's rule
    scheme = uri.split(":", 1)[0] if "://" in uri else ""
    if scheme in ("", "file", "sqlite"):
        sources = dict(p.split("=", 1) for p in env.get(SECRETS_ENV, "").split(",") if "=" in p)
        secret = sources.get("MLFLOW_TRACKING_URI", params.kfp.mlflow_secret)
        raise ClusterEnvError(
            f"MLFLOW_TRACKING_URI is not set in pod {env[POD_ENV]}: the Kubernetes secret "
            f"{secret!r} (key MLFLOW_TRACKING_URI) is missing or misnamed in this namespace, so "
            f"this task would track into {uri!r} inside its own pod and lose it. Create it "
            f"(kubectl create secret generic {secret} --from-literal=MLFLOW_TRACKING_URI=...) "
            "or set tracking.uri to the tracking server (kfp.mlflow_secret names the secret)"
        )


def enter_run(kfp_run_id: str, git_commit: str = "") -> None:
    """Join the pipeline's MLflow parent run (keyed on the KFP run id) and its lineage."""
    if kfp_run_id:
        os.environ[PIPELINE_ENV] = kfp_run_id
    if git_commit:
        os.environ[GIT_ENV] = git_commit


def line_root(
    dataset_path: str, dataset_metadata: Mapping[str, Any] | None = None, store_dir: str = ""
) -> Path:
    """The folder holding ``line/`` and ``manifests/``: the store named in the artifact's
    metadata (workspace or PVC), else the artifact's own folder.

    A task reads the store only through the ``store_dir`` its task spec gives it: on a cluster
    that parameter is what makes the backend mount the volume (the v2 driver mounts the run
    workspace only into a pod with a string input holding ``{{$.workspace_path}}`` or
    ``/kfp-workspace``), so a task without it would find no images there. The same rule is
    enforced here, where kfp's local runners share one folder, so a missing mount fails locally.

    Raises:
        MountError: the line lives in a store that ``store_dir`` does not name.
    """
    store = (dataset_metadata or {}).get("store", "")
    if not store:
        return Path(dataset_path)
    if not store_dir:
        raise MountError(
            f"the line's images are in the store {store}, but this task was given no store_dir: "
            "on a cluster its pod would not have that volume mounted (pass the pipeline's "
            "store_dir to the task)"
        )
    if not Path(store).is_relative_to(store_dir):
        raise MountError(
            f"the line's images are in {store}, outside this task's store_dir {store_dir}: "
            "its pod would not see them"
        )
    return Path(store)


class MountError(RuntimeError):
    """A task reads a store its task spec does not mount."""


def manifest_of(root: Path) -> Path:
    """The manifest of a line root; a clear error when it is not there."""
    path = root / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"{path}: no line manifest in the dataset artifact or its store")
    return path


def store_root(store_dir: str, run_id: str, artifact_path: str) -> Path:
    """Where a component writes the line: ``<store>/<run>/data`` with a store, else the artifact.

    The run id keeps concurrent runs sharing a PVC apart.
    """
    if store_dir:
        return Path(store_dir) / (run_id or "run") / "data"
    return Path(artifact_path)


def checkpoint(store_dir: str, run_id: str, name: str, results: Path) -> Path:
    """Training checkpoint of model ``name``: in the store when there is one (a retried pod
    resumes from it), else beside the task's results."""
    base = Path(store_dir) / (run_id or "run") if store_dir else results
    return base / "checkpoints" / f"{name}.pt"


def model_metadata(model_path: Path, results: Path, name: str) -> dict[str, Any]:
    """Metadata of a trained model artifact: sha256, size, name, its training fingerprint and
    MLflow record (``mlflow.json``, what ``register`` reads) when it was tracked."""
    meta = file_metadata(model_path, name=name)
    record = results / "mlflow.json"
    if record.exists():
        meta["mlflow"] = json.loads(record.read_text())
        meta["fingerprint"] = meta["mlflow"].get("fingerprint", "")
    return meta


def scratch(name: str) -> Path:
    """A fresh temporary folder for a stage's results that travel as artifacts afterwards."""
    return Path(tempfile.mkdtemp(prefix=f"mentoring-{name}-"))


def log_metrics(metrics: Any, values: Mapping[str, Any], prefix: str = "") -> None:
    """Log the numeric leaves of a stage's metrics on a KFP ``Metrics`` artifact.

    They are also written to the artifact's file: the UI reads the metadata, but a Metrics
    artifact without a file is "missing" to kfp.local's cache, which never hits then.
    """
    flat = dict(sorted(numeric(values, prefix).items()))
    for key, value in flat.items():
        metrics.log_metric(key, value)
    write_json(metrics.path, flat)


def save_dir(src: Path, dest: str) -> None:
    """Copy a results folder into an output artifact's path."""
    shutil.copytree(src, dest, dirs_exist_ok=True)


def file_metadata(path: Path, **extra: Any) -> dict[str, Any]:
    """Artifact metadata of a file: its sha256 and size, plus ``extra``."""
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size, **extra}


def layout(root: Path, files: Mapping[str, Mapping[str, Any]]) -> Path:
    """Write ``{relative path: JSON object}`` under ``root`` (rebuilding a stage's folders from
    artifact metadata); returns ``root``."""
    for rel, obj in files.items():
        write_json(root / rel, dict(obj))
    return root


def check_commit(rev: str) -> str:
    """``rev`` when it is a full commit sha; a branch or tag cannot key a cached step.

    Raises:
        ValueError: naming the revision and how to get its sha.
    """
    if not SHA.match(rev):
        raise ValueError(
            f"dataset_rev {rev!r} is not a full commit sha: a branch or tag moves while the "
            f"cache key would not (`mentoring kfp run` resolves it; or `git rev-parse {rev}`)"
        )
    return rev


def collect_dir(artifacts: list[Any], dest: Path, required: str) -> Path:
    """Lay collected artifacts (``dsl.Collected``) out as ``dest/<metadata name>/``, the folder
    per variant a stage reads; each must hold ``required``."""
    for art in artifacts:
        name = art.metadata.get("name")
        if not name:
            raise ValueError(f"{art.path}: collected artifact without a 'name' in its metadata")
        src = Path(art.path)
        if not (src / required).exists():
            raise FileNotFoundError(f"{src / required}: missing in the artifact of {name!r}")
        shutil.copytree(src, dest / name, dirs_exist_ok=True)
    dest.mkdir(parents=True, exist_ok=True)
    return dest


def html_page(images: list[Path], path: Path, title: str) -> None:
    """One self-contained HTML page showing ``images`` (PNG, inlined), for the KFP UI."""
    import base64
    import html

    parts = [f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>"]
    parts.append(f"<h1>{html.escape(title)}</h1>")
    for img in images:
        data = base64.b64encode(img.read_bytes()).decode()
        parts.append(
            f"<figure><img alt='{html.escape(img.stem)}' src='data:image/png;base64,{data}'>"
            f"<figcaption>{html.escape(img.stem)}</figcaption></figure>"
        )
    from mentoring.io import write_bytes

    write_bytes(path, "\n".join(parts).encode())


def pipeline_value(params: Params) -> dict[str, Any]:
    """``params`` as a pipeline parameter value: JSON types, without the None leaves (a
    pipeline parameter cannot hold null; :func:`params_from` restores those keys' None
    defaults)."""

    def drop(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: drop(v) for k, v in node.items() if v is not None}
        if isinstance(node, list):
            return [drop(v) for v in node]
        return node

    result: dict[str, Any] = drop(params.model_dump(mode="json"))
    return result
