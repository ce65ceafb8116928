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
            "--param", "feedback_dir=/mnt/feedback",
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
    assert args["feedback_dir"] == "/mnt/feedback"
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
    fake_kfp: type[FakeClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)
    params = load_params(REPO / "params.yaml")
    r = submit.schedule(HOST, "retraining", params, [], cron="0 0 2 * * *", version="v-test")
    calls = _calls(fake_kfp)
    assert calls["upload_pipeline"]["pipeline_name"] == "mentoring-retraining"  # first upload
    assert calls["upload_version"]["pipeline_version_name"] == "v-test"
    assert calls["upload_version"]["pipeline_id"] == "pipe-new"
    assert calls["create_experiment"]["name"] == "mentoring"
    job = calls["create_recurring_run"]
    assert job["cron_expression"] == "0 0 2 * * *"
    assert job["max_concurrency"] == 1 and job["no_catchup"] is True
    assert job["pipeline_id"] == "pipe-new" and job["version_id"] == "ver-1"
    assert job["experiment_id"] == "exp-1"
    assert job["params"]["params"]["train"]["epochs"] == params.train.epochs
    assert r["recurring_run_id"] == "rr-1"


def test_schedule_mining_default_cron_existing_pipeline(
    fake_kfp: type[FakeClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)
    params = load_params(REPO / "params.yaml")
    submit.schedule(HOST, "mining", params, ["tasks_s3_uri=s3://plant/mining"])
    calls = _calls(fake_kfp)
    assert "upload_pipeline" not in calls  # already there: a new version only
    assert calls["upload_version"]["pipeline_id"] == "pipe-9"
    job = calls["create_recurring_run"]
    assert job["cron_expression"] == params.kfp.mining_cron
    assert job["params"]["tasks_s3_uri"] == "s3://plant/mining"
    assert "strategies" not in job["params"]


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
    result = CliRunner().invoke(app, ["kfp", "run", "--host", HOST, "--param", "nope.x=1"])
    assert result.exit_code == 2 and "nope" in result.output
    assert not fake_kfp.instances or not fake_kfp.instances[-1].calls
