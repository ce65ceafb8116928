from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from mentoring.components import IMAGE

#: the task's settings (pipelines/platform.py) that go to the TrainJob's nodes: GPUs and
#: requests, GPU nodes (selector, tolerations, affinity) only there; the secrets' env and the
#: store's volume on both (this pod lays the inputs out in the store and reads the model back)
PASSTHROUGHS = [
    dsl.TaskConfigPassthrough(field=dsl.TaskConfigField.RESOURCES, apply_to_task=False),
    dsl.TaskConfigPassthrough(field=dsl.TaskConfigField.KUBERNETES_NODE_SELECTOR),
    dsl.TaskConfigPassthrough(field=dsl.TaskConfigField.KUBERNETES_TOLERATIONS),
    dsl.TaskConfigPassthrough(field=dsl.TaskConfigField.KUBERNETES_AFFINITY),
    dsl.TaskConfigPassthrough(field=dsl.TaskConfigField.ENV, apply_to_task=True),
    dsl.TaskConfigPassthrough(field=dsl.TaskConfigField.KUBERNETES_VOLUMES, apply_to_task=True),
]


@dsl.component(base_image=IMAGE, install_kfp_package=False, task_config_passthroughs=PASSTHROUGHS)
def train_distributed(
    params: dict,
    strategy: str,
    line: Input[Dataset],
    labels: Input[Artifact],
    deployed: Input[Model],
    model: Output[Model],
    metrics: Output[Metrics],
    task_config: dsl.TaskConfig,
    store_dir: str = "",
    kfp_run_id: str = "",
    git_commit: str = "",
    num_nodes: int = 2,
    runtime: str = "torch-distributed",
    timeout_s: int = 21600,
) -> None:
    """The ``train`` stage on ``num_nodes`` GPU nodes: a Kubeflow Trainer ``TrainJob``
    (``runtime``: a ClusterTrainingRuntime with the Torch policy) runs ``torchrun -m
    mentoring.stages.train`` on each; this task waits for it (at most ``timeout_s``) and
    publishes the model it wrote to the store (``store_dir``: kfp.store workspace or pvc).

    Same inputs and outputs as ``train``; ``task_config`` is filled by the backend with the
    settings the pipeline gave this task (see PASSTHROUGHS).
    """
    import dataclasses
    import json
    import shutil
    from pathlib import Path

    from mentoring.orchestration import adapter, trainjob

    adapter.enter_run(kfp_run_id, git_commit)
    root = adapter.line_root(line.path, line.metadata, store_dir)
    files = trainjob.train_on_cluster(
        adapter.params_from(params),
        strategy,
        manifest=adapter.manifest_of(root),
        labels=Path(labels.path) / "partial_labels.npz",
        baseline=Path(deployed.path),
        store_dir=store_dir,
        task_config=dataclasses.asdict(task_config),
        run_id=kfp_run_id,
        git_commit=git_commit,
        num_nodes=num_nodes,
        runtime=runtime,
        timeout_s=timeout_s,
    )
    Path(model.path).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(files.model, model.path)
    model.metadata.update(adapter.model_metadata(Path(model.path), files.results, strategy))
    m = json.loads((files.results / "metrics.json").read_text())
    adapter.log_metrics(metrics, {k: v for k, v in m.items() if k not in ("epochs", "strategy")})
