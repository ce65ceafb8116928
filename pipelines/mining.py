"""The mining pipeline (daily): the champion picks the new images operators should see.

start_run -> ingest -> validate -> fetch_model (champion) -> mine -> tasks (+ S3 copy)
finish_run (exit handler)
"""

# no `from __future__ import annotations`: kfp reads the pipeline signature's real types
from typing import Any

from kfp import dsl

from mentoring.components.fetch_model import fetch_model
from mentoring.components.finish_run import finish_run
from mentoring.components.mine import mine
from mentoring.config import Params
from mentoring.orchestration.adapter import pipeline_value
from mentoring.pipelines.platform import configure, pipeline_config, store_dir
from mentoring.pipelines.steps import validated_line

NAME = "mentoring-mining"


def build(settings: Params) -> Any:
    """The mining pipeline with ``settings`` as the defaults of its parameters."""
    cfg = settings.kfp
    defaults = pipeline_value(settings)
    run_id = dsl.PIPELINE_JOB_ID_PLACEHOLDER

    @dsl.pipeline(
        name=NAME,
        description="Mine the new images with the registry's champion and publish the mining "
        "tasks for the operators.",
        pipeline_config=pipeline_config(cfg),
    )
    def mining(
        params: dict = defaults,
        champion_ref: str = "champion",
        tasks_s3_uri: str = cfg.tasks_s3_uri,
        dataset_repo: str = "",
        dataset_rev: str = "",
        git_commit: str = "",
    ) -> None:
        """Args:
        params: every section of params.yaml (defaults: the file at compile time).
        champion_ref: the registry alias (or version) that mines.
        tasks_s3_uri: s3://bucket/prefix the tasks are copied under; empty: artifact only.
        dataset_repo: git URL of a DVC-versioned line; empty: params' line.source.
        dataset_rev: a commit sha, tag or branch (resolved when the run runs).
        git_commit: the code's commit, for the MLflow lineage.
        """
        finish = configure(finish_run(params=params, kfp_run_id=run_id), "finish_run", cfg)
        with dsl.ExitHandler(finish, name="tracked-run"):
            line, checked = validated_line(
                settings, NAME, params, dataset_repo, dataset_rev, git_commit
            )
            fetched = configure(
                fetch_model(params=params, ref=champion_ref), "fetch_model", cfg
            ).after(checked)
            configure(
                mine(
                    params=params,
                    line=line,
                    model=fetched.outputs["model"],
                    s3_uri=tasks_s3_uri,
                    store_dir=store_dir(cfg),
                ),
                "mine",
                cfg,
            )

    return mining
