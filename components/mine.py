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
) -> None:
    """The ``mine`` stage: the deployed model picks the pool images operators should see.

    ``tasks`` holds ``tasks.json`` (the operators' work list); with ``s3_uri``
    (``s3://bucket/prefix``) it is also copied there, under the task file's sha256.
    """
    from pathlib import Path

    from mentoring.orchestration import adapter
    from mentoring.stages import mine as stage

    root = adapter.line_root(line.path, line.metadata)
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
    adapter.log_metrics(metrics, m)
