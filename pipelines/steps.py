"""Task groups both pipelines share: the tracked start and the validated line.

start_run -> line_version (what the source holds now; never cached) -> ingest (cached only
when the images travel as its artifact: its key then holds the source's version) -> validate
"""

from typing import Any

from kfp import dsl

from mentoring.components.ingest import ingest
from mentoring.components.line_version import line_version
from mentoring.components.start_run import start_run
from mentoring.components.validate import validate
from mentoring.config import Params
from mentoring.pipelines.platform import configure, ingest_run_id, store_dir


def validated_line(
    settings: Params,
    pipeline: str,
    params: Any,
    dataset_repo: Any,
    dataset_rev: Any,
    git_commit: Any,
) -> tuple[Any, dsl.PipelineTask]:
    """start_run -> ingest -> validate, inside a pipeline function.

    Args:
        settings: the compile-time params (the ``kfp`` platform settings, the line's source).
        pipeline: the pipeline's name (a tag of the MLflow parent run).
        params, dataset_repo, dataset_rev, git_commit: the pipeline's parameters.

    Returns:
        The line (the ``Dataset`` artifact) and the validate task (to order tasks after it).
    """
    cfg = settings.kfp
    run_id = dsl.PIPELINE_JOB_ID_PLACEHOLDER
    start = configure(
        start_run(
            params=params,
            kfp_run_id=run_id,
            git_commit=git_commit,
            pipeline=pipeline,
            data=dataset_rev,
        ),
        "start_run",
        cfg,
    )
    version = configure(
        line_version(params=params, dataset_repo=dataset_repo, dataset_rev=dataset_rev),
        "line_version",
        cfg,
    ).after(start)
    line_task = configure(
        ingest(
            params=params,
            store_dir=store_dir(cfg),
            kfp_run_id=ingest_run_id(cfg, run_id),
            dataset_repo=dataset_repo,
            dataset_rev=version.outputs["rev"],
            source_key=version.outputs["key"],
        ),
        "ingest",
        cfg,
    )
    line = line_task.outputs["line"]
    return line, configure(
        validate(params=params, line=line, store_dir=store_dir(cfg)), "validate", cfg
    )
