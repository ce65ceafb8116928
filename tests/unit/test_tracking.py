"""Tracking helpers: the early reachability check, lineage, metric names."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from mentoring.config import Params, TrackingParams
from mentoring.tracking import (
    TrackingError,
    artifact_root,
    check_reachable,
    flatten,
    git_commit,
    numeric,
    params_sha256,
    resolve_uri,
)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_server_names_the_uri() -> None:
    uri = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(TrackingError, match=f"MLflow tracking server {uri} is unreachable"):
        check_reachable(uri, timeout_s=2)


def test_sqlite_under_a_file_names_the_uri(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    uri = f"sqlite:///{tmp_path}/file/mlflow.db"
    with pytest.raises(TrackingError, match=f"tracking store {uri}: cannot create"):
        check_reachable(uri)


def test_sqlite_folder_is_created(tmp_path: Path) -> None:
    check_reachable(f"sqlite:///{tmp_path}/a/b/mlflow.db")
    assert (tmp_path / "a/b").is_dir()


def test_env_overrides_params(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert resolve_uri(TrackingParams()) == "http://127.0.0.1:5000"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert resolve_uri(TrackingParams()) == "sqlite:///mlflow.db"


def test_artifacts_lie_next_to_the_database(tmp_path: Path) -> None:
    root = artifact_root(f"sqlite:///{tmp_path}/mlflow.db", TrackingParams())
    assert root == (tmp_path / "mlartifacts").as_uri()
    assert artifact_root("http://127.0.0.1:5000", TrackingParams()) is None


def test_metric_names_are_flat_and_valid() -> None:
    m = numeric({"transfer+omnia": {"map_new": 0.8, "label": "x"}, "n": 3, "ok": True})
    assert m == {"transfer_omnia.map_new": 0.8, "n": 3.0}
    assert flatten({"a": {"b": [1, 2]}}) == {"a.b": "[1, 2]"}


def test_params_hash_changes_with_any_value() -> None:
    a = Params()
    b = a.model_copy(update={"train": a.train.model_copy(update={"lambda_w": 0.5})})
    assert params_sha256(a) == params_sha256(Params())
    assert params_sha256(a) != params_sha256(b)


def test_git_commit(tmp_path: Path) -> None:
    assert git_commit(tmp_path) == "none"
    run = lambda *a: subprocess.run(["git", *a], cwd=tmp_path, check=True, capture_output=True)  # noqa: E731
    run("init", "-q")
    (tmp_path / "f").write_text("1")
    run("add", "f")
    run("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x")
    head = git_commit(tmp_path)
    assert len(head) == 40
    (tmp_path / "f").write_text("2")
    assert git_commit(tmp_path) == head + "-dirty"
