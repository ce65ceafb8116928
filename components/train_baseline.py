from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from mentoring.components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def train_baseline(
    params: dict,
    line: Input[Dataset],
    model: Output[Model],
    metrics: Output[Metrics],
    store_dir: str = "",
    kfp_run_id: str = "",
    git_commit: str = "",
) -> None:
    """The ``train_baseline`` stage: the deployed model, trained on the original domain.

    With ``store_dir`` the checkpoint lives there, so a retried pod resumes where it stopped.
    """
    from pathlib import Path

    from mentoring.orchestration import adapter
    from mentoring.stages import train_baseline as stage

    adapter.enter_run(kfp_run_id, git_commit)
    root = adapter.line_root(line.path, line.metadata, store_dir)
    results = adapter.scratch("train_baseline")
    m = stage.run(
        adapter.params_from(params),
        adapter.manifest_of(root),
        Path(model.path),
        results,
        checkpoint=adapter.checkpoint(store_dir, kfp_run_id, "baseline", results),
        show_progress=False,
    )
    model.metadata.update(adapter.model_metadata(Path(model.path), results, "baseline"))
    adapter.log_metrics(metrics, {k: v for k, v in m.items() if k != "epochs"})
