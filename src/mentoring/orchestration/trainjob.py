"""Multi-node training of one strategy as a Kubeflow Trainer v2 ``TrainJob``.

The ``train_distributed`` component (``components/train_distributed.py``) does not train in its
own pod: it lays the inputs out in the run's shared store (the Pipeline Run Workspace or the
PVC of ``kfp.store``), creates a ``TrainJob`` (``trainer.kubeflow.org/v1alpha1``) that runs
``torchrun -m mentoring.stages.train <the arguments of mentoring train>`` on ``num_nodes`` GPU
nodes, waits for it and publishes the model the job wrote to the store.

The Torch runtime (a ``ClusterTrainingRuntime`` such as ``torch-distributed``) sets
``PET_NNODES``, ``PET_NPROC_PER_NODE``, ``PET_NODE_RANK``, ``PET_MASTER_ADDR`` and
``PET_MASTER_PORT`` in the ``node`` container; ``torchrun`` reads every option from its
``PET_<OPTION>`` variable, so the command carries no rendezvous flag (what the Trainer's own
examples do; a ``${PET_NNODES}`` in the args would not even be expanded by Kubernetes).

Pods are patched with ``spec.runtimePatches`` (Trainer >= 2.2; ``podTemplateOverrides`` is gone):
node selector, tolerations, affinity, the store's volume and a memory-backed ``/dev/shm``.
Credentials reach the nodes as ``valueFrom.secretKeyRef`` entries of ``spec.trainer.env``, never
as values. The Kubeflow SDK's ``TrainerClient.train`` cannot express that (its
``CustomTrainerContainer.env`` holds literal values only, and the Trainer forbids env patches on
the ``node`` container), so the body is built here as a dict, checked against the
``kubeflow_trainer_api`` models of the installed Trainer API, and created with the Kubernetes
``CustomObjectsApi``; the waiting reads the same conditions the SDK's ``wait_for_job_status``
reads, without its per-poll read of the cluster-scoped runtime (an RBAC the pipeline's service
account seldom has) and with the failed node's last log lines in the error.

Nothing here imports a stage; the Kubernetes clients are imported when a client is built.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mentoring.config import KfpParams, Params, load_params
from mentoring.orchestration import adapter
from mentoring.tracking import GIT_ENV, PIPELINE_ENV

#: the Trainer API (the values of ``kubeflow.trainer.constants``)
GROUP = "trainer.kubeflow.org"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "TrainJob"
PLURAL = "trainjobs"
#: the default Torch runtime of a Trainer install (`helm ... --set runtimes.defaultEnabled=true`)
DEFAULT_RUNTIME = "torch-distributed"
RUNTIME_KIND = "ClusterTrainingRuntime"
#: the replicated job and the container of the Torch runtimes that run the trainer
NODE = "node"
#: the owner of this module's ``runtimePatches`` entry (one entry per manager)
MANAGER = "mentoring/train-distributed"
#: the module torchrun starts on every process (``python -m`` takes `mentoring train`'s options)
TRAIN_MODULE = "mentoring.stages.train"
#: set by the Torch runtime; the Trainer rejects a TrainJob that sets them
RESERVED_ENV = frozenset(
    {"PET_NNODES", "PET_NPROC_PER_NODE", "PET_NODE_RANK", "PET_MASTER_ADDR", "PET_MASTER_PORT"}
)
#: secret keys -> environment variables, as pipelines/platform.py gives them to every task
MLFLOW_KEYS = {
    "MLFLOW_TRACKING_URI": "MLFLOW_TRACKING_URI",
    "MLFLOW_TRACKING_USERNAME": "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD": "MLFLOW_TRACKING_PASSWORD",
}
S3_KEYS = {k: k for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
#: variables that may only come from a secret (a literal value would sit in the TrainJob)
CREDENTIALS = frozenset(
    {
        "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD",
        "MLFLOW_TRACKING_TOKEN",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
    }
)
#: the memory-backed /dev/shm of every node (NCCL and DataLoader workers use it)
SHM_VOLUME = "dshm"
#: the Pipeline Run Workspace: its volume name and mount path (the KFP driver's constants)
WORKSPACE_VOLUME = "kfp-workspace"
WORKSPACE_MOUNT = "/kfp-workspace"
#: the PVC volume of ``kfp.store: pvc`` when it is not passed through from the task
PVC_VOLUME = "mentoring-store"
#: labels of the pods of a TrainJob (JobSet labels)
JOBSET_LABEL = "jobset.sigs.k8s.io/jobset-name"
RJOB_LABEL = "jobset.sigs.k8s.io/replicatedjob-name"
INDEX_LABEL = "batch.kubernetes.io/job-completion-index"
#: TrainJob phases (the Kubeflow SDK's names); Complete and Failed are its final conditions
CREATED, RUNNING, COMPLETE, FAILED, SUSPENDED = (
    "Created",
    "Running",
    "Complete",
    "Failed",
    "Suspended",
)
#: RFC 1035 label: what the Trainer accepts as a TrainJob name
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"[^A-Za-z0-9_.-]+")
#: seconds between two reads of a TrainJob's status
POLL_S = 15.0
#: how long past its activeDeadlineSeconds the wait gives the cluster to report the failure
DELETE_GRACE_S = 300
#: where a pod finds its namespace
_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


# --------------------------------------------------------------------------- the body


@dataclass(frozen=True)
class Placement:
    """Where and with what the nodes run: a task's Kubernetes settings, as a KFP
    ``dsl.TaskConfig`` forwards them (Kubernetes JSON: camelCase keys)."""

    resources: Mapping[str, Any] = field(default_factory=dict)  # requests/limits of one node
    env: tuple[Mapping[str, Any], ...] = ()  # EnvVar objects (value or valueFrom)
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()
    affinity: Mapping[str, Any] | None = None
    volumes: tuple[Mapping[str, Any], ...] = ()
    volume_mounts: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True)
class TrainJobSpec:
    """Everything one TrainJob needs (typed inputs of :func:`build_trainjob`)."""

    name: str  # RFC 1035 label, at most 63 characters (:func:`job_name`)
    namespace: str
    image: str  # kfp.gpu_image
    command: tuple[str, ...]  # the trainer container's entrypoint (:func:`train_command`)
    args: tuple[str, ...] = ()  # its arguments (:meth:`JobFiles.args`)
    num_nodes: int = 2
    runtime: str = DEFAULT_RUNTIME
    runtime_kind: str = RUNTIME_KIND  # or TrainingRuntime (namespaced, same namespace)
    gpu_resource: str = "nvidia.com/gpu"  # kfp.gpu.resource
    gpus_per_node: int = 1  # one torchrun process per GPU; 0: one CPU process per node
    placement: Placement = field(default_factory=Placement)
    env: Mapping[str, str] = field(default_factory=dict)  # literal, non-secret variables
    shm_size: str = "2Gi"  # memory-backed /dev/shm; empty: none
    labels: Mapping[str, str] = field(default_factory=dict)
    deadline_s: int | None = None  # spec.activeDeadlineSeconds: the cluster stops it then


def job_name(run_id: str, strategy: str) -> str:
    """A TrainJob name for ``strategy`` in run ``run_id``: deterministic (a retried task finds
    its job again), unique per run, short enough for the JobSet's pod host names."""
    slug = re.sub(r"[^a-z0-9]+", "-", strategy.lower()).strip("-")[:20].strip("-") or "train"
    digest = hashlib.sha256(f"{run_id}/{strategy}".encode()).hexdigest()[:8]
    return f"mentoring-{slug}-{digest}"


def label_value(text: str) -> str:
    """``text`` as a Kubernetes label value (at most 63 characters, alphanumeric ends)."""
    return _LABEL_VALUE.sub("-", text)[:63].strip("-_.")


def train_command() -> tuple[str, ...]:
    """torchrun on the training stage; the rendezvous comes from the runtime's ``PET_*``."""
    return ("torchrun", "-m", TRAIN_MODULE)


def secret_env(mlflow_secret: str, s3_secret: str) -> list[dict[str, Any]]:
    """The MLflow and S3 credentials as optional ``secretKeyRef`` variables (as
    ``pipelines/platform.py`` gives them to every task: a server without authentication needs
    only the URI, and an unset secret leaves the local fallbacks)."""
    return [
        {
            "name": env,
            "valueFrom": {"secretKeyRef": {"name": secret, "key": key, "optional": True}},
        }
        for secret, keys in ((mlflow_secret, MLFLOW_KEYS), (s3_secret, S3_KEYS))
        if secret
        for key, env in keys.items()
    ]


def _merge_env(*groups: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Env lists merged by name: a later entry replaces an earlier one in its place."""
    merged: dict[str, dict[str, Any]] = {}
    for group in groups:
        for entry in group:
            merged[str(entry["name"])] = dict(entry)
    return list(merged.values())


def _check_env(env: Sequence[Mapping[str, Any]]) -> None:
    for entry in env:
        name = entry.get("name", "")
        if not name:
            raise ValueError(f"env entry without a name: {dict(entry)}")
        if name in RESERVED_ENV:
            raise ValueError(f"env {name} is set by the Torch runtime; the Trainer rejects it")
        if "valueFrom" not in entry and "value" not in entry:
            raise ValueError(f"env {name}: neither value nor valueFrom")
        if name in CREDENTIALS and "valueFrom" not in entry:
            raise ValueError(
                f"env {name} is a credential given as a literal value: it would be stored in "
                f"the TrainJob; give it as valueFrom.secretKeyRef (kfp.mlflow_secret / "
                f"kfp.s3_secret)"
            )


def _quantities(section: Mapping[str, Any] | None) -> dict[str, str]:
    return {str(k): str(v) for k, v in (section or {}).items()}


def node_resources(
    resources: Mapping[str, Any], gpu_resource: str, gpus: int
) -> dict[str, dict[str, str]]:
    """``resourcesPerNode``: the task's requests and limits with exactly ``gpus`` GPUs (an
    extended resource: request = limit)."""
    requests = _quantities(resources.get("requests"))
    limits = _quantities(resources.get("limits"))
    for section in (requests, limits):
        section.pop(gpu_resource, None)
        if gpus:
            section[gpu_resource] = str(gpus)
    return {k: v for k, v in (("requests", requests), ("limits", limits)) if v}


def _pod_patch(spec: TrainJobSpec) -> dict[str, Any]:
    """The pod spec patch of the ``node`` replicated job."""
    place = spec.placement
    volumes = [dict(v) for v in place.volumes]
    mounts = [dict(m) for m in place.volume_mounts]
    if spec.shm_size:
        volumes.append(
            {"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": spec.shm_size}}
        )
        mounts.append({"name": SHM_VOLUME, "mountPath": "/dev/shm"})
    for what, items, key in (("volume", volumes, "name"), ("mount path", mounts, "mountPath")):
        seen = [str(i.get(key)) for i in items]
        dupes = sorted({s for s in seen if seen.count(s) > 1})
        if dupes:
            raise ValueError(f"duplicate {what}(s) on the training nodes: {dupes}")
    pod: dict[str, Any] = {}
    if place.node_selector:
        pod["nodeSelector"] = dict(place.node_selector)
    if place.tolerations:
        pod["tolerations"] = [dict(t) for t in place.tolerations]
    if place.affinity:
        pod["affinity"] = dict(place.affinity)
    if volumes:
        pod["volumes"] = volumes
    if mounts:
        pod["containers"] = [{"name": NODE, "volumeMounts": mounts}]
    return pod


def build_trainjob(spec: TrainJobSpec) -> dict[str, Any]:
    """The TrainJob of ``spec`` as a Kubernetes object (a dict for ``CustomObjectsApi``).

    Raises:
        ValueError: a bad name or node count, a reserved or literal credential variable, a
            duplicate volume, or a field the installed Trainer API does not know.
    """
    if not (_DNS1035.match(spec.name) and len(spec.name) <= 63):
        raise ValueError(f"TrainJob name {spec.name!r} is not an RFC 1035 label of <= 63 chars")
    if spec.num_nodes < 1 or spec.gpus_per_node < 0:
        raise ValueError(
            f"num_nodes must be >= 1 and gpus_per_node >= 0 "
            f"(got {spec.num_nodes}, {spec.gpus_per_node})"
        )
    env = _merge_env(
        ({"name": k, "value": str(v)} for k, v in spec.env.items()), spec.placement.env
    )
    _check_env(env)
    trainer: dict[str, Any] = {
        "image": spec.image,
        "command": list(spec.command),
        "args": list(spec.args),
        "numNodes": spec.num_nodes,
        "numProcPerNode": max(spec.gpus_per_node, 1),
    }
    resources = node_resources(spec.placement.resources, spec.gpu_resource, spec.gpus_per_node)
    if resources:
        trainer["resourcesPerNode"] = resources
    if env:
        trainer["env"] = env
    body: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": spec.name, "namespace": spec.namespace},
        "spec": {
            "runtimeRef": {"apiGroup": GROUP, "kind": spec.runtime_kind, "name": spec.runtime},
            "trainer": trainer,
        },
    }
    if spec.labels:
        body["metadata"]["labels"] = dict(spec.labels)
    if spec.deadline_s:
        body["spec"]["activeDeadlineSeconds"] = int(spec.deadline_s)
    pod = _pod_patch(spec)
    if pod:
        body["spec"]["runtimePatches"] = [
            {
                "manager": MANAGER,
                "trainingRuntimeSpec": {
                    "template": {
                        "spec": {
                            "replicatedJobs": [
                                {"name": NODE, "template": {"spec": {"template": {"spec": pod}}}}
                            ]
                        }
                    }
                },
            }
        ]
    check_fields(body)
    return body


def check_fields(body: Mapping[str, Any]) -> None:
    """Check ``body`` against the installed Trainer API models (``kubeflow_trainer_api``): a
    field they do not know (a typo, or an API this Trainer version dropped) is an error here,
    not a field the API server silently prunes.

    Raises:
        ValueError: naming the first unknown field's path.
    """
    from kubeflow_trainer_api.models import TrainerV1alpha1TrainJob

    parsed = TrainerV1alpha1TrainJob.from_dict(dict(body)).to_dict()
    path = _first_difference(dict(body), parsed)
    if path is not None:
        raise ValueError(f"TrainJob field {path} is not in the Trainer API {API_VERSION}")


def _first_difference(given: Any, parsed: Any, path: str = "") -> str | None:
    if isinstance(given, dict) and isinstance(parsed, dict):
        for key, value in given.items():
            if key not in parsed:
                return f"{path}.{key}".lstrip(".")
            found = _first_difference(value, parsed[key], f"{path}.{key}")
            if found is not None:
                return found
        return None
    if isinstance(given, list) and isinstance(parsed, list):
        for i, (a, b) in enumerate(zip(given, parsed, strict=False)):
            found = _first_difference(a, b, f"{path}[{i}]")
            if found is not None:
                return found
        return None if len(given) == len(parsed) else path.lstrip(".")
    return None if str(given) == str(parsed) else path.lstrip(".")


# --------------------------------------------------------------------------- placement


def placement_of(
    task_config: Mapping[str, Any] | None, cfg: KfpParams, workspace_claim: str = ""
) -> Placement:
    """The nodes' settings: the task's ``dsl.TaskConfig`` (the settings pipelines/platform.py
    applied to the task, forwarded by a KFP >= 2.15 backend), or, when it carries nothing (the
    local runner, an older backend), what ``platform.configure`` gives a training task from
    ``cfg`` (see :func:`default_placement`)."""
    tc = {k: v for k, v in (task_config or {}).items() if v}
    if not tc:
        return default_placement(cfg, workspace_claim)
    return Placement(
        resources=dict(tc.get("resources") or {}),
        env=tuple(tc.get("env") or ()),
        node_selector=dict(tc.get("node_selector") or tc.get("nodeSelector") or {}),
        tolerations=tuple(tc.get("tolerations") or ()),
        affinity=tc.get("affinity") or None,
        volumes=tuple(tc.get("volumes") or ()),
        volume_mounts=tuple(tc.get("volume_mounts") or tc.get("volumeMounts") or ()),
    )


def default_placement(cfg: KfpParams, workspace_claim: str = "") -> Placement:
    """What ``pipelines/platform.py`` gives the ``train`` task, as a TaskConfig would forward it:
    its resources and GPUs, the GPU nodes' selector and toleration, the MLflow and S3 secrets,
    the S3 endpoint, and the store's volume (``workspace_claim``: the Pipeline Run Workspace's
    claim, ``<workflow>-kfp-workspace``, known only inside a run).

    Raises:
        ValueError: ``kfp.store: workspace`` without ``workspace_claim``.
    """
    res = cfg.resources_of("train")
    gpus = cfg.gpu.count
    limits = {"cpu": res.cpu_limit, "memory": res.memory_limit}
    if gpus:
        limits[cfg.gpu.resource] = str(gpus)
    env = secret_env(cfg.mlflow_secret, cfg.s3_secret)
    if cfg.s3_endpoint:
        env.append({"name": "AWS_ENDPOINT_URL", "value": cfg.s3_endpoint})
    volumes: tuple[Mapping[str, Any], ...] = ()
    mounts: tuple[Mapping[str, Any], ...] = ()
    if cfg.store == "workspace":
        if not workspace_claim:
            raise ValueError(
                "kfp.store: workspace, but the task forwarded no volume (TaskConfig): the "
                "TrainJob's nodes cannot reach the Pipeline Run Workspace (KFP backend >= 2.15 "
                "forwards it; or use kfp.store: pvc with a ReadWriteMany claim)"
            )
        volumes = (
            {"name": WORKSPACE_VOLUME, "persistentVolumeClaim": {"claimName": workspace_claim}},
        )
        mounts = ({"name": WORKSPACE_VOLUME, "mountPath": WORKSPACE_MOUNT},)
    elif cfg.store == "pvc":
        volumes = ({"name": PVC_VOLUME, "persistentVolumeClaim": {"claimName": cfg.pvc_name}},)
        mounts = ({"name": PVC_VOLUME, "mountPath": cfg.pvc_mount},)
    return Placement(
        resources={"requests": {"cpu": res.cpu, "memory": res.memory}, "limits": limits},
        env=tuple(env),
        node_selector=dict(cfg.gpu.node_selector) if gpus else {},
        tolerations=(
            (
                {
                    "key": cfg.gpu.toleration_key,
                    "operator": "Exists",
                    "effect": cfg.gpu.toleration_effect,
                },
            )
            if gpus
            else ()
        ),
        volumes=volumes,
        volume_mounts=mounts,
    )


def gpus_of(placement: Placement, cfg: KfpParams) -> int:
    """GPUs per node: the task's GPU limit (its accelerator), else ``kfp.gpu.count``."""
    for section in ("limits", "requests"):
        value = (placement.resources.get(section) or {}).get(cfg.gpu.resource)
        if value is not None:
            return int(str(value))
    return cfg.gpu.count if not placement.resources else 0


# --------------------------------------------------------------------------- the files


@dataclass(frozen=True)
class JobFiles:
    """The files of one TrainJob in the shared store (the same paths on every node)."""

    root: Path  # <store>/<run>/trainjob/<strategy>
    params: Path  # the run's params, for --params
    manifest: Path  # the line's manifest (already in the store)
    labels: Path  # the partial labels (copied from the task's artifact)
    baseline: Path  # the deployed model transfer / omnia start from (copied)
    model: Path  # written by the job
    results: Path  # metrics.json, history.json, plots/, mlflow.json
    checkpoint: Path  # per-epoch checkpoint: a retried job resumes from it

    def args(self, strategy: str) -> tuple[str, ...]:
        """The arguments of `mentoring train` (and ``python -m mentoring.stages.train``)."""
        return (
            "--params",
            str(self.params),
            "--strategy",
            strategy,
            "--manifest",
            str(self.manifest),
            "--labels",
            str(self.labels),
            "--baseline",
            str(self.baseline),
            "--model",
            str(self.model),
            "--results",
            str(self.results),
            "--checkpoint",
            str(self.checkpoint),
        )


def job_files(store_dir: str, run_id: str, strategy: str, manifest: Path) -> JobFiles:
    """Where the TrainJob of ``strategy`` reads and writes in the store (nothing written).

    Raises:
        ValueError: without a store (``kfp.store: artifacts``): the nodes could not reach the
            line, nor hand the model back.
    """
    if not store_dir:
        raise ValueError(
            "train_distributed needs a shared store (kfp.store: workspace or pvc): the "
            "TrainJob's nodes read the line and write the model there; kfp.store: artifacts "
            "keeps them inside one pod"
        )
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", strategy)
    root = Path(store_dir) / (run_id or "run") / "trainjob" / slug
    return JobFiles(
        root=root,
        params=root / "params.yaml",
        manifest=manifest,
        labels=root / "inputs" / "partial_labels.npz",
        baseline=root / "inputs" / "deployed.pt",
        model=root / "model.pt",
        results=root / "results",
        # where the local `train` component keeps it too: either one resumes the other's
        checkpoint=adapter.checkpoint(store_dir, run_id, strategy, root),
    )


def stage_files(files: JobFiles, params: Params, labels: Path, baseline: Path) -> None:
    """Write the run's params and copy the task's input artifacts where the nodes read them."""
    for path in (labels, baseline):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: input of the TrainJob missing")
    files.labels.parent.mkdir(parents=True, exist_ok=True)
    files.results.mkdir(parents=True, exist_ok=True)
    files.params.write_text(yaml.safe_dump(adapter.pipeline_value(params), sort_keys=False))
    shutil.copyfile(labels, files.labels)
    shutil.copyfile(baseline, files.baseline)


def strategy_spec(
    params: Params,
    strategy: str,
    files: JobFiles,
    *,
    name: str,
    namespace: str,
    placement: Placement,
    num_nodes: int = 2,
    runtime: str = DEFAULT_RUNTIME,
    run_id: str = "",
    git_commit: str = "",
    deadline_s: int | None = None,
) -> TrainJobSpec:
    """The TrainJob of ``strategy`` with the run's settings (``params.kfp``) on ``placement``."""
    cfg = params.kfp
    env = {PIPELINE_ENV: run_id, GIT_ENV: git_commit, "PYTHONUNBUFFERED": "1"}
    labels = {
        "app.kubernetes.io/part-of": "mentoring",
        "app.kubernetes.io/component": "train",
        "mentoring/strategy": label_value(strategy),
    }
    if run_id:
        labels["mentoring/kfp-run"] = label_value(run_id)
    return TrainJobSpec(
        name=name,
        namespace=namespace,
        image=cfg.gpu_image,
        command=train_command(),
        args=files.args(strategy),
        num_nodes=num_nodes,
        runtime=runtime,
        gpu_resource=cfg.gpu.resource,
        gpus_per_node=gpus_of(placement, cfg),
        # the secrets by name, whatever the task forwarded (its entries win)
        placement=Placement(
            resources=placement.resources,
            env=tuple(_merge_env(secret_env(cfg.mlflow_secret, cfg.s3_secret), placement.env)),
            node_selector=placement.node_selector,
            tolerations=placement.tolerations,
            affinity=placement.affinity,
            volumes=placement.volumes,
            volume_mounts=placement.volume_mounts,
        ),
        env={k: v for k, v in env.items() if v},
        shm_size=cfg.gpu.shm_size,
        labels=labels,
        deadline_s=deadline_s,
    )


# --------------------------------------------------------------------------- the cluster


class TrainJobError(RuntimeError):
    """A TrainJob that failed, or did not finish in time; the message says what happened."""


class TrainJobTimeout(TrainJobError, TimeoutError):
    """A TrainJob still running when the wait's time was up."""


def phase(job: Mapping[str, Any]) -> str:
    """Created, Running, Suspended, Complete or Failed, from a TrainJob's status."""
    status = job.get("status") or {}
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    for final in (COMPLETE, FAILED):
        if conditions.get(final) == "True":
            return final
    if conditions.get(SUSPENDED) == "True":
        return SUSPENDED
    if any((j.get("active") or 0) + (j.get("ready") or 0) for j in status.get("jobsStatus") or []):
        return RUNNING
    return CREATED


def describe_conditions(job: Mapping[str, Any]) -> str:
    """One line per condition: ``Type=Status (reason): message``."""
    lines = [
        f"{c.get('type')}={c.get('status')} ({c.get('reason', '')}): {c.get('message', '')}"
        for c in (job.get("status") or {}).get("conditions") or []
    ]
    return "\n".join(f"  {line}" for line in lines) or "  (no conditions)"


class TrainJobClient:
    """TrainJobs of one namespace through the Kubernetes API.

    Args:
        custom: a ``kubernetes.client.CustomObjectsApi`` (or anything with its methods).
        core: a ``kubernetes.client.CoreV1Api``, for the nodes' logs; None: no logs.
        namespace: where the TrainJobs live (the pipeline's namespace).
    """

    def __init__(self, custom: Any, core: Any, namespace: str) -> None:
        self.custom, self.core, self.namespace = custom, core, namespace

    @classmethod
    def from_cluster(cls, namespace: str = "") -> TrainJobClient:
        """In a pod: its service account and namespace; elsewhere: the kube config."""
        from kubernetes import client, config

        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        if not namespace:
            if not _NAMESPACE_FILE.exists():
                raise ValueError("no namespace given and not running in a pod")
            namespace = _NAMESPACE_FILE.read_text().strip()
        api = client.ApiClient()
        return cls(client.CustomObjectsApi(api), client.CoreV1Api(api), namespace)

    def _ref(self) -> dict[str, str]:
        return {"group": GROUP, "version": VERSION, "namespace": self.namespace, "plural": PLURAL}

    def get(self, name: str) -> dict[str, Any]:
        job: dict[str, Any] = self.custom.get_namespaced_custom_object(**self._ref(), name=name)
        return job

    def delete(self, name: str) -> None:
        self.custom.delete_namespaced_custom_object(
            **self._ref(), name=name, propagation_policy="Foreground"
        )

    def create(
        self,
        body: Mapping[str, Any],
        log: Callable[[str], None] = print,
        sleep: Callable[[float], None] = time.sleep,
        gone_s: float = 300.0,
    ) -> dict[str, Any]:
        """Create ``body``; a TrainJob of that name left by an earlier try of the task is
        waited on again (running or complete) or replaced (failed: the new one resumes from
        the checkpoint)."""
        name = body["metadata"]["name"]
        try:
            created: dict[str, Any] = self.custom.create_namespaced_custom_object(
                **self._ref(), body=dict(body)
            )
            log(f"TrainJob {self.namespace}/{name} created")
            return created
        except Exception as exc:
            if getattr(exc, "status", None) != 409:
                raise TrainJobError(
                    f"TrainJob {self.namespace}/{name} could not be created: {_api_error(exc)}"
                ) from exc
        existing = self.get(name)
        if phase(existing) != FAILED:
            log(f"TrainJob {self.namespace}/{name} exists ({phase(existing)}): waiting on it")
            return existing
        log(f"TrainJob {self.namespace}/{name} exists and failed: replacing it")
        self.delete(name)
        waited = 0.0
        while waited < gone_s:
            try:
                self.get(name)
            except Exception as exc:
                if getattr(exc, "status", None) == 404:
                    return self.create(body, log, sleep, gone_s)
                raise
            sleep(2.0)
            waited += 2.0
        raise TrainJobError(f"TrainJob {self.namespace}/{name} still deleting after {gone_s}s")

    def logs(self, name: str, tail: int = 50) -> list[str]:
        """The last ``tail`` log lines of the node that failed (else node 0); best effort."""
        if self.core is None:
            return []
        try:
            pods = self.core.list_namespaced_pod(
                self.namespace, label_selector=f"{JOBSET_LABEL}={name},{RJOB_LABEL}={NODE}"
            ).items
            if not pods:
                return ["(no pods)"]

            def rank(pod: Any) -> tuple[int, int]:
                failed = (pod.status.phase if pod.status else "") == "Failed"
                index = int((pod.metadata.labels or {}).get(INDEX_LABEL, 0))
                return (0 if failed else 1, index)

            pod = sorted(pods, key=rank)[0]
            text = self.core.read_namespaced_pod_log(
                name=pod.metadata.name, namespace=self.namespace, container=NODE, tail_lines=tail
            )
            return [f"[{pod.metadata.name}] {line}" for line in str(text).splitlines()[-tail:]]
        except Exception as exc:
            return [f"(logs unavailable: {_api_error(exc)})"]

    def wait(
        self,
        name: str,
        timeout_s: float,
        poll_s: float = 15.0,
        log: Callable[[str], None] = print,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        max_errors: int = 5,
        delete_on_timeout: bool = True,
    ) -> dict[str, Any]:
        """Poll TrainJob ``name`` until Complete; return it.

        Raises:
            TrainJobError: it failed: its name, conditions and the last log lines.
            TrainJobTimeout: not done after ``timeout_s`` (deleted: its GPUs freed).
        """
        deadline = clock() + timeout_s
        last, errors = "", 0
        where = f"{self.namespace}/{name}"
        while True:
            try:
                job = self.get(name)
                errors = 0
            except Exception as exc:  # a transient API error: retried a few times
                errors += 1
                if errors > max_errors:
                    raise TrainJobError(f"TrainJob {where}: {_api_error(exc)}") from exc
                log(f"TrainJob {where}: {_api_error(exc)} (retrying)")
                sleep(poll_s)
                continue
            now = phase(job)
            if now != last:
                log(f"TrainJob {where}: {now}")
                last = now
            if now == COMPLETE:
                return job
            if now == FAILED:
                raise TrainJobError(self._report(f"TrainJob {where} failed", name, job))
            if clock() >= deadline:
                message = self._report(
                    f"TrainJob {where} not complete after {timeout_s:.0f}s ({now})", name, job
                )
                if delete_on_timeout:
                    self.delete(name)
                    message += "\n(deleted, its nodes freed)"
                raise TrainJobTimeout(message)
            sleep(poll_s)

    def _report(self, headline: str, name: str, job: Mapping[str, Any]) -> str:
        lines = self.logs(name)
        return (
            f"{headline}\nconditions:\n{describe_conditions(job)}\n"
            + ("last log lines:\n" + "\n".join(lines) + "\n" if lines else "")
            + f"see: kubectl describe trainjob {name} -n {self.namespace}; kubectl logs -n "
            f"{self.namespace} -l {JOBSET_LABEL}={name} -c {NODE}"
        )


def _api_error(exc: BaseException) -> str:
    status, reason = getattr(exc, "status", None), getattr(exc, "reason", None)
    if status is not None:
        return f"HTTP {status} {reason or ''}".strip()
    return f"{type(exc).__name__}: {exc}"


def run(
    client: TrainJobClient,
    body: Mapping[str, Any],
    timeout_s: float,
    poll_s: float = 15.0,
    log: Callable[[str], None] = print,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Create the TrainJob ``body`` (or find it again) and wait until it is Complete."""
    client.create(body, log=log, sleep=sleep)
    return client.wait(
        body["metadata"]["name"], timeout_s, poll_s, log=log, sleep=sleep, clock=clock
    )


def train_on_cluster(
    params: Params,
    strategy: str,
    *,
    manifest: Path,
    labels: Path,
    baseline: Path,
    store_dir: str,
    task_config: Mapping[str, Any] | None = None,
    run_id: str = "",
    git_commit: str = "",
    num_nodes: int = 2,
    runtime: str = DEFAULT_RUNTIME,
    timeout_s: int = 6 * 3600,
    poll_s: float | None = None,
    client: TrainJobClient | None = None,
    log: Callable[[str], None] = print,
    sleep: Callable[[float], None] = time.sleep,
) -> JobFiles:
    """Train ``strategy`` on ``num_nodes`` nodes: lay the inputs out in the store, create the
    TrainJob, wait for it (the cluster stops it after ``timeout_s``); return its files (the
    model at ``.model``, ``metrics.json`` and ``mlflow.json`` under ``.results``).

    Raises:
        ValueError: no shared store, or a TrainJob the Trainer API would not take.
        TrainJobError: the job failed, or wrote no model.
        TrainJobTimeout: still running after ``timeout_s`` (plus a grace for its deletion).
    """
    files = job_files(store_dir, run_id, strategy, manifest)
    stage_files(files, params, labels, baseline)
    client = client or TrainJobClient.from_cluster()
    spec = strategy_spec(
        params,
        strategy,
        files,
        name=job_name(run_id, strategy),
        namespace=client.namespace,
        placement=placement_of(task_config, params.kfp),
        num_nodes=num_nodes,
        runtime=runtime,
        run_id=run_id,
        git_commit=git_commit,
        deadline_s=timeout_s,
    )
    body = build_trainjob(spec)
    run(
        client,
        body,
        timeout_s + DELETE_GRACE_S,
        POLL_S if poll_s is None else poll_s,
        log=log,
        sleep=sleep,
    )
    if not files.model.is_file():
        raise TrainJobError(
            f"TrainJob {client.namespace}/{spec.name} is complete but {files.model} is not "
            f"there: do the nodes mount the same store as this task?"
        )
    return files


# --------------------------------------------------------------------------- the example


@dataclass(frozen=True)
class Example:
    """What the committed example stands for: a sample run of the retraining pipeline."""

    strategy: str = "transfer+omnia"
    num_nodes: int = 2
    namespace: str = "kubeflow-user-example-com"
    run_id: str = "0f9d6c1e-example-run"
    workflow: str = "mentoring-retraining-x7k2p"  # the run's Argo workflow (workspace claim)
    git_commit: str = "0" * 40
    deadline_s: int = 6 * 3600


def example_manifest(params: Params, ex: Example | None = None) -> str:
    """The TrainJob that ``train_distributed`` creates for ``transfer+omnia`` on 2 nodes with
    ``params``' ``kfp`` settings in a sample run (``pipelines/examples/trainjob.yaml``)."""
    ex = ex or Example()
    cfg = params.kfp
    store = cfg.pvc_mount if cfg.store == "pvc" else WORKSPACE_MOUNT
    run_dir = Path(store) / ex.run_id
    files = job_files(
        store, ex.run_id, ex.strategy, run_dir / "data" / "manifests" / "line.parquet"
    )
    spec = strategy_spec(
        params,
        ex.strategy,
        files,
        name=job_name(ex.run_id, ex.strategy),
        namespace=ex.namespace,
        placement=default_placement(cfg, f"{ex.workflow}-{WORKSPACE_VOLUME}"),
        num_nodes=ex.num_nodes,
        run_id=ex.run_id,
        git_commit=ex.git_commit,
        deadline_s=ex.deadline_s,
    )
    header = (
        "# Generated by `python -m mentoring.orchestration.trainjob --out "
        "pipelines/examples/trainjob.yaml`\n"
        f"# from params.yaml's kfp section: the TrainJob that train_distributed creates for "
        f"{ex.strategy}\n"
        f"# on {ex.num_nodes} nodes in a sample run (run id, namespace and workspace claim are "
        "examples). Do not edit.\n"
    )
    return header + yaml.safe_dump(build_trainjob(spec), sort_keys=False, width=100)


def main(argv: Sequence[str] | None = None) -> None:
    """Print (or write) the example TrainJob of a params file."""
    parser = argparse.ArgumentParser(description=example_manifest.__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", default="", help="file to write (default: stdout)")
    ns = parser.parse_args(argv)
    text = example_manifest(load_params(ns.params))
    if ns.out:
        Path(ns.out).parent.mkdir(parents=True, exist_ok=True)
        Path(ns.out).write_text(text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
