"""Tracking and registration against a real `mlflow server` on loopback, and fail-early.

A tiny line; the baseline and one strategy trained for an epoch with ``MLFLOW_TRACKING_URI``
pointing at the server; the `register` stage registers both, makes the baseline champion and
runs the gate; the champion served by `mlflow.pyfunc` predicts what the torch model predicts.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
import torch

from mentoring.config import load_params
from mentoring.evaluation import predict
from mentoring.models.store import load_model
from mentoring.registry import Registry
from mentoring.stages import evaluate, line, mentor, mine, register, train, train_baseline
from tests.servers import mlflow_model_server

REPO = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).parent / "mentoring")


@pytest.fixture(scope="module")
def tiny_line(tmp_path_factory: pytest.TempPathFactory) -> Path:
    wd = tmp_path_factory.mktemp("server-line")
    p = load_params(REPO / "params.yaml", {"base.profile": "tiny"})
    line.run(p, wd / "data", wd / "results/line")
    return wd


def test_train_and_register_against_a_tracking_server(
    tiny_line: Path, mlflow_server_uri: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server_uri)
    wd = tiny_line
    p = load_params(
        REPO / "params.yaml",
        {
            "base.profile": "tiny",
            "train_baseline.epochs": 1,
            "train.epochs": 1,
            "train.strategies": ["scratch"],
            "evaluate.n_examples": 0,
            "mine.threshold": 0.01,  # an epoch-old model detects little at 0.5
            "tracking.experiment": "server-test",
            "tracking.registered_model": "server-segmenter",
        },
    )
    man = wd / "data/manifests/line.parquet"
    r = wd / "results"
    train_baseline.run(p, man, wd / "models/baseline.pt", r / "train_baseline", show_progress=False)
    evaluate.run(p, man, wd / "models/baseline.pt", r / "evaluate_baseline", "baseline")
    mine.run(p, man, wd / "models/baseline.pt", wd / "data/mining/tasks.json", r / "mine")
    mentor.run(
        p,
        man,
        wd / "data/mining/tasks.json",
        wd / "data/feedback",
        wd / "data/mentor/partial_labels.npz",
        r / "mentor",
    )
    train.run(
        p,
        "scratch",
        man,
        wd / "data/mentor/partial_labels.npz",
        wd / "models/baseline.pt",
        wd / "models/scratch.pt",
        r / "train/scratch",
        show_progress=False,
    )
    evaluate.run(p, man, wd / "models/scratch.pt", r / "evaluate/scratch", "scratch")

    def register_all() -> dict[str, Any]:
        return register.run(
            p,
            man,
            r / "train_baseline",
            r / "evaluate_baseline",
            r / "train",
            r / "evaluate",
            r / "register",
        )

    decision = register_all()

    # the runs: one parent, nested variant runs with per-epoch metrics, eval metrics, lineage
    client = mlflow.MlflowClient(mlflow_server_uri)
    exp = client.get_experiment_by_name("server-test")
    runs = {
        r.data.tags.get("variant", "pipeline"): r for r in client.search_runs([exp.experiment_id])
    }
    assert set(runs) == {"pipeline", "baseline", "scratch"}
    base = runs["baseline"]
    assert base.data.tags["mlflow.parentRunId"] == runs["pipeline"].info.run_id
    assert len(base.data.tags["manifest_sha256"]) == 64
    assert base.data.tags["params_sha256"] == runs["scratch"].data.tags["params_sha256"]
    assert "new.map" in base.data.metrics and "train.loss" in base.data.metrics
    assert base.data.params["train_baseline.epochs"] == "1"
    history = client.get_metric_history(runs["scratch"].info.run_id, "train.loss")
    assert [m.step for m in history] == [1]

    # the registry: baseline first, then the gate on the candidate
    assert decision["first_model"]["first_model"]
    assert decision["candidate"]["variant"] == "scratch"
    reg = Registry(mlflow_server_uri, "server-segmenter")
    assert reg.aliases()["champion"] == decision["aliases"]["champion"]
    assert (
        reg.version(decision["candidate"]["version"]).tags["gate_decision"] == decision["decision"]
    )
    saved = json.loads((r / "register/decision.json").read_text())
    assert saved["reasons"] == decision["reasons"]

    # the served champion predicts what the torch model does
    champion_variant = reg.champion().tags["variant"]  # type: ignore[union-attr]
    served = mlflow.pyfunc.load_model("models:/server-segmenter@champion")
    model, _ = load_model(wd / f"models/{champion_variant}.pt")
    images = torch.randint(0, 256, (3, 1, 128, 128), dtype=torch.uint8)
    got = served.predict(images.numpy())  # uint8 pixels, as the camera gives them
    np.testing.assert_allclose(got, predict(model, images), atol=1e-5)

    # what a promotion deploys is self-contained: `mlflow models serve` runs it with this
    # package blocked from import, and answers what the torch model predicts
    with mlflow_model_server(
        "models:/server-segmenter@champion",
        tmp_path / "serve",
        tracking_uri=mlflow_server_uri,
        blocked=("mentoring",),
    ) as url:
        body = json.dumps({"inputs": images.numpy().tolist()})
        request = urllib.request.Request(
            url + "/invocations", body.encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.loads(response.read())
    served_http = np.asarray(answer["predictions"], np.float32)
    assert served_http.shape == (3, 6, 16, 16)
    np.testing.assert_allclose(served_http, predict(model, images), atol=1e-5)
    info = mlflow.models.get_model_info("models:/server-segmenter@champion")
    assert info.metadata["classes"] == list(p.line.classes)
    reqs = (
        Path(mlflow.artifacts.download_artifacts("models:/server-segmenter@champion"))
        / "requirements.txt"
    ).read_text()
    assert "mentoring" not in reqs and "torch==" in reqs

    # a second registration of the same models creates no version
    again = register_all()
    assert not any(x["created"] for x in again["registered"])
    assert again["first_model"] is None


def test_unreachable_tracking_fails_before_training(tiny_line: Path, tmp_path: Path) -> None:
    wd = tmp_path
    shutil.copytree(tiny_line / "data", wd / "data")
    shutil.copy(REPO / "params.yaml", wd / "params.yaml")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    proc = subprocess.run(
        [CLI, "train", "-S", "base.profile=tiny", "-S", "train_baseline.epochs=1"],
        cwd=wd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert f"MLflow tracking server {uri} is unreachable" in proc.stderr
    assert not (wd / "models").exists()  # no checkpoint: nothing was trained
    assert not (wd / "results/train_baseline/history.json").exists()
