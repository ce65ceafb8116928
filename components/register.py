from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from mentoring.components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def register(
    params: dict,
    line: Input[Dataset],
    models: Input[list[Model]],
    evaluations: Input[list[Artifact]],
    deployed: Input[Model],
    deployed_evaluation: Input[Artifact],
    decision: Output[Artifact],
    metrics: Output[Metrics],
    kfp_run_id: str = "",
    git_commit: str = "",
    store_dir: str = "",
) -> None:
    """The ``register`` stage: register every trained model and promote the best one only
    through the gate (``decision/decision.json`` says why).

    When this run trained the deployed model (a first run: no champion yet) it is registered as
    the baseline and becomes the champion the strategies are compared with; a champion fetched
    from the registry is not registered again.
    """
    import json
    from pathlib import Path

    from mentoring.orchestration import adapter
    from mentoring.stages import register as stage

    adapter.enter_run(kfp_run_id, git_commit)
    root = adapter.line_root(line.path, line.metadata, store_dir)
    work = adapter.scratch("register")
    train_dir = adapter.layout(
        work / "train", {f"{m.metadata['name']}/mlflow.json": m.metadata["mlflow"] for m in models}
    )
    eval_dir = adapter.collect_dir(evaluations, work / "evaluate", "metrics.json")
    base_train = base_eval = None
    if "mlflow" in deployed.metadata:  # trained in this run
        base_train = adapter.layout(work / "baseline", {"mlflow.json": deployed.metadata["mlflow"]})
        base_eval = Path(deployed_evaluation.path)
    out = Path(decision.path)
    record = stage.run(
        # the strategies are the ones this run trained (the `strategies` parameter)
        adapter.params_from(params, {"train.strategies": [m.metadata["name"] for m in models]}),
        adapter.manifest_of(root),
        base_train,
        base_eval,
        train_dir,
        eval_dir,
        out,
    )
    decision.metadata.update(
        {k: record[k] for k in ("decision", "reasons", "aliases", "registered_model")}
    )
    adapter.log_metrics(metrics, json.loads((out / "metrics.json").read_text()))
