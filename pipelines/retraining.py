"""The retraining pipeline (weekly or on demand): the whole mentoring method as Kubeflow tasks.

start_run -> ingest -> validate -> champion?
    none  -> train_baseline -> evaluate          (first run: the baseline is deployed)
    found -> fetch_model    -> evaluate          (the champion is deployed)
-> mining_round empty: mine (deployed model) -> import_feedback (simulated operator)
   mining_round given:  import_round (the operators' feedback on that published round)
-> ParallelFor(strategies): train -> evaluate
-> report (Table 1) ; register (gate, champion alias)
finish_run (exit handler: the MLflow parent run FINISHED or FAILED)
"""

# no `from __future__ import annotations`: kfp reads the pipeline signature's real types
from typing import Any

from kfp import dsl

from mentoring.components.champion import champion
from mentoring.components.evaluate import evaluate
from mentoring.components.fetch_model import fetch_model
from mentoring.components.finish_run import finish_run
from mentoring.components.import_feedback import import_feedback
from mentoring.components.import_round import import_round
from mentoring.components.mine import mine
from mentoring.components.register import register
from mentoring.components.report import report
from mentoring.components.train import train
from mentoring.components.train_baseline import train_baseline
from mentoring.components.train_distributed import train_distributed
from mentoring.config import Params
from mentoring.orchestration.adapter import pipeline_value
from mentoring.pipelines.platform import configure, pipeline_config, store_dir
from mentoring.pipelines.steps import validated_line

NAME = "mentoring-retraining"


def build(settings: Params) -> Any:
    """The retraining pipeline with ``settings`` as the defaults of its parameters."""
    cfg = settings.kfp
    defaults = pipeline_value(settings)
    store = store_dir(cfg)
    run_id = dsl.PIPELINE_JOB_ID_PLACEHOLDER

    @dsl.pipeline(
        name=NAME,
        description="Retrain the defect segmenter from operator feedback (mentoring), evaluate "
        "every strategy per domain and promote the best one through the gate.",
        pipeline_config=pipeline_config(cfg),
    )
    def retraining(
        params: dict = defaults,
        strategies: list = list(settings.train.strategies),  # noqa: B006 (a KFP default)
        dataset_repo: str = "",
        dataset_rev: str = "",
        mining_round: str = "",
        git_commit: str = "",
    ) -> None:
        """Args:
        params: every section of params.yaml (defaults: the file at compile time).
        strategies: the strategies trained in parallel (train.strategies).
        dataset_repo: git URL of a DVC-versioned line; empty: params' line.source.
        dataset_rev: a commit sha, tag or branch (resolved when the run runs, by line_version).
        mining_round: the published mining round the operators answered
            (s3://.../<tasks sha256[:12]>, printed by the mining run): its feedback is
            imported against its own tasks. Empty: mine now, the simulated operator answers.
        git_commit: the code's commit, for the MLflow lineage (set by `mentoring kfp run`).
        """
        finish = configure(finish_run(params=params, kfp_run_id=run_id), "finish_run", cfg)
        with dsl.ExitHandler(finish, name="tracked-run"):
            common = {
                "params": params,
                "kfp_run_id": run_id,
                "git_commit": git_commit,
                # every task that reads the line gets the store (what mounts it on a cluster)
                "store_dir": store,
            }
            line, checked = validated_line(
                settings, NAME, params, dataset_repo, dataset_rev, git_commit
            )
            champ = configure(champion(params=params), "champion", cfg).after(checked)
            with dsl.If(champ.output == "", name="first-run"):
                base = configure(train_baseline(**common, line=line), "train_baseline", cfg)
                base_eval = configure(
                    evaluate(**common, name="baseline", line=line, model=base.outputs["model"]),
                    "evaluate",
                    cfg,
                )
            with dsl.Else(name="from-champion"):
                fetched = configure(fetch_model(params=params, ref="champion"), "fetch_model", cfg)
                fetched_eval = configure(
                    evaluate(**common, name="baseline", line=line, model=fetched.outputs["model"]),
                    "evaluate",
                    cfg,
                )
            deployed = dsl.OneOf(base.outputs["model"], fetched.outputs["model"])
            deployed_eval = dsl.OneOf(
                base_eval.outputs["evaluation"], fetched_eval.outputs["evaluation"]
            )
            with dsl.If(mining_round == "", name="mine-now"):
                mined = configure(
                    mine(params=params, line=line, model=deployed, store_dir=store), "mine", cfg
                )
                simulated = configure(
                    import_feedback(
                        params=params, line=line, tasks=mined.outputs["tasks"], store_dir=store
                    ),
                    "import_feedback",
                    cfg,
                )
            with dsl.Else(name="operators-round"):
                answered = configure(
                    import_round(params=params, line=line, round_uri=mining_round, store_dir=store),
                    "import_round",
                    cfg,
                )
            labels = dsl.OneOf(simulated.outputs["labels"], answered.outputs["labels"])
            with dsl.ParallelFor(strategies) as strategy:
                inputs = {
                    **common,
                    "strategy": strategy,
                    "line": line,
                    "labels": labels,
                    "deployed": deployed,
                }
                trained = configure(
                    train_distributed(
                        **inputs, num_nodes=cfg.trainjob_nodes, runtime=cfg.trainjob_runtime
                    )
                    if cfg.trainer == "trainjob"
                    else train(**inputs),
                    "train",  # the GPU settings: on the TrainJob's nodes (passthroughs)
                    cfg,
                )
                evaluated = configure(
                    evaluate(**common, name=strategy, line=line, model=trained.outputs["model"]),
                    "evaluate",
                    cfg,
                )
            # one Collected per consumer: kfp 2.17 fails to compile a shared one ("for-loop-N")
            configure(
                report(
                    **common,
                    line=line,
                    deployed_evaluation=deployed_eval,
                    evaluations=dsl.Collected(evaluated.outputs["evaluation"]),
                    models=dsl.Collected(trained.outputs["model"]),
                ),
                "report",
                cfg,
            )
            configure(
                register(
                    **common,
                    line=line,
                    models=dsl.Collected(trained.outputs["model"]),
                    evaluations=dsl.Collected(evaluated.outputs["evaluation"]),
                    deployed=deployed,
                    deployed_evaluation=deployed_eval,
                ),
                "register",
                cfg,
            )

    return retraining
