from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from mentoring.components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def mine(
    params: dict,
    line: Input[Dataset],
    model: Input[Model],
    tasks: Output[Artifact],
    metrics: Output[Metrics],
    s3_uri: str = "",
    store_dir: str = "",
) -> None:
    """The ``mine`` stage: the deployed model picks the pool images operators should see.

    ``tasks`` holds ``tasks.json`` (the operators' work list). With ``s3_uri``
    (``s3://bucket/prefix``) the task set is also published there as a *round*,
    ``<s3_uri>/<sha256[:12]>/`` (:mod:`mentoring.feedback.rounds`): the mined images under
    ``images/``, the Label Studio tasks, config and mapping under ``labelstudio/``, then
    ``tasks.json``; operators answer it with ``mentoring annotate serve --tasks <round>``, and
    the retraining pipeline's ``mining_round`` imports its ``feedback/``.
    """
    from pathlib import Path

    from mentoring.orchestration import adapter
    from mentoring.stages import mine as stage

    root = adapter.line_root(line.path, line.metadata, store_dir)
    out = Path(tasks.path) / "tasks.json"
    name = model.metadata.get("uri") or model.metadata.get("name") or "deployed"
    m = stage.run(
        adapter.params_from(params),
        adapter.manifest_of(root),
        Path(model.path),
        out,
        adapter.scratch("mine"),
        model_name=name,
    )
    tasks.metadata.update(adapter.file_metadata(out, model=name, n_images=m.get("n_mined", 0)))
    if s3_uri:
        from mentoring.data.manifest import read_manifest
        from mentoring.feedback.rounds import MiningRound, publish_round
        from mentoring.feedback.schema import read_tasks
        from mentoring.formats.labelstudio import export_tasks, write_export
        from mentoring.storage import is_s3

        if not is_s3(s3_uri):
            raise ValueError(f"tasks_s3_uri {s3_uri!r}: expected s3://bucket/prefix")
        mining = read_tasks(out)
        rnd = MiningRound.of_tasks(out, s3_uri)
        # the same tasks as Label Studio tasks (detected areas as editable predictions):
        # tasks/ for a Label Studio S3 import storage, config.xml and mapping.json (for
        # `mentoring mentor import-labelstudio`) beside it
        export = export_tasks(
            mining,
            read_manifest(adapter.manifest_of(root), check_files=False),
            root,
            tasks.metadata["sha256"],
        )
        write_export(export, adapter.scratch("labelstudio"), s3_prefix=rnd.labelstudio_uri)
        publish_round(out, root, s3_uri)  # the images, then tasks.json (the round complete)
        tasks.metadata.update(
            published=rnd.tasks_uri, round=rnd.uri, labelstudio=rnd.labelstudio_uri
        )
        print(
            f"mining round {rnd.uri}: {len(mining.images)} images; operators: "
            f"`mentoring annotate serve --tasks {rnd.tasks_uri}`; then retrain with "
            f"mining_round={rnd.uri}"
        )
    adapter.log_metrics(metrics, m)
