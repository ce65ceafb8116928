"""Shared fixtures: real servers on loopback (moto's S3 server, an MLflow tracking server).

Tests that use ``s3_endpoint`` or ``mlflow_server_uri`` are marked ``network`` automatically, so
``-m "not network"`` deselects them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.servers import AWS_ENV_TO_UNSET, AWS_TEST_ENV, mlflow_server, moto_s3_server

# No test phones home: MLflow client telemetry, DVC analytics (also off in the DVC subprocesses,
# which inherit this environment).
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

NETWORK_FIXTURES = frozenset({"s3_endpoint", "mlflow_server_uri"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if NETWORK_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.network)


@pytest.fixture(scope="session")
def _moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One moto S3 server for the whole session (about 2 s to start)."""
    with moto_s3_server(tmp_path_factory.mktemp("moto")) as url:
        yield url


@pytest.fixture
def s3_endpoint(_moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The endpoint URL of a moto S3 server on loopback, e.g. ``http://127.0.0.1:54321``.

    For the duration of the test, the AWS environment holds dummy credentials and region
    ``us-east-1`` (restored afterwards), so boto3 clients and subprocesses such as ``dvc``
    authenticate against moto. The server is shared by the session: use a bucket name of your
    own. The endpoint is not put in the environment; pass it explicitly.
    """
    for key in AWS_ENV_TO_UNSET:
        monkeypatch.delenv(key, raising=False)
    for key, value in AWS_TEST_ENV.items():
        monkeypatch.setenv(key, value)
    return _moto_endpoint


@pytest.fixture(scope="session")
def mlflow_server_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The tracking URI of an ``mlflow server`` on loopback, e.g. ``http://127.0.0.1:54321``.

    Backed by sqlite and a local artifact directory in a session temp dir; shared by the session
    (about 6 s to start), so use experiment and model names of your own.
    """
    with mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as uri:
        yield uri


@pytest.fixture(scope="session", autouse=True)
def _tracking_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Stages track to MLflow by default: point them (and CLI subprocesses) at a session store
    in a temp folder, never at ``mlflow.db`` in the repository. Tests of the embedded default
    unset ``MLFLOW_TRACKING_URI`` themselves."""
    db = tmp_path_factory.mktemp("tracking") / "mlflow.db"
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{db}"
    yield
    if old is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = old


@pytest.fixture(autouse=True)
def _restore_mlflow_env() -> Iterator[None]:
    """``mlflow.set_tracking_uri`` / ``set_registry_uri`` also write ``MLFLOW_TRACKING_URI`` /
    ``MLFLOW_REGISTRY_URI`` into ``os.environ``: put them back after each test, so that one
    test's store never leaks into the next test's subprocesses."""
    keys = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    saved = {k: os.environ.get(k) for k in keys}
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
