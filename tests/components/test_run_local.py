"""`mentoring kfp run-local`: both pipelines run here, every task, with kfp's SubprocessRunner.

A tiny line and 1-2 epochs (the numbers mean nothing; the wiring does): the retraining pipeline
runs its first-run branch (no champion: the baseline is trained, registered and made champion),
trains the strategies in parallel, reports and registers; the mining pipeline then mines with the
champion and publishes the tasks to a moto S3 server on loopback; a run whose task fails leaves
its MLflow parent run FAILED (the exit handler).
"""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from typer.testing import CliRunner

from mentoring.cli import app
from mentoring.config import Params, load_params
from mentoring.pipelines import submit
from tests.servers import aws_client_kwargs

REPO = Path(__file__).resolve().parents[2]


def readme_command() -> list[str]:
    """The README's ``mentoring kfp run-local --pipeline retraining ...`` command, as arguments
    (without ``mentoring``): the retraining run below is exactly the one a newcomer copies."""
    text = (REPO / "README.md").read_text()
    found = re.search(r"^mentoring kfp run-local --pipeline retraining(?:.*\\\n)*.*$", text, re.M)
    assert found, "README.md: no `mentoring kfp run-local --pipeline retraining` command"
    return shlex.split(found.group(0).replace("\\\n", " "), comments=True)[1:]


def _overrides(args: list[str]) -> dict[str, Any]:
    """The params the README's command sets (``--profile``, ``-S``, ``--param strategies``)."""
    from mentoring.config import parse_overrides

    sets = [args[i + 1] for i, a in enumerate(args) if a in ("-S", "--set")]
    found = parse_overrides(sets)
    found["base.profile"] = args[args.index("--profile") + 1]
    for i, a in enumerate(args):
        if a == "--param" and args[i + 1].startswith("strategies="):
            found["train.strategies"] = parse_overrides(["x=" + args[i + 1].split("=", 1)[1]])["x"]
    return found


README_ARGS = readme_command()
OVERRIDES: dict[str, Any] = _overrides(README_ARGS)
STRATEGIES = list(OVERRIDES["train.strategies"])


def _params(work: Path) -> Params:
    return load_params(
        REPO / "params.yaml", {**OVERRIDES, "tracking.uri": f"sqlite:///{work / 'mlflow.db'}"}
    )


def _client(params: Params) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=params.tracking.uri, registry_uri=params.tracking.uri)


def _pipeline_runs(params: Params) -> list[Any]:
    client = _client(params)
    exp = client.get_experiment_by_name(params.tracking.experiment)
    return client.search_runs([exp.experiment_id], "tags.kind = 'pipeline'")


def _task_dir(root: Path, task: str) -> Path:
    (run,) = [p for p in root.iterdir() if p.is_dir()]
    return run / task


@pytest.fixture(scope="module")
def retrained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Params, Path]]:
    work = tmp_path_factory.mktemp("kfp")
    saved = {k: os.environ.pop(k) for k in ("MLFLOW_TRACKING_URI",) if k in os.environ}
    params = _params(work)
    # the README's command as typed, with this test's own params file, store and folder
    args = [
        *README_ARGS,
        "--params",
        str(REPO / "params.yaml"),
        "-S",
        f"tracking.uri={params.tracking.uri}",
        "--workdir",
        str(work / "retraining"),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    print(result.output[-400:])
    yield params, work / "retraining" / "outputs"
    os.environ.update(saved)


def test_every_task_ran(retrained: tuple[Params, Path]) -> None:
    _, root = retrained
    (run,) = [p for p in root.iterdir() if p.is_dir()]
    tasks = {p.name for p in run.iterdir()}
    expected = {
        "start-run", "ingest", "validate", "champion", "train-baseline", "evaluate", "mine",
        "import-feedback", "report", "register", "finish-run",
    }  # fmt: skip
    assert expected <= tasks, sorted(tasks)
    iterations = sorted(t for t in tasks if "-iteration-" in t)
    assert len(iterations) == len(STRATEGIES)
    for it in iterations:
        model = run / it / "train" / "model"
        assert model.is_file() and model.stat().st_size > 0
        assert (run / it / "evaluate-3" / "evaluation" / "metrics.json").is_file()
    # the images stayed in the run workspace: the dataset artifact holds the manifest only
    line = run / "ingest" / "line"
    assert (line / "manifests" / "line.parquet").is_file() and not (line / "line").exists()
    table = (run / "report" / "table").read_text()
    assert "Baseline" in table and "transfer" in table.lower()
    assert "data:image/png;base64," in (run / "report" / "plots").read_text()


def test_tracking_and_registry(retrained: tuple[Params, Path]) -> None:
    params, root = retrained
    client = _client(params)
    (parent,) = _pipeline_runs(params)
    assert parent.info.status == "FINISHED"
    tags = parent.data.tags
    assert tags["kfp_pipeline"] == "mentoring-retraining" and tags["kfp_run_id"]
    assert tags["pipeline_key"] == tags["kfp_run_id"] and tags["params_sha256"]
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    variants = {r.data.tags["variant"] for r in children}
    assert variants == {"baseline", *STRATEGIES}
    # the strategies trained at the same time (ParallelFor): their training runs overlap
    spans = []
    for r in children:
        if r.data.tags["variant"] in STRATEGIES:
            (loss,) = client.get_metric_history(r.info.run_id, "train.loss")
            spans.append((r.info.start_time, loss.timestamp))
    assert max(s for s, _ in spans) < min(e for _, e in spans), spans
    decision = json.loads((_task_dir(root, "register") / "decision" / "decision.json").read_text())
    assert decision["first_model"] is not None  # no champion before: the baseline became one
    versions = {v.tags["variant"]: v.version for v in client.search_model_versions()}
    assert set(versions) == {"baseline", *STRATEGIES}
    champion = client.get_model_version_by_alias(params.tracking.registered_model, "champion")
    assert str(champion.version) == decision["aliases"]["champion"]


def test_mining_publishes_tasks(
    retrained: tuple[Params, Path], s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    params, root = retrained
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, **aws_client_kwargs())
    s3.create_bucket(Bucket="plant-mining")
    # the plant's line lives in S3: the ingest component reads it through the storage layer
    from mentoring.line.generate import generate_line

    generate_line(params, root.parent / "line-src")
    for path in sorted((root.parent / "line-src" / "line").rglob("*.png")):
        rel = path.relative_to(root.parent / "line-src" / "line").as_posix()
        s3.put_object(Bucket="plant-mining", Key=f"line/{rel}", Body=path.read_bytes())
    params = load_params(
        REPO / "params.yaml",
        {
            **OVERRIDES,
            "tracking.uri": params.tracking.uri,
            "line.source": "s3",
            "line.s3.uri": "s3://plant-mining/line",
        },
    )
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)  # the tasks' standard AWS chain
    run = submit.run_local(
        "mining", params, root.parent / "mining", ["tasks_s3_uri=s3://plant-mining/tasks"]
    )

    print(f"mining pipeline, run locally: {run.seconds:.0f} s")
    tasks_dir = _task_dir(run.root, "mine") / "tasks"
    tasks = json.loads((tasks_dir / "tasks.json").read_text())
    champion = _client(params).get_model_version_by_alias(
        params.tracking.registered_model, "champion"
    )
    assert tasks["model"]["name"] == f"models:/{params.tracking.registered_model}@champion"
    assert all(i.startswith("new-pool-new-pool-") for i in [t["image_id"] for t in tasks["images"]])
    keys = sorted(
        o["Key"] for o in s3.list_objects_v2(Bucket="plant-mining", Prefix="tasks/")["Contents"]
    )
    sha12 = keys[0].split("/")[1]
    # the round: its images (the annotation server's data root), Label Studio files, tasks
    images = [f"tasks/{sha12}/images/{t['path']}" for t in tasks["images"]]
    assert keys == sorted([
        *images,
        f"tasks/{sha12}/labelstudio/config.xml",
        f"tasks/{sha12}/labelstudio/mapping.json",
        f"tasks/{sha12}/labelstudio/tasks/tasks.json",
        f"tasks/{sha12}/tasks.json",
    ])  # fmt: skip
    body = s3.get_object(Bucket="plant-mining", Key=f"tasks/{sha12}/tasks.json")["Body"].read()
    assert body == (tasks_dir / "tasks.json").read_bytes()
    ls_key = f"tasks/{sha12}/labelstudio/tasks/tasks.json"
    ls_tasks = json.loads(s3.get_object(Bucket="plant-mining", Key=ls_key)["Body"].read())
    assert [t["data"]["image_id"] for t in ls_tasks] == [t["image_id"] for t in tasks["images"]]
    mine_out = json.loads((_task_dir(run.root, "mine") / "executor_output.json").read_text())
    assert mine_out["artifacts"]["tasks"]["artifacts"][0]["metadata"]["round"] == (
        f"s3://plant-mining/tasks/{sha12}"
    )
    fetched = json.loads((_task_dir(run.root, "fetch-model") / "executor_output.json").read_text())
    meta = fetched["artifacts"]["model"]["artifacts"][0]["metadata"]
    assert meta["version"] == str(champion.version)  # the champion mined...
    assert tasks["model"]["sha256"] == meta["sha256"]  # ...and the tasks say so


def test_failed_task_marks_parent_run_failed(retrained: tuple[Params, Path]) -> None:
    params, root = retrained
    before = {r.info.run_id for r in _pipeline_runs(params)}
    with pytest.raises(RuntimeError, match="fetch-model"):
        submit.run_local("mining", params, root.parent / "failing", ["champion_ref=no-such-alias"])
    (failed,) = [r for r in _pipeline_runs(params) if r.info.run_id not in before]
    assert failed.info.status == "FAILED"
    assert failed.data.tags["kfp_pipeline"] == "mentoring-mining"


def _round_of(run_root: Path) -> str:
    """The round a mining run published (its mine task's tasks metadata)."""
    out = json.loads((_task_dir(run_root, "mine") / "executor_output.json").read_text())
    return str(out["artifacts"]["tasks"]["artifacts"][0]["metadata"]["round"])


@pytest.mark.slow  # three pipeline runs (about 5 minutes): CI runs it after `make test`
def test_the_operators_loop_through_s3(
    retrained: tuple[Params, Path],
    s3_endpoint: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The loop on a cluster, with the real parts and no hand-copying: the mining pipeline
    publishes a round to S3 -> the real annotation server answers it over HTTP from S3 and its
    export button writes the feedback beside the tasks -> the retraining pipeline takes that
    round (mining_round: no mining, no simulated operator), imports exactly those verdicts,
    starts from the champion and gates -> a second mining round comes from the promoted
    champion. (The gate is opened, promotion.min_gain 0, to reach the second round: what is
    tested is the loop, not whether 1 epoch beats the champion.)"""
    from tests.integration.test_annotate_server import Operator, _request_id
    from tests.servers import annotate_server

    params, root = retrained
    params = load_params(
        REPO / "params.yaml",
        {
            **OVERRIDES,
            "tracking.uri": params.tracking.uri,
            "promotion.min_gain": 0.0,
            "promotion.max_original_drop": 1.0,
        },
    )
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, **aws_client_kwargs())
    s3.create_bucket(Bucket="plant-loop")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)  # the standard chain: pods, server
    client = _client(params)
    name = params.tracking.registered_model
    first_champion = client.get_model_version_by_alias(name, "champion")

    # 1. the mining pipeline publishes round 1
    mining = submit.run_local(
        "mining", params, root.parent / "loop-mining-1", ["tasks_s3_uri=s3://plant-loop/rounds"]
    )
    round_1 = _round_of(mining.root)
    assert round_1.startswith("s3://plant-loop/rounds/")

    # 2. the operators' station: the real server on the round, verdicts over HTTP, export
    station = tmp_path / "station"
    station.mkdir()
    monkeypatch.chdir(station)  # the server's fetched tasks and database live here
    db = station / "round-1.sqlite"
    given: dict[str, str] = {}
    with annotate_server(round_1, db) as server:
        op = Operator(server.url, "op-line-2")
        for _ in range(200):  # bounded: one image per call
            image = op.api("/api/next")["image"]
            if image is None:
                break
            shown = op.http.get(f"{server.url}/image/{image['image_id']}", timeout=30)
            assert shown.status_code == 200  # read from the round's images/ on S3
            assert shown.content[:8] == b"\x89PNG\r\n\x1a\n"
            for k, a in enumerate(image["areas"]):
                verdict = "defect" if (len(given) + k) % 3 == 0 else "healthy"
                body = {"request_id": _request_id(), "image_id": image["image_id"],
                        "area_id": a["area_id"], "verdict": verdict}  # fmt: skip
                op.api("/api/verdict", body)
                given[a["area_id"]] = verdict
            if not image["areas"]:
                op.api("/api/done", {"request_id": _request_id(), "image_id": image["image_id"]})
        exported = op.api("/api/export")
    assert given, "round 1 had no area to answer"
    assert exported["path"] == f"{round_1}/feedback/round-1.json"

    # 3. retraining takes the round the operators answered
    run = submit.run_local(
        "retraining",
        params,
        root.parent / "loop-retraining",
        ["strategies=[transfer]", f"mining_round={round_1}"],
    )
    (folder,) = [p for p in run.root.iterdir() if p.is_dir()]
    tasks = {p.name for p in folder.iterdir()}
    assert {"fetch-model", "import-round", "register"} <= tasks
    assert not {"mine", "import-feedback", "train-baseline"} & tasks  # no mining, no simulation
    metrics = json.loads((folder / "import-round" / "report" / "metrics.json").read_text())
    assert metrics["files"] == ["round-1.json"]
    n_defect = sum(v == "defect" for v in given.values())
    assert metrics["n_confirmed"] == n_defect and metrics["n_infirmed"] == len(given) - n_defect
    imported = json.loads((folder / "import-round" / "executor_output.json").read_text())
    tasks_meta = imported["artifacts"]["tasks"]["artifacts"][0]["metadata"]
    assert tasks_meta["round"] == round_1 and tasks_meta["sha256"].startswith(round_1[-12:])
    decision = json.loads((folder / "register" / "decision" / "decision.json").read_text())
    assert decision["first_model"] is None
    assert decision["champion"]["version"] == str(first_champion.version)
    assert decision["decision"] == "promoted", decision["reasons"]
    second_champion = client.get_model_version_by_alias(name, "champion")
    assert second_champion.version != first_champion.version
    assert second_champion.tags["variant"] == "transfer"

    # 4. round 2 comes from the promoted champion
    mining = submit.run_local(
        "mining", params, root.parent / "loop-mining-2", ["tasks_s3_uri=s3://plant-loop/rounds"]
    )
    fetched = json.loads(
        (_task_dir(mining.root, "fetch-model") / "executor_output.json").read_text()
    )
    assert fetched["artifacts"]["model"]["artifacts"][0]["metadata"]["version"] == str(
        second_champion.version
    )
    round_2 = _round_of(mining.root)
    assert round_2 != round_1


def test_missing_secret_fails_the_first_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture
) -> None:
    """As in a cluster's pod (the backend sets KFP_POD_NAME) with the MLflow secret missing:
    the first task fails at once, naming the secret and the variable, and nothing after it
    runs (no ingest, no training)."""
    params = _params(tmp_path)
    monkeypatch.setenv("KFP_POD_NAME", "mentoring-mining-test-pod")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(RuntimeError, match="start-run"):
        submit.run_local("mining", params, tmp_path / "no-secret")
    out = capfd.readouterr()
    text = out.out + out.err
    assert f"the Kubernetes secret '{params.kfp.mlflow_secret}'" in text
    assert "(key MLFLOW_TRACKING_URI) is missing or misnamed" in text
    assert not list((tmp_path / "no-secret").rglob("ingest"))  # nothing ran after it


def test_a_task_without_the_store_mount_fails_here_too(
    tmp_path: Path, capfd: pytest.CaptureFixture
) -> None:
    """The local runner mounts the workspace everywhere, a cluster only where a task's spec
    asks for it: a task reading the line without the store (no `store_dir`) fails locally as
    its pod would on a cluster (`adapter.line_root`)."""
    from kfp import dsl, local

    from mentoring.components.ingest import ingest
    from mentoring.components.validate import validate
    from mentoring.orchestration.adapter import pipeline_value

    def pipeline(params: dict) -> None:
        line = ingest(params=params, store_dir=dsl.WORKSPACE_PATH_PLACEHOLDER).outputs["line"]
        validate(params=params, line=line)  # no store_dir: the mount a cluster would not give

    pipeline.__annotations__ = {"params": dict, "return": None}
    unmounted = dsl.pipeline(
        name="unmounted",
        pipeline_config=dsl.PipelineConfig(workspace=dsl.WorkspaceConfig(size="1Gi")),
    )(pipeline)
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(tmp_path / "outputs"),
        workspace_root=str(tmp_path / "workspace"),
        raise_on_error=True,
    )
    with pytest.raises(RuntimeError, match="validate"):
        unmounted(params=pipeline_value(load_params(REPO / "params.yaml", OVERRIDES)))
    out = capfd.readouterr()
    assert "MountError: the line's images are in the store" in out.out + out.err
    assert "this task was given no store_dir" in out.out + out.err
