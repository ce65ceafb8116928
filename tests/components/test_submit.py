"""`mentoring kfp run | schedule`: the calls made to a Kubeflow Pipelines host.

No cluster is reachable here, so ``kfp.Client`` is replaced at its boundary by a recorder that
checks what it is given (the compiled package is read while it exists, as the real client
uploads it) and answers like the API does.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest
import yaml
from typer.testing import CliRunner

from mentoring.cli import app
from mentoring.config import ConfigError, load_params
from mentoring.pipelines import submit
from tests.kfp_api import kfp_api

REPO = Path(__file__).resolve().parents[2]
HOST = "http://127.0.0.1:8080"


class FakeClient:
    """Records kfp.Client calls; ``mentoring-mining`` is already uploaded."""

    instances: ClassVar[list[FakeClient]] = []

    def __init__(self, host: str, namespace: str | None = None) -> None:
        self.host, self.namespace = host, namespace
        self.calls: list[tuple[str, dict[str, Any]]] = []
        FakeClient.instances.append(self)

    def _record(self, call: str, **kwargs: Any) -> None:
        for key in ("pipeline_file", "pipeline_package_path"):
            if key in kwargs:
                path = Path(kwargs[key])
                spec = next(yaml.safe_load_all(path.read_text()))
                kwargs["_pipeline_name"] = spec["pipelineInfo"]["name"]
        self.calls.append((call, kwargs))

    def create_run_from_pipeline_package(self, pipeline_file: str, **kw: Any) -> Any:
        self._record("create_run", pipeline_file=pipeline_file, **kw)
        return SimpleNamespace(run_id="run-123")

    def get_pipeline_id(self, name: str) -> str | None:
        self._record("get_pipeline_id", name=name)
        return "pipe-9" if name == "mentoring-mining" else None

    def upload_pipeline(self, pipeline_package_path: str, **kw: Any) -> Any:
        self._record("upload_pipeline", pipeline_package_path=pipeline_package_path, **kw)
        return SimpleNamespace(pipeline_id="pipe-new")

    def upload_pipeline_version(self, pipeline_package_path: str, **kw: Any) -> Any:
        self._record("upload_version", pipeline_package_path=pipeline_package_path, **kw)
        return SimpleNamespace(pipeline_version_id="ver-1")

    def get_experiment(self, **kw: Any) -> Any:
        self._record("get_experiment", **kw)
        raise ValueError("No experiment is found with name mentoring.")

    def create_experiment(self, name: str, **kw: Any) -> Any:
        self._record("create_experiment", name=name, **kw)
        return SimpleNamespace(experiment_id="exp-1")

    def create_recurring_run(self, **kw: Any) -> Any:
        self._record("create_recurring_run", **kw)
        return SimpleNamespace(recurring_run_id="rr-1")


@pytest.fixture
def fake_kfp(monkeypatch: pytest.MonkeyPatch) -> type[FakeClient]:
    import kfp

    FakeClient.instances = []
    monkeypatch.setattr(kfp, "Client", FakeClient)
    return FakeClient


def _calls(fake: type[FakeClient]) -> dict[str, dict[str, Any]]:
    (client,) = fake.instances
    assert client.host == HOST
    return dict(client.calls)


def test_run_builds_arguments(fake_kfp: type[FakeClient], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    result = CliRunner().invoke(
        app,
        [
            "kfp", "run", "--host", HOST,
            "--param", "train.epochs=3",
            "--param", "strategies=[transfer, transfer+omnia]",
            "--param", "mining_round=s3://plant/mining/3f2a9c0d1b7e/tasks.json",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "run-123" in result.output
    call = _calls(fake_kfp)["create_run"]
    assert call["_pipeline_name"] == "mentoring-retraining"
    assert call["experiment_name"] == "mentoring"
    args = call["arguments"]
    assert args["params"]["train"]["epochs"] == 3
    assert (
        args["params"]["train_baseline"]
        == load_params(REPO / "params.yaml").model_dump(mode="json")["train_baseline"]
    )
    assert args["strategies"] == ["transfer", "transfer+omnia"]
    assert args["mining_round"] == "s3://plant/mining/3f2a9c0d1b7e"  # the round, not its file
    assert len(args["git_commit"]) >= 40  # this checkout's commit, for the lineage


def test_run_resolves_branch_to_sha(
    fake_kfp: type[FakeClient], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A branch moves; the dataset step's cache key must not: the run gets the commit sha."""
    repo = tmp_path / "data-repo"
    repo.mkdir()
    for cmd in (
        ["git", "init", "-q", "-b", "main"],
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty",
         "-m", "v1"],
    ):  # fmt: skip
        subprocess.run(cmd, cwd=repo, check=True)
    sha = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, check=True, capture_output=True, text=True
    ).stdout.strip()
    monkeypatch.chdir(REPO)
    params = load_params(REPO / "params.yaml")
    submit.submit(HOST, "retraining", params, [f"dataset_repo={repo}", "dataset_rev=main"])
    args = _calls(fake_kfp)["create_run"]["arguments"]
    assert args["dataset_rev"] == sha and args["dataset_repo"] == str(repo)
    with pytest.raises(ValueError, match="'nope' not found"):
        submit.resolve_dataset({"dataset_repo": str(repo), "dataset_rev": "nope"})


def test_schedule_uploads_version_and_creates_recurring_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The real kfp.Client against the API's models (tests/kfp_api.py): first schedule creates
    the pipeline in the namespace, a version, the experiment and the recurring run."""
    monkeypatch.chdir(REPO)
    params = load_params(REPO / "params.yaml")
    with kfp_api() as (host, state):
        r = submit.schedule(
            host, "retraining", params, [], cron="0 0 2 * * *", version="v-test",
            namespace="plant-a",
        )  # fmt: skip
    (pipeline,) = state.pipelines.values()
    assert pipeline.display_name == "mentoring-retraining" and pipeline.namespace == "plant-a"
    (version,) = state.versions.values()
    assert version.display_name == "v-test" and version.pipeline_id == pipeline.pipeline_id
    assert state.packages[version.pipeline_version_id]["pipelineInfo"]["name"] == (
        "mentoring-retraining"
    )
    (experiment,) = state.experiments.values()
    assert experiment.display_name == "mentoring" and experiment.namespace == "plant-a"
    (job,) = state.recurring_runs.values()
    assert job.display_name == "mentoring-retraining-schedule"
    assert job.trigger.cron_schedule.cron == "0 0 2 * * *"
    assert job.max_concurrency == "1" and job.no_catchup is True
    assert job.experiment_id == experiment.experiment_id
    assert job.pipeline_version_reference.pipeline_version_id == version.pipeline_version_id
    arguments = job.runtime_config.parameters
    assert arguments["params"]["train"]["epochs"] == params.train.epochs
    assert r["recurring_run_id"] == job.recurring_run_id and r["replaced"] == []


def test_schedule_again_replaces_its_own_and_keeps_the_branch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second `schedule` in a multi-user namespace finds its pipeline there (no second
    upload, which the API refuses), adds a version, and replaces its recurring run (one
    schedule, not two); a schedule keeps a branch dataset_rev, resolved when each run runs."""
    monkeypatch.chdir(REPO)
    params = load_params(REPO / "params.yaml")
    data = [f"dataset_repo={tmp_path / 'line-data.git'}", "dataset_rev=main"]
    with kfp_api() as (host, state):
        first = submit.schedule(host, "mining", params, data, namespace="plant-a")
        runner = CliRunner().invoke(
            app,
            ["kfp", "schedule", "--host", host, "--pipeline", "mining", "--namespace", "plant-a",
             "--param", data[0], "--param", data[1], "--version", "v2"],
        )  # fmt: skip
        assert runner.exit_code == 0, runner.output
        assert f"replaced the earlier recurring run {first['recurring_run_id']}" in runner.output
        # another namespace: its own pipeline and schedule, the first one untouched
        other = submit.schedule(host, "mining", params, [], namespace="plant-b")
    assert len(state.pipelines) == 2 and len(state.versions) == 3
    jobs = list(state.recurring_runs.values())
    assert len(jobs) == 2 and first["recurring_run_id"] not in state.recurring_runs
    assert {j.recurring_run_id for j in jobs} >= {other["recurring_run_id"]}
    mine = [j for j in jobs if j.recurring_run_id != other["recurring_run_id"]]
    (job,) = mine
    assert job.trigger.cron_schedule.cron == params.kfp.mining_cron
    assert job.runtime_config.parameters["dataset_rev"] == "main"  # not a sha frozen today
    assert ("POST", "/apis/v2beta1/pipelines/upload?name=mentoring-mining&namespace=plant-a") in [
        (m, p.replace("%2F", "/")) for m, p in state.requests
    ]
    uploads = [
        p
        for m, p in state.requests
        if m == "POST" and p.startswith("/apis/v2beta1/pipelines/upload?")
    ]
    assert len(uploads) == 2  # plant-a once, plant-b once


def test_bad_arguments_are_named(
    fake_kfp: type[FakeClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)
    params = load_params(REPO / "params.yaml")
    with pytest.raises(ConfigError, match=r"train.*unknown key 'epochz'"):
        submit.arguments("retraining", params, ["train.epochz=3"])
    with pytest.raises(ConfigError, match="epochs"):
        submit.arguments("retraining", params, ["train.epochs=-1"])
    with pytest.raises(ValueError, match="expected key=value"):
        submit.arguments("retraining", params, ["train.epochs"])
    with pytest.raises(ValueError, match="6 fields"):
        submit.schedule(HOST, "mining", params, [], cron="0 2 * * *")
    # real operators' feedback without the round they answered: refused before any submission
    with pytest.raises(ValueError, match="mining_round"):
        submit.arguments("retraining", params, ["mentor.source=import"])
    with pytest.raises(ValueError, match="not a mining round"):
        submit.arguments("retraining", params, ["mining_round=s3://plant/mining/latest"])
    result = CliRunner().invoke(app, ["kfp", "run", "--host", HOST, "--param", "nope.x=1"])
    assert result.exit_code == 2 and "nope" in result.output
    assert not fake_kfp.instances or not fake_kfp.instances[-1].calls
