from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Output

from mentoring.components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def validate(
    params: dict,
    line: Input[Dataset],
    report: Output[Artifact],
    metrics: Output[Metrics],
    store_dir: str = "",
) -> None:
    """The ``validate`` stage: the great-expectations suite of the line's manifest.

    Fails the task (and so the run) when an expectation fails; ``report`` holds the full results.
    """
    from mentoring.orchestration import adapter
    from mentoring.stages import validate as stage

    results = adapter.scratch("validate")
    root = adapter.line_root(line.path, line.metadata, store_dir)
    try:
        m = stage.run(adapter.params_from(params), adapter.manifest_of(root), results)
    finally:
        adapter.save_dir(results, report.path)
    adapter.log_metrics(metrics, m)
