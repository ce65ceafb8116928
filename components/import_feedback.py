from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Output

from mentoring.components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def import_feedback(
    params: dict,
    line: Input[Dataset],
    tasks: Input[Artifact],
    labels: Output[Artifact],
    report: Output[Artifact],
    metrics: Output[Metrics],
    feedback_dir: str = "",
    store_dir: str = "",
) -> None:
    """The ``mentor`` stage: validate the operators' feedback on ``tasks`` and import it into
    partial labels (``labels/partial_labels.npz``).

    ``feedback_dir`` is a folder of feedback files (the annotation app's exports, on the store
    or a mounted volume); with ``mentor.source: simulate`` the simulated operator answers.
    """
    from pathlib import Path

    from mentoring.orchestration import adapter
    from mentoring.stages import mentor as stage

    root = adapter.line_root(line.path, line.metadata, store_dir)
    results = Path(report.path)
    out = Path(labels.path)
    folder = Path(feedback_dir) if feedback_dir else adapter.scratch("feedback")
    m = stage.run(
        adapter.params_from(params),
        adapter.manifest_of(root),
        Path(tasks.path) / "tasks.json",
        folder,
        out / "partial_labels.npz",
        results,
        simulated_out=out / "simulated.json",
    )
    labels.metadata.update(adapter.file_metadata(out / "partial_labels.npz", files=m["files"]))
    adapter.log_metrics(metrics, {k: v for k, v in m.items() if not isinstance(v, list)})
