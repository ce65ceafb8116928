from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Output

from mentoring.components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def import_round(
    params: dict,
    line: Input[Dataset],
    round_uri: str,
    tasks: Output[Artifact],
    labels: Output[Artifact],
    report: Output[Artifact],
    metrics: Output[Metrics],
    store_dir: str = "",
) -> None:
    """The ``mentor`` stage on a published mining round: the operators' feedback
    (``<round>/feedback/*.json``) imported against that round's own tasks into partial labels
    (``labels/partial_labels.npz``); no operator is simulated and nothing is mined again.

    ``round_uri`` is the round (``s3://bucket/prefix/<sha256[:12]>``) or its ``tasks.json``,
    as the mining task printed it (:mod:`mentoring.feedback.rounds`).
    """
    from pathlib import Path

    from mentoring.feedback.rounds import MiningRound
    from mentoring.orchestration import adapter
    from mentoring.stages import mentor as stage

    root = adapter.line_root(line.path, line.metadata, store_dir)
    rnd = MiningRound.at(round_uri)
    tasks_path = rnd.fetch_tasks(Path(tasks.path) / "tasks.json")
    folder = adapter.scratch("feedback")
    fetched = rnd.fetch_feedback(folder)
    out = Path(labels.path)
    # the operators answered: their files only, whatever mentor.source says
    m = stage.run(
        adapter.params_from(params, {"mentor.source": "import"}),
        adapter.manifest_of(root),
        tasks_path,
        folder,
        out / "partial_labels.npz",
        Path(report.path),
        simulated_out=out / "simulated.json",
    )
    tasks.metadata.update(adapter.file_metadata(tasks_path, round=rnd.uri))
    labels.metadata.update(
        adapter.file_metadata(
            out / "partial_labels.npz", files=m["files"], round=rnd.uri, feedback=rnd.feedback_uri
        )
    )
    if m["stale_files"]:
        raise ValueError(
            f"{rnd.feedback_uri}: {m['stale_files']} answer another task set than round "
            f"{rnd.name} (their tasks_sha256 differs): move them to their own round"
        )
    print(f"round {rnd.uri}: imported {[p.name for p in fetched]}")
    adapter.log_metrics(metrics, {k: v for k, v in m.items() if not isinstance(v, list)})
