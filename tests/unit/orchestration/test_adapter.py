"""What every Kubeflow component body checks before it works: the store it may read, and on a
cluster the variables only a secret can give it."""

from __future__ import annotations

from pathlib import Path

import pytest

from mentoring.config import load_params
from mentoring.orchestration.adapter import (
    ClusterEnvError,
    MountError,
    check_cluster_env,
    line_root,
    params_from,
    pipeline_value,
)

REPO = Path(__file__).resolve().parents[3]
SECRETS = "MLFLOW_TRACKING_URI=plant-mlflow,AWS_ACCESS_KEY_ID=plant-s3"


def test_line_root_only_through_the_task_s_store(tmp_path: Path) -> None:
    store = tmp_path / "kfp-workspace" / "run" / "data"
    meta = {"store": str(store)}
    assert line_root("/artifact", {}, "") == Path("/artifact")  # the images are the artifact
    assert line_root("/artifact", meta, str(tmp_path / "kfp-workspace")) == store
    with pytest.raises(MountError, match="given no store_dir"):
        line_root("/artifact", meta, "")  # on a cluster: no volume in this pod
    with pytest.raises(MountError, match="outside this task's store_dir"):
        line_root("/artifact", meta, "/mnt/other")


def test_cluster_task_without_the_mlflow_secret_fails_at_once() -> None:
    params = load_params(REPO / "params.yaml")  # tracking.uri: sqlite:///mlflow.db
    env = {"KFP_POD_NAME": "retraining-abc-start-run", "MENTORING_SECRETS": SECRETS}
    with pytest.raises(ClusterEnvError) as err:
        check_cluster_env(params, env)
    message = str(err.value)
    assert "'plant-mlflow'" in message and "MLFLOW_TRACKING_URI" in message
    assert "retraining-abc-start-run" in message
    # the secret is there: the task goes on
    check_cluster_env(params, {**env, "MLFLOW_TRACKING_URI": "http://mlflow.plant:5000"})
    # a tracking server named in params needs no secret
    remote = load_params(REPO / "params.yaml", {"tracking.uri": "https://mlflow.plant"})
    check_cluster_env(remote, env)
    # not on a cluster (kfp.local, dvc repro): the embedded store stays the default
    check_cluster_env(params, {"MENTORING_SECRETS": SECRETS})


def test_every_component_checks_through_params_from(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KFP_POD_NAME", "mining-xyz-ingest")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MENTORING_SECRETS", SECRETS)
    value = pipeline_value(load_params(REPO / "params.yaml"))
    with pytest.raises(ClusterEnvError, match="plant-mlflow"):
        params_from(value)
