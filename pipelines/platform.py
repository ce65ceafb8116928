"""Platform settings of the compiled pipelines, from ``params.yaml``'s ``kfp`` section.

Applied at compile time, per task: the image, CPU/memory requests and limits, GPU nodes for the
training tasks (accelerator, node selector, toleration, a memory-backed ``/dev/shm``), the
Kubernetes secrets that carry MLflow and S3 credentials into the environment (by constant name:
a secret named by a pipeline parameter fails inside ``ParallelFor``, kubeflow/pipelines#13078),
retries with backoff on the tasks that talk to S3 or MLflow, and the image store (a Pipeline Run
Workspace or a PVC). ``kfp.local`` runners ignore the Kubernetes part; locally the variables are
absent and the components fall back on params (the embedded MLflow store).
"""

from __future__ import annotations

from kfp import dsl, kubernetes

from mentoring.config import KfpParams, Params

#: training tasks: GPU nodes and the CUDA image
GPU_TASKS = frozenset({"train", "train_baseline"})
#: tasks that do not talk to S3 or MLflow (no retries: a failure there is deterministic)
NO_RETRY = frozenset({"validate", "import_feedback"})
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


def cache_line(params: Params, cfg: KfpParams) -> bool:
    """Whether the ingest step may be cached: its cache key is its arguments (params, dataset
    repo and commit sha), so only when the images travel as its artifact (a cached step's
    workspace or PVC folder would not be there) and the line does not come from a folder whose
    content the key cannot see."""
    return cfg.store == "artifacts" and params.line.source != "folder"


def pipeline_config(cfg: KfpParams) -> dsl.PipelineConfig | None:
    """The Pipeline Run Workspace of ``kfp.store: workspace``."""
    if cfg.store == "workspace":
        return dsl.PipelineConfig(workspace=dsl.WorkspaceConfig(size=cfg.workspace_size))
    return None


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
    if cfg.s3_endpoint:
        task.set_env_variable("AWS_ENDPOINT_URL", cfg.s3_endpoint)
    if cfg.store == "pvc":
        kubernetes.mount_pvc(task, cfg.pvc_name, cfg.pvc_mount)
    if component not in NO_RETRY and cfg.retry.count:
        task.set_retry(cfg.retry.count, cfg.retry.backoff, cfg.retry.factor, cfg.retry.max_backoff)
    return task
