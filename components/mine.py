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

    ``tasks`` holds ``tasks.json`` (the operators' work list); with ``s3_uri``
    (``s3://bucket/prefix``) it is also copied there, under the task file's sha256, with the
    Label Studio tasks, labeling config and mapping under ``<sha256[:12]>/labelstudio/``.
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
        tasks.metadata["published"] = adapter.publish(out, s3_uri)
        # the same tasks as Label Studio tasks (detected areas as editable predictions) under
        # <s3_uri>/<sha256[:12]>/labelstudio/: tasks/ for a Label Studio S3 import storage,
        # config.xml and mapping.json (for `mentoring mentor import-labelstudio`) beside it
        from mentoring.data.manifest import read_manifest
        from mentoring.feedback.schema import read_tasks
        from mentoring.formats.labelstudio import export_tasks, write_export

        sha = tasks.metadata["sha256"]
        manifest = adapter.manifest_of(root)
        export = export_tasks(
            read_tasks(out), read_manifest(manifest, check_files=False), root, sha
        )
        prefix = f"{s3_uri.rstrip('/')}/{sha[:12]}/labelstudio"
        write_export(export, adapter.scratch("labelstudio"), s3_prefix=prefix)
        tasks.metadata["labelstudio"] = prefix
    adapter.log_metrics(metrics, m)
