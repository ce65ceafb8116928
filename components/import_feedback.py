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
    store_dir: str = "",
) -> None:
    """The ``mentor`` stage on the tasks this run just mined: the simulated operator answers
    them (``mentor.source: simulate``) and the answers are imported into partial labels
    (``labels/partial_labels.npz``). Real operators answer a published round instead, which
    the pipeline's ``mining_round`` imports (component ``import_round``).
    """
    from pathlib import Path

    from mentoring.orchestration import adapter
    from mentoring.stages import mentor as stage

    settings = adapter.params_from(params)
    if settings.mentor.source != "simulate":
        raise ValueError(
            f"mentor.source is {settings.mentor.source!r}, but this run mined its own tasks, "
            f"which no operator has seen: pass the pipeline parameter mining_round (the round "
            f"the operators answered, s3://.../<sha256[:12]>, printed by the mining run)"
        )
    root = adapter.line_root(line.path, line.metadata, store_dir)
    results = Path(report.path)
    out = Path(labels.path)
    m = stage.run(
        settings,
        adapter.manifest_of(root),
        Path(tasks.path) / "tasks.json",
        adapter.scratch("feedback"),
        out / "partial_labels.npz",
        results,
        simulated_out=out / "simulated.json",
    )
    labels.metadata.update(adapter.file_metadata(out / "partial_labels.npz", files=m["files"]))
    adapter.log_metrics(metrics, {k: v for k, v in m.items() if not isinstance(v, list)})
