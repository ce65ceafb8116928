from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Model, Output

from mentoring.components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def report(
    params: dict,
    line: Input[Dataset],
    deployed_evaluation: Input[Artifact],
    evaluations: Input[list[Artifact]],
    models: Input[list[Model]],
    table: Output[Markdown],
    plots: Output[HTML],
    summary: Output[Artifact],
    kfp_run_id: str = "",
    git_commit: str = "",
    store_dir: str = "",
) -> None:
    """The ``report`` stage: the paper's Table 1 of this run (``table``), its bar chart and t-SNE
    figure (``plots``, one page) and ``table1.json`` (``summary``).

    ``evaluations`` and ``models`` are collected from the parallel strategy tasks; the deployed
    model's evaluation is the table's baseline row.
    """
    import shutil
    from pathlib import Path

    from mentoring.orchestration import adapter
    from mentoring.stages import report as stage

    adapter.enter_run(kfp_run_id, git_commit)
    root = adapter.line_root(line.path, line.metadata, store_dir)
    work = adapter.scratch("report")
    evals = adapter.collect_dir(evaluations, work / "evaluate", "metrics.json")
    models_dir = work / "models"
    for m in models:
        models_dir.mkdir(exist_ok=True)
        shutil.copy2(m.path, models_dir / f"{m.metadata['name']}.pt")
    out = Path(summary.path)
    stage.run(
        # the strategies are the ones this run trained (the `strategies` parameter)
        adapter.params_from(params, {"train.strategies": [m.metadata["name"] for m in models]}),
        adapter.manifest_of(root),
        Path(deployed_evaluation.path),
        evals,
        models_dir,
        out,
    )
    shutil.copy2(out / "table1.md", table.path)
    adapter.html_page(sorted((out / "plots").glob("*.png")), Path(plots.path), "Table 1")
