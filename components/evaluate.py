from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from mentoring.components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def evaluate(
    params: dict,
    name: str,
    line: Input[Dataset],
    model: Input[Model],
    evaluation: Output[Artifact],
    metrics: Output[Metrics],
    kfp_run_id: str = "",
    git_commit: str = "",
    store_dir: str = "",
) -> None:
    """The ``evaluate`` stage: per-domain metrics and plots of model ``name``.

    ``evaluation`` holds ``metrics.json`` and ``plots/`` (what ``report`` and ``register`` read);
    ``metrics`` shows mAP, precision and recall per domain in the Kubeflow UI, at cell level
    (``<domain>.map``) and defect level (``<domain>.defect.map``).
    """
    from pathlib import Path

    from mentoring.orchestration import adapter
    from mentoring.stages import evaluate as stage

    adapter.enter_run(kfp_run_id, git_commit)
    root = adapter.line_root(line.path, line.metadata, store_dir)
    results = Path(evaluation.path)
    m = stage.run(adapter.params_from(params), adapter.manifest_of(root), model.path, results, name)
    evaluation.metadata.update({"name": name, "model_sha256": model.metadata.get("sha256", "")})
    from mentoring.evaluation import summary

    # both levels: <domain>.map (cell) and <domain>.defect.map
    adapter.log_metrics(metrics, {d: summary(dm) for d, dm in m["domains"].items()})
