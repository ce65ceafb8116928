"""Platform settings of the compiled pipelines, from ``params.yaml``'s ``kfp`` section.

Applied at compile time, per task: the image, CPU/memory requests and limits, GPU nodes for the
training tasks (accelerator, node selector, toleration, a memory-backed ``/dev/shm``), the
Kubernetes secrets that carry MLflow and S3 credentials into the environment (by constant name:
a secret named by a pipeline parameter fails inside ``ParallelFor``, kubeflow/pipelines#13078),
retries with backoff on the tasks that talk to S3 or MLflow, the image store (a Pipeline Run
Workspace with its claim's access modes and storage class, or a PVC) and caching. ``kfp.local``
runners ignore the Kubernetes part; locally the variables are absent and the components fall back
on params (the embedded MLflow store). On a cluster (the backend sets ``KFP_POD_NAME``) a task
whose tracking store would be pod-local fails at once, naming the secret it expected
(:func:`mentoring.orchestration.adapter.check_cluster_env`).

Caching (the rule, docs/kubeflow-cluster.md): a task whose result depends on anything outside
its inputs (the registry, S3, a folder, a branch, the clock, MLflow's runs) is never served from
the cache. Only ``validate`` (a pure function of its params and line) and ``ingest`` when the
images travel as its artifact (its key then holds ``line_version``'s source key) may be.
"""

from __future__ import annotations

from kfp import dsl, kubernetes

from mentoring.config import KfpParams
from mentoring.orchestration.adapter import SECRETS_ENV

#: training tasks: GPU nodes and the CUDA image
GPU_TASKS = frozenset({"train", "train_baseline"})
#: tasks that do not talk to S3 or MLflow (no retries: a failure there is deterministic)
NO_RETRY = frozenset({"validate", "import_feedback"})
#: the only tasks that may be served from the cache: their outputs are a function of their
#: inputs alone (ingest only with kfp.store: artifacts, see :func:`cacheable`)
PURE_TASKS = frozenset({"validate", "ingest"})
#: MLflow secret keys -> environment variables (the credentials are optional: a server without
#: authentication needs only the URI)
MLFLOW_KEYS = {
    "MLFLOW_TRACKING_URI": "MLFLOW_TRACKING_URI",
    "MLFLOW_TRACKING_USERNAME": "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD": "MLFLOW_TRACKING_PASSWORD",
}
S3_KEYS = {k: k for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}


def store_dir(cfg: KfpParams) -> str:
    """The ``store_dir`` argument of the tasks that read the line (see ``kfp.store``)."""
    if cfg.store == "workspace":
        return dsl.WORKSPACE_PATH_PLACEHOLDER
    if cfg.store == "pvc":
        return cfg.pvc_mount
    return ""


def ingest_run_id(cfg: KfpParams, run_id: str) -> str:
    """The run id the ingest step keys its store folder on: only a shared PVC needs one (the
    workspace is the run's own; in the artifact store the step may be cached across runs)."""
    return run_id if cfg.store == "pvc" else ""


def cacheable(component: str, cfg: KfpParams) -> bool:
    """Whether ``component``'s task may be served from the cache (the module's rule).

    ``ingest`` only with ``kfp.store: artifacts``: with a workspace or PVC store a cached step
    would leave this run's store without the images.
    """
    if component == "ingest":
        return cfg.store == "artifacts"
    return component in PURE_TASKS


def workspace_pvc_patch(cfg: KfpParams) -> dict[str, object]:
    """The workspace claim's spec patch: access modes, and the storage class when one is named.

    The backend accepts only these two keys, requires access modes unless its administrator set
    a default spec, and refuses an empty storage class (2.17.0
    ``backend/src/v2/compiler/argocompiler/argo.go``, ``GetWorkspacePVC``).
    """
    patch: dict[str, object] = {"accessModes": list(cfg.workspace_access_modes)}
    if cfg.workspace_storage_class:
        patch["storageClassName"] = cfg.workspace_storage_class
    return patch


def pipeline_config(cfg: KfpParams) -> dsl.PipelineConfig | None:
    """The Pipeline Run Workspace of ``kfp.store: workspace``."""
    if cfg.store == "workspace":
        return dsl.PipelineConfig(
            workspace=dsl.WorkspaceConfig(
                size=cfg.workspace_size,
                kubernetes=dsl.KubernetesWorkspaceConfig(pvcSpecPatch=workspace_pvc_patch(cfg)),
            )
        )
    return None


def secrets_env(cfg: KfpParams) -> str:
    """``VAR=secret,...``: which secret each credential variable is read from (for the error a
    task gives when one is missing)."""
    pairs = [(v, cfg.mlflow_secret) for v in MLFLOW_KEYS.values()]
    pairs += [(v, cfg.s3_secret) for v in S3_KEYS.values()]
    return ",".join(f"{var}={secret}" for var, secret in pairs)


def configure(task: dsl.PipelineTask, component: str, cfg: KfpParams) -> dsl.PipelineTask:
    """Apply the ``kfp`` settings of ``component`` to ``task``; returns the task."""
    gpu = component in GPU_TASKS and cfg.gpu.count > 0
    task.set_container_image(cfg.gpu_image if gpu else cfg.image)
    res = cfg.resources_of(component)
    task.set_cpu_request(res.cpu).set_cpu_limit(res.cpu_limit)
    task.set_memory_request(res.memory).set_memory_limit(res.memory_limit)
    if gpu:
        task.set_accelerator_type(cfg.gpu.resource).set_accelerator_limit(cfg.gpu.count)
        for key, value in sorted(cfg.gpu.node_selector.items()):
            kubernetes.add_node_selector(task, key, value)
        kubernetes.add_toleration(
            task, key=cfg.gpu.toleration_key, operator="Exists", effect=cfg.gpu.toleration_effect
        )
        kubernetes.empty_dir_mount(
            task, "dshm", "/dev/shm", medium="Memory", size_limit=cfg.gpu.shm_size
        )
    kubernetes.use_secret_as_env(task, cfg.mlflow_secret, MLFLOW_KEYS, optional=True)
    kubernetes.use_secret_as_env(task, cfg.s3_secret, S3_KEYS, optional=True)
    task.set_env_variable(SECRETS_ENV, secrets_env(cfg))
    if cfg.s3_endpoint:
        task.set_env_variable("AWS_ENDPOINT_URL", cfg.s3_endpoint)
    if cfg.store == "pvc":
        kubernetes.mount_pvc(task, cfg.pvc_name, cfg.pvc_mount)
    if component not in NO_RETRY and cfg.retry.count:
        task.set_retry(cfg.retry.count, cfg.retry.backoff, cfg.retry.factor, cfg.retry.max_backoff)
    task.set_caching_options(cacheable(component, cfg))
    return task
