"""The ``mlflow_server_uri`` fixture serves a working tracking server: write a run, read it back."""

from __future__ import annotations

import uuid

import mlflow
import pytest

pytestmark = pytest.mark.network


def test_log_and_read_back_a_metric(mlflow_server_uri: str) -> None:
    client = mlflow.MlflowClient(tracking_uri=mlflow_server_uri)
    experiment_id = client.create_experiment(f"smoke-{uuid.uuid4().hex[:8]}")
    run = client.create_run(experiment_id)
    client.log_metric(run.info.run_id, "ap", 0.75, step=1)
    client.set_terminated(run.info.run_id)

    history = client.get_metric_history(run.info.run_id, "ap")
    assert [(m.value, m.step) for m in history] == [(0.75, 1)]
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
    # The experiment's artifacts are proxied by the server, not written to a client path.
    assert client.get_experiment(experiment_id).artifact_location.startswith("mlflow-artifacts:")
