"""A Kubeflow Pipelines API server on loopback, for the calls `mentoring kfp schedule` makes.

No cluster is reachable here. This server answers the v2beta1 REST endpoints that ``kfp.Client``
calls for a schedule (healthz, pipelines and their upload, experiments, recurring runs) with the
API's own models (``kfp_server_api``): every request body is deserialized into its model type,
every answer serialized from one, as the real API server's JSON is. It keeps the backend's rules
that matter here, read in its source at 2.17.0: in multi-user mode pipelines live in a namespace
(a listing without one sees only shared pipelines; `backend/src/apiserver/server/
pipeline_server.go`), a second pipeline of the same name in a namespace is refused with 409
AlreadyExists, and recurring runs are listed per experiment with a ``display_name`` filter.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs, urlparse

import kfp_server_api
import yaml
from kfp_server_api import models

PREFIX = "/apis/v2beta1"


@dataclass
class KfpState:
    """What the fake API holds; tests read it."""

    multi_user: bool = True
    pipelines: dict[str, models.V2beta1Pipeline] = field(default_factory=dict)
    versions: dict[str, models.V2beta1PipelineVersion] = field(default_factory=dict)
    experiments: dict[str, models.V2beta1Experiment] = field(default_factory=dict)
    recurring_runs: dict[str, models.V2beta1RecurringRun] = field(default_factory=dict)
    packages: dict[str, dict[str, Any]] = field(default_factory=dict)  # pipeline/version id
    requests: list[tuple[str, str]] = field(default_factory=list)
    ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def new_id(self, kind: str) -> str:
        return f"{kind}-{next(self.ids)}"


_API = kfp_server_api.ApiClient()


def _model(body: bytes, kind: str) -> Any:
    """A request body as its kfp_server_api model (what the real server's gateway parses)."""
    return _API.deserialize(SimpleNamespace(data=body), kind)


def _json(obj: Any) -> bytes:
    return json.dumps(_API.sanitize_for_serialization(obj)).encode()


def _filter_name(query: dict[str, list[str]]) -> str | None:
    """The ``display_name`` EQUALS value of a filter, if any."""
    raw = query.get("filter", [""])[0]
    if not raw:
        return None
    for pred in json.loads(raw).get("predicates", []):
        if pred.get("key") in ("display_name", "name") and pred.get("operation") == "EQUALS":
            return str(pred.get("stringValue", pred.get("string_value")))
    return None


def _package(headers: Any, body: bytes) -> dict[str, Any]:
    """The pipeline spec of an upload's multipart body (the compiled package)."""
    from email.parser import BytesParser
    from email.policy import HTTP

    msg = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + headers["Content-Type"].encode() + b"\r\n\r\n" + body
    )
    for part in msg.iter_parts():
        spec = next(yaml.safe_load_all(bytes(part.get_payload(decode=True))))
        if "pipelineInfo" not in spec:
            raise ValueError("the uploaded file is not a compiled pipeline")
        return dict(spec)
    raise ValueError("multipart body without a part")


def _handler(state: KfpState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def _send(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _error(self, status: int, message: str) -> None:
            self._send(status, json.dumps({"error": message, "message": message}).encode())

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length", 0)))

        def do_GET(self) -> None:
            url = urlparse(self.path)
            query = parse_qs(url.query)
            state.requests.append(("GET", self.path))
            path = url.path.removeprefix(PREFIX)
            ns = query.get("namespace", [""])[0]
            name = _filter_name(query)
            if path == "/healthz":
                reply = models.V2beta1GetHealthzResponse(multi_user=state.multi_user)
            elif path == "/pipelines":
                found = [
                    p
                    for p in state.pipelines.values()
                    if (p.namespace or "") == ns and name in (None, p.display_name)
                ]
                reply = models.V2beta1ListPipelinesResponse(pipelines=found, total_size=len(found))
            elif path == "/experiments":
                found = [
                    e
                    for e in state.experiments.values()
                    if (e.namespace or "") == ns and name in (None, e.display_name)
                ]
                reply = models.V2beta1ListExperimentsResponse(
                    experiments=found, total_size=len(found)
                )
            elif path == "/recurringruns":
                exp = query.get("experiment_id", [""])[0]
                found = [
                    r
                    for r in state.recurring_runs.values()
                    if (not exp or r.experiment_id == exp) and name in (None, r.display_name)
                ]
                reply = models.V2beta1ListRecurringRunsResponse(
                    recurring_runs=found, total_size=len(found)
                )
            else:
                return self._error(404, f"no route {url.path}")
            self._send(200, _json(reply))

        def do_POST(self) -> None:
            url = urlparse(self.path)
            query = parse_qs(url.query)
            state.requests.append(("POST", self.path))
            path = url.path.removeprefix(PREFIX)
            body = self._body()
            if path == "/pipelines/upload":
                name, ns = query["name"][0], query.get("namespace", [""])[0]
                if state.multi_user and not ns:
                    return self._error(400, "multi-user mode: a pipeline needs a namespace")
                if any(
                    p.display_name == name and (p.namespace or "") == ns
                    for p in state.pipelines.values()
                ):
                    return self._error(409, f"AlreadyExists: pipeline {name!r} in {ns!r}")
                pid = state.new_id("pipeline")
                state.packages[pid] = _package(self.headers, body)
                state.pipelines[pid] = models.V2beta1Pipeline(
                    pipeline_id=pid, display_name=name, namespace=ns or None
                )
                return self._send(200, _json(state.pipelines[pid]))
            if path == "/pipelines/upload_version":
                pid = query["pipelineid"][0]
                if pid not in state.pipelines:
                    return self._error(404, f"pipeline {pid} not found")
                vid = state.new_id("version")
                state.packages[vid] = _package(self.headers, body)
                state.versions[vid] = models.V2beta1PipelineVersion(
                    pipeline_id=pid, pipeline_version_id=vid, display_name=query["name"][0]
                )
                return self._send(200, _json(state.versions[vid]))
            if path == "/experiments":
                exp = _model(body, "V2beta1Experiment")
                exp.experiment_id = state.new_id("experiment")
                state.experiments[exp.experiment_id] = exp
                return self._send(200, _json(exp))
            if path == "/recurringruns":
                run = _model(body, "V2beta1RecurringRun")
                ref = run.pipeline_version_reference
                if ref is None or ref.pipeline_version_id not in state.versions:
                    return self._error(400, "recurring run without a known pipeline version")
                if run.experiment_id not in state.experiments:
                    return self._error(400, f"unknown experiment {run.experiment_id}")
                run.recurring_run_id = state.new_id("recurring")
                state.recurring_runs[run.recurring_run_id] = run
                return self._send(200, _json(run))
            self._error(404, f"no route {url.path}")

        def do_DELETE(self) -> None:
            url = urlparse(self.path)
            state.requests.append(("DELETE", self.path))
            path = url.path.removeprefix(PREFIX)
            rid = path.removeprefix("/recurringruns/")
            if not path.startswith("/recurringruns/") or rid not in state.recurring_runs:
                return self._error(404, f"no recurring run {rid}")
            del state.recurring_runs[rid]
            self._send(200, b"{}")

    return Handler


@contextmanager
def kfp_api(state: KfpState | None = None) -> Iterator[tuple[str, KfpState]]:
    """Serve a :class:`KfpState` on a free loopback port; yields (URL, state)."""
    state = state or KfpState()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
