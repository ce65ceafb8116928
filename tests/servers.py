"""Real servers on loopback for the remote tests: moto's S3 server and an MLflow tracking server.

Each server runs as a separate process (what a deployment talks to, not an in-process mock), in
its own process group so that teardown also ends the workers it forks. Startup is polled with a
bounded loop; if the server does not answer in time, or exits first, the error carries the tail
of its log.

Example:
    with moto_s3_server() as endpoint:
        s3 = boto3.client("s3", endpoint_url=endpoint, **aws_client_kwargs())
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

VENV_BIN = Path(sys.executable).parent
HOST = "127.0.0.1"

# Dummy credentials: moto accepts any, and a real account must never be reached by a test.
AWS_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}
# Variables that would override the ones above (or point clients elsewhere); removed from the
# environments we build. A developer's ~/.aws files stay readable but lose to the variables above
# (pointing AWS_CONFIG_FILE at os.devnull breaks s3fs/aiobotocore: "config file not found").
AWS_ENV_TO_UNSET = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")

# The MLflow server forks a job runner and huey consumers by default, which outlive a SIGTERM to
# the `mlflow` process and which no test needs; telemetry would try to leave the machine.
MLFLOW_SERVER_ENV = {
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
}


class ServerStartError(RuntimeError):
    """A server did not answer within its startup timeout, or exited while starting."""


def aws_test_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """An environment for a subprocess (e.g. `dvc`) that talks to the moto server.

    Args:
        base: the environment to start from (default: a copy of ``os.environ``).

    Returns:
        ``base`` with the dummy AWS credentials and region set and any profile or endpoint
        override removed.
    """
    env = dict(os.environ if base is None else base)
    for key in AWS_ENV_TO_UNSET:
        env.pop(key, None)
    env.update(AWS_TEST_ENV)
    return env


def aws_client_kwargs() -> dict[str, str]:
    """Keyword arguments for ``boto3.client("s3", endpoint_url=..., **aws_client_kwargs())``."""
    return {
        "aws_access_key_id": AWS_TEST_ENV["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": AWS_TEST_ENV["AWS_SECRET_ACCESS_KEY"],
        "region_name": AWS_TEST_ENV["AWS_DEFAULT_REGION"],
    }


def free_port() -> int:
    """A TCP port that is free on loopback now (the OS picks it; another process may race us)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def _log_tail(log_path: Path, start: int = 0, max_chars: int = 4000) -> str:
    """The last ``max_chars`` of the log written after byte ``start``."""
    try:
        with open(log_path, "rb") as log:
            log.seek(start)
            text = log.read().decode(errors="replace")
    except OSError:
        return "<no log>"
    return text[-max_chars:] if text else "<empty log>"


def _stop(proc: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
    """SIGTERM the server's process group, then SIGKILL it if it is still there after grace_s."""
    if proc.poll() is not None:
        # The leader is gone; its children (same group) may not be.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    # Kill whatever is left of the group (workers that ignored SIGTERM, or the leader itself).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace_s)


@contextlib.contextmanager
def _server(
    name: str,
    make_cmd: Callable[[int], list[str]],
    health_path: str,
    log_path: Path,
    timeout_s: float,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    attempts: int = 3,
) -> Iterator[str]:
    """Start ``make_cmd(port)`` in its own process group, wait for ``health_path``, yield the URL.

    A server that exits while starting (e.g. its port was taken between `free_port` and its
    bind) is retried on another port, up to ``attempts`` times.
    """
    errors: list[str] = []
    for _ in range(attempts):
        port = free_port()
        url = f"http://{HOST}:{port}"
        with open(log_path, "ab") as log:
            log_start = log.tell()  # this attempt's output starts here
            proc = subprocess.Popen(
                make_cmd(port),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                start_new_session=True,  # its own process group: teardown reaches its workers
            )
        try:
            deadline = time.monotonic() + timeout_s
            while proc.poll() is None and time.monotonic() < deadline:
                if _http_ok(url + health_path):
                    break
                time.sleep(0.1)
            else:
                if proc.poll() is not None:
                    errors.append(
                        f"{name} exited with code {proc.returncode} on port {port}; log:\n"
                        + _log_tail(log_path, log_start)
                    )
                    continue
                raise ServerStartError(
                    f"{name} did not answer {url}{health_path} within {timeout_s:.0f} s; log:\n"
                    + _log_tail(log_path, log_start)
                )
            yield url
            return
        finally:
            _stop(proc)
    raise ServerStartError(f"{name} failed to start {attempts} times:\n" + "\n".join(errors))


@contextlib.contextmanager
def moto_s3_server(log_dir: Path | None = None, *, timeout_s: float = 30.0) -> Iterator[str]:
    """Run ``python -m moto.server`` on a free loopback port and yield its endpoint URL.

    The server keeps its state (buckets, objects) in memory for its lifetime: tests sharing one
    server should use their own bucket names.

    Args:
        log_dir: where to write ``moto.log`` (default: a temporary directory removed at exit).
        timeout_s: how long to wait for the server to answer.

    Yields:
        The endpoint URL, e.g. ``http://127.0.0.1:54321``.
    """
    with contextlib.ExitStack() as stack:
        if log_dir is None:
            log_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="moto-")))
        with _server(
            "moto S3 server",
            lambda port: [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)],
            "/moto-api/",
            log_dir / "moto.log",
            timeout_s,
        ) as url:
            yield url


@contextlib.contextmanager
def mlflow_server(workdir: Path, *, timeout_s: float = 60.0) -> Iterator[str]:
    """Run ``mlflow server`` (sqlite store, local proxied artifacts) and yield its tracking URI.

    One uvicorn worker, no job execution (see ``MLFLOW_SERVER_ENV``). The default security
    middleware already accepts ``127.0.0.1`` as a host, so it stays on.

    Args:
        workdir: holds ``mlflow.db``, ``mlartifacts/`` and ``mlflow-server.log``.
        timeout_s: how long to wait for ``GET /health`` to answer 200 (startup takes about 6 s
            on 2 cores).

    Yields:
        The tracking URI, e.g. ``http://127.0.0.1:54321``.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    # mlflow's CLI lives next to the interpreter running the tests (the project's venv).
    mlflow_bin = VENV_BIN / "mlflow"
    mlflow_cmd = [str(mlflow_bin)] if mlflow_bin.exists() else [sys.executable, "-m", "mlflow"]

    def make_cmd(port: int) -> list[str]:
        return [
            *mlflow_cmd,
            "server",
            "--host",
            HOST,
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{workdir / 'mlflow.db'}",
            "--artifacts-destination",
            str(workdir / "mlartifacts"),
        ]

    env = {**os.environ, **MLFLOW_SERVER_ENV}
    with _server(
        "mlflow server",
        make_cmd,
        "/health",
        workdir / "mlflow-server.log",
        timeout_s,
        env=env,
        cwd=workdir,
    ) as url:
        yield url


@contextlib.contextmanager
def mlflow_model_server(
    model_uri: str,
    workdir: Path,
    *,
    tracking_uri: str,
    blocked: tuple[str, ...] = (),
    timeout_s: float = 90.0,
) -> Iterator[str]:
    """Run ``mlflow models serve -m model_uri --env-manager local`` and yield its URL.

    Args:
        model_uri: e.g. ``models:/defect-segmenter@champion``.
        workdir: holds ``model-server.log`` and the import blocker.
        tracking_uri: where ``models:/`` resolves (``MLFLOW_TRACKING_URI`` of the server).
        blocked: top-level packages that no Python process of the server may import (a
            ``sitecustomize`` on ``PYTHONPATH`` raises ImportError for them): proves the served
            model needs nothing else.
        timeout_s: how long to wait for ``GET /ping``.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    mlflow_bin = VENV_BIN / "mlflow"
    mlflow_cmd = [str(mlflow_bin)] if mlflow_bin.exists() else [sys.executable, "-m", "mlflow"]
    env = {**os.environ, **MLFLOW_SERVER_ENV, "MLFLOW_TRACKING_URI": tracking_uri}
    # it execs `uvicorn` by name: the venv's scripts must be on PATH
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    if blocked:
        site = workdir / "blocker"
        site.mkdir(exist_ok=True)
        (site / "sitecustomize.py").write_text(
            "import sys\n"
            f"BLOCKED = {set(blocked)!r}\n"
            "class _Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] in BLOCKED:\n"
            "            raise ImportError(f'{name} is blocked in this test')\n"
            "        return None\n"
            "sys.meta_path.insert(0, _Block())\n"
        )
        env["PYTHONPATH"] = str(site)

    def make_cmd(port: int) -> list[str]:
        return [
            *mlflow_cmd,
            "models",
            "serve",
            "-m",
            model_uri,
            "--env-manager",
            "local",
            "--host",
            HOST,
            "--port",
            str(port),
            "--workers",
            "1",
        ]

    with _server(
        "mlflow models serve",
        make_cmd,
        "/ping",
        workdir / "model-server.log",
        timeout_s,
        env=env,
        cwd=workdir,
    ) as url:
        yield url


class FaultProxy:
    """A reverse proxy on loopback that forwards to an S3 endpoint and injects faults.

    A seeded share ``rate`` of requests gets one fault, in turn: a 503 ``SlowDown`` (throttling),
    a 500 ``InternalError``, a connection reset before any response, or a body cut short after
    its headers promised more. Everything else is forwarded as is. ``counts`` says what was
    injected. Use as a context manager; it serves from a daemon thread and stops on exit.

    Example:
        with moto_s3_server() as s3, FaultProxy(s3, rate=0.2) as proxy:
            client = boto3.client("s3", endpoint_url=proxy.url, ...)
    """

    FAULTS = ("throttle", "error500", "reset", "truncate")

    def __init__(self, upstream: str, rate: float = 0.2, seed: int = 0, delay_s: float = 0.0):
        import random
        import threading
        from urllib.parse import urlparse

        self.upstream = urlparse(upstream)
        self.rate = rate
        self.delay_s = delay_s
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._turn = 0
        self.counts: dict[str, int] = {f: 0 for f in self.FAULTS} | {"forwarded": 0}
        self._server: Any = None
        self.url = ""

    def _pick(self) -> str | None:
        with self._lock:
            if self._random.random() >= self.rate:
                self.counts["forwarded"] += 1
                return None
            fault = self.FAULTS[self._turn % len(self.FAULTS)]
            self._turn += 1
            self.counts[fault] += 1
            return fault

    def __enter__(self) -> FaultProxy:
        import http.client
        import http.server
        import struct
        import threading

        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _error(self, status: int, code: str) -> None:
                body = (
                    f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code>"
                    f"<Message>injected by FaultProxy</Message></Error>"
                ).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if proxy.delay_s:
                    time.sleep(proxy.delay_s)
                fault = proxy._pick()
                if fault == "throttle":
                    return self._error(503, "SlowDown")
                if fault == "error500":
                    return self._error(500, "InternalError")
                if fault == "reset":
                    # RST instead of FIN: the client sees "connection reset by peer"
                    self.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                    self.close_connection = True
                    return
                up = http.client.HTTPConnection(
                    proxy.upstream.hostname, proxy.upstream.port, timeout=60
                )
                headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                up.request(self.command, self.path, body=body, headers=headers)
                resp = up.getresponse()
                data = resp.read()
                up.close()
                cut = fault == "truncate" and self.command == "GET" and len(data) > 16
                self.send_response(resp.status)
                for key, value in resp.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data[: len(data) // 2] if cut else data)
                if cut:
                    self.close_connection = True
                elif fault == "truncate":
                    with proxy._lock:  # nothing to cut (not a GET): count it as forwarded
                        proxy.counts["truncate"] -= 1
                        proxy.counts["forwarded"] += 1

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        class Server(http.server.ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that drops its side after a fault is expected, not news

        self._server = Server((HOST, 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://{HOST}:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@dataclasses.dataclass
class StartedServer:
    """A server process started by :func:`annotate_server`: its URL, process and log."""

    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def kill9(self) -> None:
        """SIGKILL the server's whole process group, as a crash would, and reap it."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def log_tail(self) -> str:
        return _log_tail(self.log_path)


@contextlib.contextmanager
def annotate_server(
    tasks: Path | str,
    db: Path,
    *,
    token: str | None = None,
    args: tuple[str, ...] = (),
    log_path: Path | None = None,
    timeout_s: float = 60.0,
    attempts: int = 3,
) -> Iterator[StartedServer]:
    """Run ``mentoring annotate serve`` on a free loopback port and yield the started server.

    Like :func:`_server` (own process group, bounded startup poll of ``GET /login``, retried on
    another port if it exits while starting, stopped with SIGTERM then SIGKILL at exit), but it
    yields the process too, so that a test can kill it with SIGKILL mid-session.

    Args:
        tasks: the mining tasks to serve.
        db: the annotation database (created if missing; a restart on it continues).
        token: passed as ``--token`` when set.
        args: more ``serve`` options (``--lease-minutes``, ``--data-root``...).
        log_path: where the server's output goes (default: ``<db>.log``).
        timeout_s: how long to wait for ``/login`` to answer 200 (the CLI imports in ~2 s).
        attempts: starts tried before giving up.
    """
    mentoring_bin = VENV_BIN / "mentoring"
    cli = (
        [str(mentoring_bin)]
        if mentoring_bin.exists()
        else [sys.executable, "-c", "from mentoring.cli import app; app()"]
    )
    log_path = log_path or db.with_suffix(".log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    for _ in range(attempts):
        port = free_port()
        cmd = [*cli, "annotate", "serve", "--tasks", str(tasks), "--db", str(db)]
        cmd += ["--host", HOST, "--port", str(port), *args]
        if token is not None:
            cmd += ["--token", token]
        url = f"http://{HOST}:{port}"
        with open(log_path, "ab") as log:
            log_start = log.tell()
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            deadline = time.monotonic() + timeout_s
            while proc.poll() is None and time.monotonic() < deadline:
                if _http_ok(url + "/login"):
                    break
                time.sleep(0.1)
            else:
                if proc.poll() is not None:
                    errors.append(
                        f"annotate server exited with code {proc.returncode} on port {port}; "
                        f"log:\n" + _log_tail(log_path, log_start)
                    )
                    continue
                raise ServerStartError(
                    f"annotate server did not answer {url}/login within {timeout_s:.0f} s; log:\n"
                    + _log_tail(log_path, log_start)
                )
            yield StartedServer(url, proc, log_path)
            return
        finally:
            _stop(proc)
    raise ServerStartError("annotate server failed to start:\n" + "\n".join(errors))
