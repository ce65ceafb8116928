"""``mentoring kfp ...``: compile, run, schedule and run locally the Kubeflow pipelines.

Example:
    mentoring kfp compile                                   # pipelines/compiled/*.yaml
    mentoring kfp run --host http://127.0.0.1:8080 --param train.epochs=30
    mentoring kfp schedule --host http://127.0.0.1:8080 --pipeline mining
    mentoring kfp run-local --pipeline retraining --profile tiny
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from mentoring.cli import PARAMS, ParamsOpt, SetOpt, _friendly, _params, console, out

kfp_app = typer.Typer(
    help="Kubeflow Pipelines: compile the retraining and mining pipelines, run or schedule them "
    "on a cluster, or run them here with the local runner.",
    no_args_is_help=True,
)

PipelineOpt = Annotated[
    str, typer.Option("--pipeline", help="retraining (weekly / on demand) or mining (daily).")
]
HostOpt = Annotated[
    str, typer.Option("--host", help="Kubeflow Pipelines API, e.g. http://127.0.0.1:8080.")
]
ParamOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--param",
        help="Run argument KEY=VALUE: a params.yaml key (train.epochs=30) or a pipeline "
        "parameter (dataset_repo=..., dataset_rev=main, strategies=[scratch,transfer]). Repeat.",
    ),
]
NamespaceOpt = Annotated[
    str | None, typer.Option(help="Kubernetes namespace (multi-user Kubeflow).")
]


@kfp_app.command("compile")
@_friendly
def kfp_compile(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder of the YAML.")] = Path(
        "pipelines/compiled"
    ),
    params: ParamsOpt = PARAMS,
    set_: SetOpt = None,
) -> None:
    """Compile both pipelines to YAML, with params.yaml's values as their defaults."""
    from mentoring.pipelines.submit import compile_all

    for path in compile_all(_params(params, set_), out_dir):
        out.print(f"compiled {path}")


@kfp_app.command("run")
@_friendly
def kfp_run(
    host: HostOpt,
    pipeline: PipelineOpt = "retraining",
    param: ParamOpt = None,
    run_name: Annotated[str | None, typer.Option(help="Run name in the UI.")] = None,
    namespace: NamespaceOpt = None,
    params: ParamsOpt = PARAMS,
    set_: SetOpt = None,
) -> None:
    """Start a run on a Kubeflow Pipelines host (a branch dataset_rev is resolved to its sha)."""
    from mentoring.pipelines.submit import submit

    r = submit(host, pipeline, _params(params, set_), param or [], run_name, namespace)
    out.print(f"started run {r['run_id']}: {r['url']}")


@kfp_app.command("schedule")
@_friendly
def kfp_schedule(
    host: HostOpt,
    pipeline: PipelineOpt = "retraining",
    cron: Annotated[
        str | None,
        typer.Option(help="6-field cron, seconds first (default kfp.<pipeline>_cron)."),
    ] = None,
    version: Annotated[str | None, typer.Option(help="Pipeline version name.")] = None,
    param: ParamOpt = None,
    namespace: NamespaceOpt = None,
    params: ParamsOpt = PARAMS,
    set_: SetOpt = None,
) -> None:
    """Upload a new pipeline version and run it on a schedule (max 1 at a time, no catch-up),
    replacing this pipeline's earlier schedule; a branch dataset_rev is resolved at each run."""
    from mentoring.pipelines.submit import schedule

    r = schedule(host, pipeline, _params(params, set_), param or [], cron, version, namespace)
    out.print(
        f"recurring run {r['recurring_run_id']} ({r['cron']}) on pipeline {r['pipeline_id']} "
        f"version {r['version_id']}"
    )
    for old in r["replaced"]:
        out.print(f"replaced the earlier recurring run {old}")


@kfp_app.command("run-local")
@_friendly
def kfp_run_local(
    pipeline: PipelineOpt = "retraining",
    profile: Annotated[
        str | None, typer.Option(help="line.profiles entry, e.g. tiny (sets base.profile).")
    ] = None,
    workdir: Annotated[
        Path, typer.Option(help="Task outputs (outputs/) and the run workspace (workspace/).")
    ] = Path("results/kfp-local"),
    param: ParamOpt = None,
    image: Annotated[
        str | None,
        typer.Option(
            help="Run every task in this container image (kfp's DockerRunner, DOCKER_HOST; "
            "e.g. localhost/mentoring:dev from `make image-test`) instead of subprocesses."
        ),
    ] = None,
    params: ParamsOpt = PARAMS,
    set_: SetOpt = None,
) -> None:
    """Run a pipeline here with kfp's local runner: every task, the strategies in parallel,
    tracked in the local MLflow store (or MLFLOW_TRACKING_URI)."""
    from mentoring.pipelines.submit import run_local

    sets = [*(set_ or []), *([f"base.profile={profile}"] if profile else [])]
    r = run_local(
        pipeline,
        _params(params, sets),
        workdir,
        param or [],
        log=lambda m: console.print(escape(m), highlight=False),
        image=image,
    )
    out.print(f"pipeline {pipeline} succeeded in {r.seconds:.0f} s; task outputs in {r.root}")
