"""The mentoring web interface as a real server: ``mentoring annotate serve`` started with
uvicorn in its own process on a free loopback port (tests/servers.py), talked to over HTTP.

- security: the token (every request without it is refused), CSRF, the Host header, path
  traversal in every encoding and through the task file (symlink out, ``..``, absolute path),
  a task whose id and class are ``<script>`` rendered as text, oversized and malformed bodies;
- concurrency: four operators (threads, real HTTP, retried requests) through one task set:
  every area ends with exactly one current verdict, the log holds each acknowledged action
  once, no image is leased to two operators at once;
- durability: SIGKILL of the server mid-session, restart on the same database: every
  acknowledged verdict is there, sessions and leases survive, the work goes on;
- images from an S3 data root (moto on loopback), confined to it.
"""

from __future__ import annotations

import http.client
import json
import random
import re
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlparse

import boto3
import numpy as np
import pytest
import requests
from markupsafe import escape
from PIL import Image

from mentoring.annotate.db import LEASE_AHEAD, AnnotationDB
from mentoring.feedback.schema import FeedbackFile, TaskArea, dump
from tests.factories import area, make_tasks
from tests.servers import ServerStartError, StartedServer, annotate_server, aws_client_kwargs

pytestmark = pytest.mark.network

TOKEN = "t0k3n-for-the-loopback-tests-only"
SCRIPT_ID = "<script>alert('x')</script>"
SCRIPT_CLASS = "<script>alert(1)</script>"


def _png(path: Path, seed: int) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(path)
    return path.read_bytes()


def _request_id() -> str:
    return "r-" + "".join(random.choices("0123456789abcdef", k=24))


class Operator:
    """One operator's browser session: logged in, with the page's CSRF token."""

    def __init__(self, url: str, name: str, token: str | None = None) -> None:
        self.url = url
        self.name = name
        self.http = requests.Session()
        self.csrf = ""
        self.login(token)

    def login(self, token: str | None = None) -> requests.Response:
        page = self.http.get(self.url + "/login", timeout=30)
        form = {"operator": self.name, "csrf": _hidden_csrf(page.text)}
        if token is not None:
            form["token"] = token
        res = self.http.post(self.url + "/login", data=form, allow_redirects=False, timeout=30)
        if res.status_code == 303:
            self.csrf = self.config()["csrf"]
        return res

    def page(self) -> str:
        res = self.http.get(self.url + "/", timeout=30)
        assert res.status_code == 200, res.text
        return res.text

    def config(self) -> dict[str, Any]:
        found = re.search(
            r'<script type="application/json" id="config">(.*?)</script>', self.page()
        )
        assert found is not None
        return dict(json.loads(found.group(1)))

    def post(self, path: str, body: Any = None, **kwargs: Any) -> requests.Response:
        headers = {"X-CSRF-Token": self.csrf, **kwargs.pop("headers", {})}
        if body is not None:
            kwargs["json"] = body
        return self.http.post(self.url + path, headers=headers, timeout=30, **kwargs)

    def api(self, path: str, body: Any = None) -> dict[str, Any]:
        res = self.post(path, {} if body is None else body)
        assert res.status_code == 200, f"{path}: {res.status_code} {res.text}"
        return dict(res.json())

    def raw_get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        """GET ``path`` exactly as written (no client-side normalisation or re-quoting)."""
        parsed = urlparse(self.url)
        conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
        cookies = "; ".join(f"{c.name}={c.value}" for c in self.http.cookies)
        conn.request("GET", path, headers={"Cookie": cookies, **(headers or {})})
        res = conn.getresponse()
        data = res.read()
        conn.close()
        return res.status, data


def _hidden_csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None, html
    return found.group(1)


# -- a task set with hostile content -----------------------------------------------------------


@dataclass
class Hostile:
    tasks: Path
    root: Path
    ok_bytes: bytes
    script_bytes: bytes


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Hostile:
    tmp = tmp_path_factory.mktemp("annotate-hostile")
    root = tmp / "data"
    ok = _png(root / "line/images/img-ok.png", 0)
    script = _png(root / "line/images/script.png", 1)
    (tmp / "secret.png").write_bytes(b"secret outside the store")
    (root / "line/images/evil.png").symlink_to(tmp / "secret.png")
    (root / "line/images/notes.txt").write_text("not an image")
    areas = {
        SCRIPT_ID: [area(f"{SCRIPT_ID}/0", SCRIPT_CLASS, [(0, 0)], (0, 0, 8, 8))],
        "img-ok": [area("img-ok/scratch/0", "scratch", [(1, 1)], (8, 8, 16, 16))],
        "img-link": [],
        "img-up": [],
        "img-abs": [],
        "img-txt": [],
    }
    paths = {
        SCRIPT_ID: "line/images/script.png",
        "img-ok": "line/images/img-ok.png",
        "img-link": "line/images/evil.png",
        "img-up": "../secret.png",
        "img-abs": str(tmp / "secret.png"),
        "img-txt": "line/images/notes.txt",
    }
    tasks = make_tasks(areas, classes=("scratch", SCRIPT_CLASS), paths=paths)
    path = root / "mining/tasks.json"
    path.parent.mkdir(parents=True)
    path.write_text(dump(tasks))
    return Hostile(path, root, ok, script)


@pytest.fixture(scope="module")
def secured(hostile: Hostile) -> Iterator[StartedServer]:
    """A server with a token, on the hostile task set."""
    db = hostile.root / "annotate/secured.sqlite"
    args = ("--allow-missing-images",)  # img-link, img-up, img-abs and img-txt cannot be read
    with annotate_server(hostile.tasks, db, token=TOKEN, args=args) as s:
        yield s


# -- security ----------------------------------------------------------------------------------


def test_every_request_needs_the_token(secured: StartedServer) -> None:
    url = secured.url
    anon = requests.Session()
    assert anon.get(url + "/api/status", timeout=30).status_code == 401
    home = anon.get(url + "/", allow_redirects=False, timeout=30)
    assert home.status_code == 303 and home.headers["location"] == "/login"
    assert anon.get(url + "/image/img-ok", timeout=30).status_code == 401
    assert anon.post(url + "/api/next", json={}, timeout=30).status_code == 401
    assert anon.post(url + "/api/export", json={}, timeout=30).status_code == 401
    assert anon.get(url + "/static/annotate.js", timeout=30).status_code == 200  # no data
    # a wrong bearer token, or the right one without an operator, is not enough
    wrong = {"Authorization": "Bearer not-the-token-at-all"}
    assert anon.get(url + "/api/status", headers=wrong, timeout=30).status_code == 401
    right = {"Authorization": f"Bearer {TOKEN}"}
    res = anon.get(url + "/api/status", headers=right, timeout=30)
    assert res.status_code == 401 and "not logged in" in res.json()["error"]
    # logging in needs the token too
    op = Operator(url, "op-sec")
    assert op.login(None).status_code == 401
    res = op.login("wrong-token-of-enough-length")
    assert res.status_code == 401 and "Wrong token." in res.text
    assert op.http.get(url + "/api/status", timeout=30).status_code == 401
    assert op.login(TOKEN).status_code == 303
    res = op.http.get(url + "/api/status", timeout=30)
    assert res.status_code == 200 and res.json()["you"] == "op-sec"
    # a tampered session cookie is a new, empty session
    value = op.http.cookies["mentoring_session"]
    forged = requests.Session()
    forged.cookies.set("mentoring_session", value[:-4] + "AAAA")
    assert forged.get(url + "/api/status", timeout=30).status_code == 401


def test_state_changing_requests_need_the_csrf_header(secured: StartedServer) -> None:
    op = Operator(secured.url, "op-csrf", TOKEN)
    other = Operator(secured.url, "op-other", TOKEN)
    for headers in ({"X-CSRF-Token": ""}, {"X-CSRF-Token": "forged"}, {"X-CSRF-Token": other.csrf}):
        res = op.post("/api/next", {}, headers=headers)
        assert res.status_code == 403 and "X-CSRF-Token" in res.json()["error"]
    res = op.http.post(secured.url + "/api/next", json={}, timeout=30)  # no header at all
    assert res.status_code == 403
    assert op.post("/api/next", {}).status_code == 200
    # the login form has its own token
    res = requests.post(
        secured.url + "/login", data={"operator": "x", "token": TOKEN}, allow_redirects=False
    )
    assert res.status_code == 403
    op.api("/logout")  # releases op-csrf's lease
    assert op.http.get(secured.url + "/api/status", timeout=30).status_code == 401


def test_a_foreign_host_header_is_refused(secured: StartedServer) -> None:
    op = Operator(secured.url, "op-host", TOKEN)
    status, body = op.raw_get("/api/status", {"Host": "rebound.example.com:8000"})
    assert status == 400 and b"Host" in body
    port = urlparse(secured.url).port
    assert op.raw_get("/api/status", {"Host": f"localhost:{port}"})[0] == 200
    # the right name on another port (another local service's page), or no port (80): refused
    status, body = op.raw_get("/api/status", {"Host": f"localhost:{port + 1}"})
    assert status == 400 and b"port" in body
    assert op.raw_get("/api/status", {"Host": "localhost"})[0] == 400
    assert op.raw_get("/api/status", {"Host": f"127.0.0.1:{port}x"})[0] == 400


def test_a_cookie_saved_before_logout_is_refused(secured: StartedServer) -> None:
    op = Operator(secured.url, "op-revoke", TOKEN)
    saved = op.http.cookies["mentoring_session"]
    assert op.http.get(secured.url + "/api/status", timeout=30).status_code == 200
    op.api("/logout")
    replay = requests.Session()
    replay.cookies.set("mentoring_session", saved)
    res = replay.get(secured.url + "/api/status", timeout=30)
    assert res.status_code == 401 and "session ended" in res.json()["error"]
    page = replay.get(secured.url + "/", allow_redirects=False, timeout=30)
    assert page.status_code == 303 and page.headers["location"] == "/login"


def test_missing_images_are_shown_missing_and_refuse_answers(
    secured: StartedServer, hostile: Hostile
) -> None:
    op = Operator(secured.url, "op-missing", TOKEN)
    state = op.http.get(secured.url + "/api/images/img-up", timeout=30).json()
    assert state["missing"] is True
    assert op.http.get(secured.url + "/api/images/img-ok", timeout=30).json()["missing"] is False
    for path, extra in (
        ("/api/healthy", {}),
        ("/api/done", {}),
        ("/api/drawn", {"class": "scratch", "bbox": [0, 0, 8, 8]}),
    ):
        body = {"request_id": _request_id(), "image_id": "img-up", **extra}
        res = op.post(path, body)
        assert res.status_code == 409, (path, res.text)
        assert "missing on the server" in res.json()["error"] and "img-up" in res.json()["error"]
    assert op.raw_get("/image/img-link")[0] == 404
    assert "image 'img-link' not served (404)" in secured.log_tail()
    op.api("/logout")


def test_serve_refuses_to_start_with_missing_images(hostile: Hostile, tmp_path: Path) -> None:
    with pytest.raises(ServerStartError) as err:
        with annotate_server(hostile.tasks, tmp_path / "refused.sqlite", attempts=1):
            pass
    message = str(err.value)
    assert "4 of 6 images cannot be read" in message and "--allow-missing-images" in message
    assert "'img-up'" in message


def test_sessions_expire_and_wrong_tokens_are_throttled(tmp_path: Path) -> None:
    root = tmp_path / "data"
    tasks = _random_tasks(root, 2, seed=5)
    args = ("--session-hours", "0.0005", "--max-login-failures", "3", "--login-window-s", "3")
    args += ("--header-timeout-s", "1")
    with annotate_server(tasks, root / "annotate/limits.sqlite", token=TOKEN, args=args) as srv:
        # a session ends after its lifetime (1.8 s here)
        op = Operator(srv.url, "op-expire", TOKEN)
        assert op.http.get(srv.url + "/api/status", timeout=30).status_code == 200
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            res = op.http.get(srv.url + "/api/status", timeout=30)
            if res.status_code != 200:
                break
            time.sleep(0.2)
        assert res.status_code == 401  # the cookie's age and the server's row both ended it
        # wrong tokens: three are answered 401, then the address gets 429, the right token too
        guesser = Operator(srv.url, "op-guess", "wrong-token-number-0")
        assert guesser.login("wrong-token-number-1").status_code == 401
        assert guesser.login("wrong-token-number-2").status_code == 401
        res = guesser.login(TOKEN)
        assert res.status_code == 429 and int(res.headers["Retry-After"]) >= 1
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        assert requests.get(srv.url + "/api/status", headers=bearer, timeout=30).status_code == 429
        # once the window has passed, the right token works again
        deadline = time.monotonic() + 30
        while guesser.login(TOKEN).status_code == 429 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert guesser.http.get(srv.url + "/api/status", timeout=30).status_code == 200
        # a client that never finishes its headers is dropped (well before 20 s)
        parsed = urlparse(srv.url)
        with socket.create_connection((parsed.hostname, parsed.port), timeout=20) as sock:
            sock.sendall(b"GET /login HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            try:
                closed = sock.recv(1024) == b""
            except ConnectionResetError:
                closed = True
        assert closed  # no timeout: the server closed it


@pytest.mark.parametrize(
    "path",
    [
        "/image/../../../etc/passwd",
        "/image/..%2F..%2F..%2Fetc%2Fpasswd",
        "/image/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/image/%2e%2e%2f%2e%2e%2fsecret.png",
        "/image/%252e%252e%252f%252e%252e%252fsecret.png",
        "/image/..%252f..%252fsecret.png",
        "/image//etc/passwd",
        "/image/%2Fetc%2Fpasswd",
        "/image/..%5c..%5csecret.png",
        "/image/line/images/img-ok.png",  # a path, not an id
        "/image/img-ok/../img-link",
        "/image/img-link",  # the task's image is a symlink out of the store
        "/image/img-up",  # the task's path climbs out with ..
        "/image/img-abs",  # the task's path is absolute
        "/image/img-txt",  # not an image type
        "/image/nope",
        "/static/../app.py",
        "/static/%2e%2e/app.py",
        "/static/..%2Fapp.py",
        "/static/%252e%252e/app.py",
    ],
)
def test_path_traversal_gets_404(secured: StartedServer, path: str) -> None:
    op = Operator(secured.url, "op-path", TOKEN)
    status, body = op.raw_get(path)
    assert status == 404, (path, body[:200])
    assert b"secret outside" not in body and b"root:" not in body


def test_images_are_served_by_task_id(secured: StartedServer, hostile: Hostile) -> None:
    op = Operator(secured.url, "op-img", TOKEN)
    res = op.http.get(secured.url + "/image/img-ok", timeout=30)
    assert res.status_code == 200 and res.content == hostile.ok_bytes
    assert res.headers["content-type"] == "image/png"
    status, body = op.raw_get("/image/" + quote(SCRIPT_ID, safe=""))
    assert status == 200 and body == hostile.script_bytes
    state = op.http.get(secured.url + "/api/images/img-ok", timeout=30).json()
    assert state["image_id"] == "img-ok" and state["url"] == "/image/img-ok"
    assert [a["area_id"] for a in state["areas"]] == ["img-ok/scratch/0"]
    res = op.http.get(secured.url + "/api/images/nope", timeout=30)
    assert res.status_code == 404 and res.json()["error"] == "unknown image 'nope'"


def test_a_script_task_renders_as_text(secured: StartedServer) -> None:
    op = Operator(secured.url, "op-xss", TOKEN)
    html = op.page()
    assert "<script>alert" not in html
    assert str(escape(SCRIPT_CLASS)) in html  # the legend, the class picker, the help
    assert str(escape(SCRIPT_ID)) in html  # the strip of next images
    assert "/image/" + quote(SCRIPT_ID, safe="") in html
    # the only scripts are ours: the JSON config (escaped for a script block) and the static file
    assert re.findall(r"<script[^>]*>", html) == [
        '<script type="application/json" id="config">',
        f'<script src="/static/annotate.js?v={_config_version(html)}" defer>',
    ]
    config = op.config()
    assert SCRIPT_CLASS in [c["name"] for c in config["classes"]]
    res = op.http.get(secured.url + "/", timeout=30)
    csp = res.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert res.headers["x-content-type-options"] == "nosniff"
    # the API gives the id as data, in JSON
    nxt = op.api("/api/next")
    assert nxt["image"]["image_id"] == SCRIPT_ID
    assert nxt["image"]["areas"][0]["class"] == SCRIPT_CLASS
    op.api("/logout")


def _config_version(html: str) -> str:
    found = re.search(r"annotate\.js\?v=([0-9a-f]+)", html)
    assert found is not None
    return found.group(1)


def test_oversized_and_malformed_bodies(secured: StartedServer) -> None:
    op = Operator(secured.url, "op-body", TOKEN)
    image = op.api("/api/next")["image"]
    verdict = {
        "request_id": _request_id(),
        "image_id": image["image_id"],
        "area_id": image["areas"][0]["area_id"] if image["areas"] else "x",
        "verdict": "defect",
    }
    big = op.post("/api/verdict", {**verdict, "padding": "x" * (70 * 1024)})
    assert big.status_code == 413
    json_headers = {"Content-Type": "application/json"}
    cases = [
        (b"{not json", "malformed JSON"),
        (b'{"request_id": ', "malformed JSON"),
        (b"\xff\xfe\x00garbage", "malformed JSON"),
        (b"[1, 2, 3]", "invalid request"),
        (b'"a string"', "invalid request"),
        (b"{}", "request_id: Field required"),
        (json.dumps({**verdict, "verdict": "maybe"}).encode(), "verdict"),
        (json.dumps({**verdict, "extra": 1}).encode(), "extra: Extra inputs"),
        (json.dumps({**verdict, "request_id": "short"}).encode(), "request_id"),
        (json.dumps({**verdict, "image_id": 7}).encode(), "image_id"),
    ]
    for data, message in cases:
        res = op.post("/api/verdict", data=data, headers=json_headers)
        assert res.status_code == 400, (data, res.status_code, res.text)
        assert message in res.json()["error"], (data, res.json())
    drawn = {"request_id": _request_id(), "image_id": image["image_id"], "class": "scratch"}
    for bbox in ([0.5, 0, 8, 8], [0, 0, 8], ["0", 0, 8, 8], [0, 0, 8, True]):
        res = op.post("/api/drawn", {**drawn, "bbox": bbox})
        assert res.status_code == 400, (bbox, res.text)
    res = op.post("/api/verdict", data=b"{}", headers={"Content-Type": "text/plain"})
    assert res.status_code == 400
    # ids and values the server can check
    res = op.post("/api/verdict", {**verdict, "request_id": _request_id(), "area_id": "nope"})
    assert res.status_code == 404 and "unknown area 'nope'" in res.json()["error"]
    res = op.post("/api/drawn", {**drawn, "class": "dent", "bbox": [0, 0, 8, 8]})
    assert res.status_code == 400 and "unknown class 'dent'" in res.json()["error"]
    res = op.post("/api/drawn", {**drawn, "bbox": [0, 0, 64, 8]})
    assert res.status_code == 400 and "leaves the image" in res.json()["error"]
    # an image op-body does not hold (its next image is leased to it ahead of the current one)
    leases = op.http.get(secured.url + "/api/status", timeout=30).json()["leases"]
    mine = {x["image_id"] for x in leases if x["operator"] == op.name}
    other = next(i for i in ("img-ok", "img-link", "img-up", "img-abs") if i not in mine)
    res = op.post("/api/skip", {"request_id": _request_id(), "image_id": other})
    assert res.status_code == 409 and "leased to" in res.json()["error"]
    op.api("/logout")


# -- concurrency -------------------------------------------------------------------------------


def _random_tasks(root: Path, n_images: int, seed: int) -> Path:
    rng = random.Random(seed)
    areas: dict[str, list[TaskArea]] = {}
    paths = {}
    for i in range(n_images):
        image_id = f"img-{i:03d}"
        _png(root / f"line/images/{image_id}.png", i)
        paths[image_id] = f"line/images/{image_id}.png"
        areas[image_id] = [
            area(f"{image_id}/{k}", rng.choice(["scratch", "stain"]), [(k, k)],
                 (8 * k, 8 * k, 8 * k + 8, 8 * k + 8))
            for k in range(rng.randint(1, 3))
        ]  # fmt: skip
    path = root / "mining/tasks.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dump(make_tasks(areas, paths=paths)))
    return path


@dataclass
class Log:
    """What one operator's thread saw."""

    grants: list[tuple[str, float]] = field(default_factory=list)  # (image, time received)
    acked: dict[str, tuple[str, str, str | None]] = field(default_factory=dict)  # rid -> answer
    replays: int = 0
    errors: list[str] = field(default_factory=list)
    ahead_kept: int = 0  # images leased ahead that came next, as promised


def _work(op: Operator, log: Log, seed: int, stop: threading.Event | None = None) -> None:
    """Work through the queue like an operator: answer every area (some by class), skip some
    images once, resend some requests (a client retry)."""
    rng = random.Random(seed)
    skipped: set[str] = set()
    ahead: str | None = None  # the image leased to this operator ahead of the current one
    try:
        while stop is None or not stop.is_set():
            nxt = op.api("/api/next")
            image = nxt["image"]
            if ahead is not None:  # the current image was finished or skipped: it comes now
                assert image is not None and image["image_id"] == ahead, (image, ahead)
                log.ahead_kept += 1
            if image is None:
                return
            log.grants.append((image["image_id"], time.time()))
            mine = [f["image_id"] for f in nxt["following"] if f["leased_to"] == op.name]
            assert mine == [f["image_id"] for f in nxt["following"][: len(mine)]]
            assert len(mine) <= LEASE_AHEAD
            ahead = mine[0] if mine else None
            # fairness: never more than the current image and LEASE_AHEAD ahead
            holding = [x for x in nxt["status"]["leases"] if x["operator"] == op.name]
            assert 1 <= len(holding) <= 1 + LEASE_AHEAD, holding
            first = len(log.grants) == 1  # every operator skips the first image it gets
            if (
                image["image_id"] not in skipped
                and not nxt["revisit"]
                and (first or rng.random() < 0.1)
            ):
                skipped.add(image["image_id"])
                op.api("/api/skip", {"request_id": _request_id(), "image_id": image["image_id"]})
                continue
            for a in image["areas"]:
                if a["verdict"] is not None:
                    continue
                rid = _request_id()
                if rng.random() < 0.2:
                    body = {"request_id": rid, "image_id": image["image_id"],
                            "area_id": a["area_id"], "class": "stain"}  # fmt: skip
                    path, answer = "/api/class", ("class", "stain")
                else:
                    verdict = rng.choice(["defect", "healthy"])
                    body = {"request_id": rid, "image_id": image["image_id"],
                            "area_id": a["area_id"], "verdict": verdict}  # fmt: skip
                    path, answer = "/api/verdict", ("verdict", verdict)
                res = op.api(path, body)
                assert not res["replayed"]
                log.acked[rid] = (a["area_id"], *answer)
                if rng.random() < 0.15:  # the answer was lost: the client sends it again
                    again = op.api(path, body)
                    assert again["replayed"] and again["event_id"] == res["event_id"]
                    log.replays += 1
                if stop is not None and stop.is_set():
                    return
    except (requests.RequestException, AssertionError) as exc:
        log.errors.append(f"{op.name}: {type(exc).__name__}: {exc}")


def test_four_operators_at_once(tmp_path: Path) -> None:
    root = tmp_path / "data"
    tasks = _random_tasks(root, 30, seed=1)
    db_path = root / "annotate/concurrent.sqlite"
    export = root / "feedback/concurrent.json"
    with annotate_server(tasks, db_path, args=("--out", str(export))) as server:
        ops = [Operator(server.url, f"op-{k}") for k in range(4)]
        logs = [Log() for _ in ops]
        threads = [
            threading.Thread(target=_work, args=(op, log, k))
            for k, (op, log) in enumerate(zip(ops, logs, strict=True))
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not any(t.is_alive() for t in threads)
        assert [e for log in logs for e in log.errors] == []
        status = ops[0].http.get(server.url + "/api/status", timeout=30).json()
        assert status["images"]["left"] == 0 and status["areas"]["left"] == 0
        assert ops[0].api("/api/export")["path"] == str(export)
        exported = FeedbackFile.model_validate_json(export.read_text())
    db = AnnotationDB(db_path)
    try:
        states = db.states()
        events = db.events()
        lease_log = db.lease_log()
        assert db.refold() == []  # the cached state is the fold of the log
    finally:
        db.close()
    acked = {rid: ans for log in logs for rid, ans in log.acked.items()}
    # every area has exactly one current verdict: the one its operator sent
    areas = {a.area_id: a for s in states for a in s.areas}
    assert len(areas) == len(acked)
    answers = [e for e in events if e.kind in ("verdict", "class")]
    assert sorted(e.area_id or "" for e in answers) == sorted(areas)  # one event per area
    for e in answers:
        area_id, kind, value = acked[e.request_id]  # each acknowledged request, logged once
        assert (e.area_id, e.kind, e.value, e.undone) == (area_id, kind, value, False)
        a = areas[area_id]
        assert a.verdict == ("defect" if kind == "class" else value) and a.operator == e.operator
    assert len({e.request_id for e in events}) == len(events)
    assert sum(log.replays for log in logs) > 0
    # the prefetched next image was really its operator's
    assert sum(log.ahead_kept for log in logs) > 0
    # no image leased to two operators at once: per image, a grant is followed by its release
    # (a skip) before the next grant, as the server logged them in commit order
    holder: dict[str, str | None] = {}
    for row in lease_log:
        image, op = row["image_id"], row["operator"]
        if row["kind"] == "grant":
            assert holder.get(image) in (None, op), f"{image} granted to {op} while {holder}"
            assert row["previous"] is None  # nothing lapsed in this test
            holder[image] = op
        else:
            assert holder.get(image) == op
            holder[image] = None
    # what the operators were handed is what the server logged
    server_grants = sorted(
        (r["image_id"], r["operator"]) for r in lease_log if r["kind"] == "grant"
    )
    client_grants = sorted(
        {(image, op.name) for op, log in zip(ops, logs, strict=True) for image, _ in log.grants}
    )
    assert sorted(set(server_grants)) == client_grants
    # the skips released images that other operators then took
    assert sum(r["kind"] == "release" for r in lease_log) >= len(ops)
    assert any(len({op for i, op in server_grants if i == image}) > 1 for image in holder)
    # and the export holds every area exactly once
    exported_areas = [a.area_id for item in exported.items for a in item.areas]
    assert sorted(exported_areas) == sorted(areas)


def test_the_camera_original_is_in_the_payload(tmp_path: Path) -> None:
    """An image ingested from a 2048 px camera carries its original size, source and boxes in
    the original's pixels; a synthetic one carries none."""
    root = tmp_path / "data"
    _png(root / "line/images/cam-0.png", 0)
    _png(root / "line/images/synth.png", 1)
    tasks = make_tasks(
        {
            "cam-0": [area("cam-0/stain/0", "stain", [(1, 1)], (8, 8, 16, 16))],
            "synth": [area("synth/scratch/0", "scratch", [(0, 0)], (0, 0, 8, 8))],
        },
        paths={"cam-0": "line/images/cam-0.png", "synth": "line/images/synth.png"},
    )
    cam = tasks.images[0]
    cam = cam.model_copy(
        update={
            "orig_size": (2048, 2048),
            "source_uri": "s3://line/cam/0001.png",
            "areas": [cam.areas[0].model_copy(update={"orig_bbox": (512, 512, 1024, 1024)})],
        }
    )
    path = root / "mining/tasks.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dump(tasks.model_copy(update={"images": [cam, tasks.images[1]]})))
    with annotate_server(path, root / "annotate/orig.sqlite") as server:
        op = Operator(server.url, "op-orig")
        nxt = op.api("/api/next")
        image = nxt["image"]
        assert image["image_id"] == "cam-0" and image["orig_size"] == [2048, 2048]
        assert image["source_uri"] == "s3://line/cam/0001.png"
        assert image["areas"][0]["orig_bbox"] == [512, 512, 1024, 1024]
        assert image["areas"][0]["bbox"] == [8, 8, 16, 16]  # the stored image's, as before
        synth = nxt["following"][0]
        assert synth["image_id"] == "synth" and synth["orig_size"] is None
        assert synth["source_uri"] == "" and synth["areas"][0]["orig_bbox"] is None
        read = op.http.get(server.url + "/api/images/cam-0", timeout=30).json()
        assert read["orig_size"] == [2048, 2048]
        assert read["areas"][0]["orig_bbox"] == [512, 512, 1024, 1024]


# -- durability --------------------------------------------------------------------------------


def test_kill_9_loses_no_acknowledged_verdict(tmp_path: Path) -> None:
    root = tmp_path / "data"
    tasks = _random_tasks(root, 40, seed=2)
    db_path = root / "annotate/killed.sqlite"
    log_path = tmp_path / "server.log"
    stop = threading.Event()
    args = ("--out", str(root / "feedback/killed.json"))
    with annotate_server(tasks, db_path, log_path=log_path, args=args) as server:
        ops = [Operator(server.url, f"op-{k}") for k in range(2)]
        logs = [Log() for _ in ops]
        threads = [
            threading.Thread(target=_work, args=(op, log, 10 + k, stop))
            for k, (op, log) in enumerate(zip(ops, logs, strict=True))
        ]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while sum(len(log.acked) for log in logs) < 25 and time.monotonic() < deadline:
            time.sleep(0.01)
        server.kill9()  # mid-session: requests are in flight
        stop.set()
        for t in threads:
            t.join(timeout=60)
    acked = {rid: ans for log in logs for rid, ans in log.acked.items()}
    assert len(acked) >= 25, [log.errors for log in logs]
    assert any(log.errors for log in logs)  # the kill cut requests short: it was mid-session
    # the database as the killed server left it, before any restart: nothing acknowledged lost
    conn = sqlite3.connect(db_path)
    try:
        logged = {
            r[0]: r[1:] for r in conn.execute("SELECT request_id, area_id, kind, value FROM events")
        }
        held = {
            op: {r[0] for r in conn.execute(
                "SELECT l.image_id FROM leases l JOIN images i ON i.image_id = l.image_id "
                "WHERE l.operator = ? AND i.done = 0", (op,))}
            for op in ("op-0", "op-1")
        }  # fmt: skip
    finally:
        conn.close()
    for rid, answer in acked.items():
        assert logged.get(rid) == answer, f"acknowledged {rid} {answer} lost"
    # restart on the same database: sessions (signed with the database's secret) and leases
    # survive, and the operators finish the task set
    with annotate_server(tasks, db_path, log_path=log_path, args=args) as server:
        assert "continuing" in server.log_tail()
        for op in ops:
            op.url = server.url
            image = op.api("/api/next")["image"]
            if held[op.name]:  # the image they were working on is still theirs
                assert image["image_id"] in held[op.name]
        after = [Log() for _ in ops]
        threads = [
            threading.Thread(target=_work, args=(op, log, 20 + k))
            for k, (op, log) in enumerate(zip(ops, after, strict=True))
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert [e for log in after for e in log.errors] == []
        status = ops[0].http.get(server.url + "/api/status", timeout=30).json()
        assert status["areas"]["left"] == 0
    db = AnnotationDB(db_path)
    try:
        events = {e.request_id: e for e in db.events()}
        states = db.states()
    finally:
        db.close()
    for rid, (area_id, kind, value) in acked.items():
        e = events[rid]
        assert (e.area_id, e.kind, e.value) == (area_id, kind, value)
    assert all(a.verdict is not None for s in states for a in s.areas)
    answers = [e.area_id for e in events.values() if e.kind in ("verdict", "class")]
    assert len(answers) == len(set(answers))  # no area answered twice, before or after the kill


# -- images in S3 ------------------------------------------------------------------------------


def test_images_from_an_s3_data_root(tmp_path: Path, s3_endpoint: str) -> None:
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, **aws_client_kwargs())
    s3.create_bucket(Bucket="annotate-plant")
    local = tmp_path / "local"
    data = _png(local / "img-s3.png", 3)
    s3.put_object(Bucket="annotate-plant", Key="line-3/images/img-s3.png", Body=data)
    s3.put_object(Bucket="annotate-plant", Key="secret.png", Body=b"secret outside the store")
    tasks = make_tasks(
        {"img-s3": [area("img-s3/stain/0", "stain", [(0, 0)])], "img-up": []},
        paths={"img-s3": "images/img-s3.png", "img-up": "../secret.png"},
    )
    path = tmp_path / "data/mining/tasks.json"
    path.parent.mkdir(parents=True)
    path.write_text(dump(tasks))
    args = ("--data-root", "s3://annotate-plant/line-3", "--endpoint-url", s3_endpoint)
    args += ("--allow-missing-images",)  # img-up climbs out of the data root
    args += ("--out", str(tmp_path / "feedback.json"))
    with annotate_server(path, tmp_path / "s3.sqlite", args=args) as server:
        op = Operator(server.url, "op-s3")
        res = op.http.get(server.url + "/image/img-s3", timeout=30)
        assert res.status_code == 200 and res.content == data
        assert op.raw_get("/image/img-up")[0] == 404
        assert op.raw_get("/image/..%2Fsecret.png")[0] == 404
