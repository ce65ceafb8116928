from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from mentoring.components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def train(
    params: dict,
    strategy: str,
    line: Input[Dataset],
    labels: Input[Artifact],
    deployed: Input[Model],
    model: Output[Model],
    metrics: Output[Metrics],
    store_dir: str = "",
    kfp_run_id: str = "",
    git_commit: str = "",
) -> None:
    """The ``train`` stage: a new model with one ``strategy`` on original + mentored data.

    ``deployed`` is the model transfer learning and OMNIA-like start from (the registry's
    champion, or this run's baseline on a first run); ``labels`` the imported partial labels.
    """
    from pathlib import Path

    from mentoring.orchestration import adapter
    from mentoring.stages import train as stage

    adapter.enter_run(kfp_run_id, git_commit)
    root = adapter.line_root(line.path, line.metadata, store_dir)
    results = adapter.scratch("train")
    m = stage.run(
        adapter.params_from(params),
        strategy,
        adapter.manifest_of(root),
        Path(labels.path) / "partial_labels.npz",
        Path(deployed.path),
        Path(model.path),
        results,
        checkpoint=adapter.checkpoint(store_dir, kfp_run_id, strategy, results),
        show_progress=False,
    )
    model.metadata.update(adapter.model_metadata(Path(model.path), results, strategy))
    adapter.log_metrics(metrics, {k: v for k, v in m.items() if k not in ("epochs", "strategy")})
