"""The web interface: a FastAPI application over one :class:`~mentoring.annotate.db.AnnotationDB`.

Server-rendered pages (Jinja2, autoescaped) and one static script (``static/annotate.js``) that
talks to a small JSON API. Everything that matters is decided here, on the server: ids must exist
in the task set, verdicts and classes be known, the operator hold the image's lease; the script
only draws and sends keys.

Security model (docs/annotate.md):

- **Deny by default.** Every path but ``/login``, ``/static/`` (the script and the style sheet)
  and ``/favicon.ico`` needs a logged-in operator
  (a session cookie signed with the database's secret, ``HttpOnly``, ``SameSite=Strict``); when
  a token is configured it also needs the token, as ``Authorization: Bearer <token>`` or through
  the login that put its HMAC in the session. Pages redirect to ``/login``; the API answers 401.
- **CSRF**: every request that is not GET/HEAD needs an ``X-CSRF-Token`` header equal to the
  session's token (checked server-side in constant time), and the login form a token of its own;
  a cross-site page can neither read the token nor send the header without a CORS preflight,
  which the app never grants.
- **Sessions** are also kept on the server (:meth:`AnnotationDB.open_session`): the cookie
  carries a random session id whose row logout deletes and which ends ``session_s`` after login;
  a cookie saved before a logout, or older than that, is refused.
- **Wrong tokens** (login or bearer) are counted per client address
  (:class:`LoginThrottle`): after ``max_login_failures`` within ``login_window_s`` that address
  gets 429 with ``Retry-After`` on every token attempt, the right token too, until the window
  has passed.
- **Host header**: bound to loopback, only loopback host names on the server's own port are
  answered (DNS rebinding; another local service's page).
- **Bodies**: at most ``max_body`` bytes (413); malformed JSON or fields is a 400 with a
  message. Responses carry a strict Content-Security-Policy (no inline script), ``nosniff`` and
  no framing.
- **Images** are served by task image id only (:mod:`mentoring.annotate.images`): anything else
  is a 404. An image that cannot be read (``missing_images`` at start, or a failed read since) is
  logged with its id, marked ``missing`` in the API, and every answer on it (verdict, class,
  flag, done, drawn box) is refused with 409: no one has seen it.

Example:
    >>> app = create_app(AnnotationDB("x.sqlite"), ImageSource("data"),
    ...                  export_path=Path("data/feedback/x.json"))    # doctest: +SKIP
    >>> uvicorn.run(app, host="127.0.0.1", port=8000)                   # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import re
import secrets
import sqlite3
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, MutableMapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs, quote

import jinja2
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StringConstraints
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from mentoring.annotate.db import (
    ActionResult,
    AnnotateError,
    AnnotationDB,
    Conflict,
    NextResult,
    NotFound,
)
from mentoring.annotate.export import export_feedback
from mentoring.annotate.images import ImageNotFound, ImageSource

log = logging.getLogger("mentoring.annotate")

HERE = Path(__file__).parent
#: request bodies above this many bytes are refused (413); a verdict is about 200
MAX_BODY = 64 * 1024
#: a working day: an operator logs in again after it
SESSION_MAX_AGE_S = 12 * 3600
#: wrong tokens one client address may send within LOGIN_WINDOW_S before it gets 429
MAX_LOGIN_FAILURES = 10
#: the window of MAX_LOGIN_FAILURES, and how long a client that reached it is refused
LOGIN_WINDOW_S = 300.0
#: client addresses the login throttle remembers (the oldest is forgotten first)
MAX_THROTTLED_CLIENTS = 4096
SESSION_COOKIE = "mentoring_session"
#: names operators log in with: letters, digits, space and . _ @ -
OPERATOR_RE = re.compile(r"^[\w .@-]{1,64}$")
#: hosts a loopback-bound server answers to (a rebinding DNS name is refused)
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
#: class colours, by class index (never derived from a name)
PALETTE = (
    "#ff4d4f",
    "#40c057",
    "#4dabf7",
    "#fab005",
    "#be4bdb",
    "#15aabf",
    "#f783ac",
    "#a9e34b",
    "#ff922b",
    "#e9ecef",
)
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
_SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


# -- request bodies ----------------------------------------------------------------------------

RequestId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{8,128}$")]
Id = Annotated[str, StringConstraints(min_length=1, max_length=2048)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class VerdictIn(_Body):
    request_id: RequestId  # client-generated: a retry with the same id is applied once
    image_id: Id
    area_id: Id
    verdict: Literal["defect", "healthy"]


class ClassIn(_Body):
    request_id: RequestId
    image_id: Id
    area_id: Id
    cls: Id = Field(alias="class")


class ImageIn(_Body):
    request_id: RequestId
    image_id: Id


class DrawnIn(_Body):
    request_id: RequestId
    image_id: Id
    cls: Id = Field(alias="class")
    bbox: tuple[StrictInt, StrictInt, StrictInt, StrictInt]  # x0, y0, x1, y1 stored pixels


class EraseIn(_Body):
    request_id: RequestId
    image_id: Id
    area_id: Id


class UndoIn(_Body):
    request_id: RequestId


class Empty(_Body):
    pass


# -- helpers -----------------------------------------------------------------------------------


def image_url(image_id: str) -> str:
    """The URL of an image: its task id, percent-encoded (a ``/`` too)."""
    return "/image/" + quote(image_id, safe="")


def _host(header: str) -> str:
    """The host name of a Host header, without the port (IPv6 brackets removed)."""
    return _host_port(header)[0]


def _host_port(header: str) -> tuple[str, int | None]:
    """The host name and port of a Host header (port None when absent or not a number)."""
    name, port = header, ""
    if header.startswith("["):
        end = header.find("]")
        if end < 0:
            return header, None
        name, rest = header[1:end], header[end + 1 :]
        port = rest[1:] if rest.startswith(":") else ""
    elif header.count(":") == 1:
        name, port = header.split(":")
    if not port:
        return name, None
    return name, int(port) if port.isascii() and port.isdigit() else -1


class LoginThrottle:
    """Wrong tokens per client address, in a sliding window, with bounded memory.

    A client with ``max_failures`` wrong tokens within ``window_s`` seconds is refused every
    token attempt until ``window_s`` after the last of them (:meth:`retry_after` > 0). At most
    ``max_clients`` addresses are remembered: the least recently failing one is forgotten first.
    """

    def __init__(
        self,
        max_failures: int = MAX_LOGIN_FAILURES,
        window_s: float = LOGIN_WINDOW_S,
        max_clients: int = MAX_THROTTLED_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_failures < 1 or window_s <= 0 or max_clients < 1:
            raise ValueError("max_failures, window_s and max_clients must be positive")
        self.max_failures = max_failures
        self.window_s = window_s
        self.max_clients = max_clients
        self.clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def retry_after(self, client: str) -> int:
        """Seconds until ``client`` may try a token again (0: now)."""
        with self._lock:
            times = self._failures.get(client)
            if times is None:
                return 0
            now = self.clock()
            if now - times[-1] >= self.window_s:  # the window passed: forgotten
                del self._failures[client]
                return 0
            if len(times) < self.max_failures:
                return 0
            return max(1, math.ceil(times[-1] + self.window_s - now))

    def fail(self, client: str) -> None:
        """Count a wrong token from ``client``."""
        with self._lock:
            now = self.clock()
            times = self._failures.pop(client, None)
            if times is None:
                times = deque(maxlen=self.max_failures)
            while times and now - times[0] >= self.window_s:
                times.popleft()
            times.append(now)
            self._failures[client] = times  # most recent last
            while len(self._failures) > self.max_clients:
                self._failures.popitem(last=False)

    def __len__(self) -> int:
        return len(self._failures)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _client(request: Request) -> str:
    """The client's address (a proxy in front makes every client the proxy: docs/annotate.md)."""
    return request.client.host if request.client is not None else "?"


def _too_many(wait: int) -> JSONResponse:
    return JSONResponse(
        {"error": f"too many wrong tokens from this address: retry in {wait} s"},
        status_code=429,
        headers={"Retry-After": str(wait)},
    )


class _Guard:
    """Deny by default: host check, token, operator session, CSRF (see the module docstring).

    Runs inside the session middleware (it reads ``scope["session"]``)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        token_tag: str | None,
        token: str | None,
        allowed_hosts: Sequence[str] | None,
        port: int | None,
        db: AnnotationDB,
        throttle: LoginThrottle,
    ) -> None:
        self.app = app
        self.token = token
        self.token_tag = token_tag
        self.allowed_hosts = set(allowed_hosts) if allowed_hosts is not None else None
        self.port = port
        self.db = db
        self.throttle = throttle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        response = self._check(request)
        if response is not None:
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _check(self, request: Request) -> Response | None:
        if self.allowed_hosts is not None:
            host, port = _host_port(request.headers.get("host", ""))
            if host not in self.allowed_hosts:
                return _error(400, "unknown Host header (the server answers its loopback name)")
            # no port in the header is the scheme's default (RFC 9110 7.2)
            default = 443 if request.url.scheme == "https" else 80
            if self.port is not None and (default if port is None else port) != self.port:
                return _error(
                    400, f"wrong port in the Host header (the server answers on port {self.port})"
                )
        path = request.url.path
        if path in ("/login", "/favicon.ico") or path.startswith("/static/"):
            return None
        page = request.method in _SAFE_METHODS and not path.startswith(("/api/", "/image/"))

        def refuse(status: int, message: str) -> Response:
            if page:
                return RedirectResponse("/login", status_code=303)
            return _error(status, message)

        session = request.session
        if self.token is not None:
            auth = request.headers.get("authorization", "")
            scheme, _, given = auth.partition(" ")
            if auth and scheme.lower() == "bearer":
                client = _client(request)
                wait = self.throttle.retry_after(client)
                if wait:
                    return _too_many(wait)
                if not hmac.compare_digest(given.strip().encode(), self.token.encode()):
                    self.throttle.fail(client)
                    log.warning("wrong bearer token from %s", client)
                    return refuse(401, "wrong token")
            elif not hmac.compare_digest(str(session.get("auth", "")), self.token_tag or ""):
                return refuse(401, "this server needs its token: log in at /login")
        if not session.get("operator"):
            return refuse(401, "not logged in: log in at /login")
        # the session must still be open on the server: not logged out, not expired
        sid = session.get("sid")
        if not isinstance(sid, str) or self.db.session_operator(sid) != session["operator"]:
            return refuse(401, "session ended (logged out or expired): log in at /login")
        if request.method not in _SAFE_METHODS:
            given_csrf = request.headers.get("x-csrf-token", "")
            expected = str(session.get("csrf", ""))
            if not expected or not hmac.compare_digest(given_csrf.encode(), expected.encode()):
                return _error(403, "missing or wrong X-CSRF-Token header")
        return None


class _SecurityHeaders:
    """Adds :data:`SECURITY_HEADERS` to every response, and ``Cache-Control: no-store`` unless
    the route set its own."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                for key, value in SECURITY_HEADERS.items():
                    if key.lower().encode() not in names:
                        headers.append((key.lower().encode(), value.encode()))
                if b"cache-control" not in names:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _validation_message(exc: RequestValidationError) -> str:
    problems = []
    for e in exc.errors()[:10]:
        if e.get("type") == "json_invalid":
            ctx = e.get("ctx") or {}
            pos = e.get("loc", ("body", "?"))[-1]
            problems.append(f"malformed JSON ({ctx.get('error', 'decode error')} at {pos})")
            continue
        loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
        problems.append(f"{loc}: {e.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(problems)


# -- the application ---------------------------------------------------------------------------


def create_app(
    db: AnnotationDB,
    images: ImageSource,
    *,
    export_path: str | Path,
    token: str | None = None,
    allowed_hosts: Sequence[str] | None = LOOPBACK_HOSTS,
    max_body: int = MAX_BODY,
    secure_cookies: bool = False,
    port: int | None = None,
    session_s: float = SESSION_MAX_AGE_S,
    missing_images: MutableMapping[str, str] | None = None,
    throttle: LoginThrottle | None = None,
) -> FastAPI:
    """The web interface over ``db`` (a task set already loaded).

    Args:
        db: the annotation database.
        images: where the task set's images are read.
        export_path: the feedback file the export button writes (a path or an ``s3://`` URI).
        token: when set, every request needs it (header or login); required off loopback.
        allowed_hosts: Host header names answered (None: any, for a server bound off loopback,
            which the token protects).
        max_body: the largest request body accepted, in bytes.
        secure_cookies: mark the session cookie ``Secure`` (behind HTTPS).
        port: the port the server listens on: a Host header naming another is refused (None:
            any port). Only checked with ``allowed_hosts``.
        session_s: a login's lifetime in seconds; after it the operator logs in again.
        missing_images: image id -> why its image cannot be read (``serve`` checks them at
            start); answers on these images are refused. Kept up to date as images are served.
        throttle: the wrong-token counter (default: :class:`LoginThrottle` with its defaults).
    """
    if session_s <= 0:
        raise ValueError(f"session_s must be > 0, got {session_s}")
    missing: MutableMapping[str, str] = {} if missing_images is None else missing_images
    throttle = LoginThrottle() if throttle is None else throttle
    info = db.info()
    export_path = str(export_path)
    secret = db.secret()
    token_tag = (
        hmac.new(secret.encode(), token.encode(), hashlib.sha256).hexdigest() if token else None
    )
    width, height = info.size
    classes = [
        {"name": c, "color": PALETTE[i % len(PALETTE)], "key": str(i + 1) if i < 9 else ""}
        for i, c in enumerate(info.classes)
    ]
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every value is escaped; nothing from a task is marked safe
        undefined=jinja2.StrictUndefined,
    )
    asset_version = hashlib.sha256(
        b"".join((HERE / "static" / n).read_bytes() for n in ("annotate.js", "annotate.css"))
    ).hexdigest()[:12]

    app = FastAPI(
        title="mentoring annotate",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        max_body_size=max_body,
    )
    # added last = outermost: headers on every response, then the session, then the guard
    app.add_middleware(
        _Guard,
        token_tag=token_tag,
        token=token,
        allowed_hosts=allowed_hosts,
        port=port,
        db=db,
        throttle=throttle,
    )
    app.add_middleware(
        SessionMiddleware,
        secret_key=secret,
        session_cookie=SESSION_COOKIE,
        max_age=max(1, math.ceil(session_s)),  # the server's row decides; the cookie follows
        same_site="strict",
        https_only=secure_cookies,
    )
    app.add_middleware(_SecurityHeaders)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    def render(name: str, code: int = 200, **context: Any) -> HTMLResponse:
        html = env.get_template(name).render(asset_version=asset_version, **context)
        return HTMLResponse(html, status_code=code)

    def operator(request: Request) -> str:
        return str(request.session["operator"])

    # -- errors --------------------------------------------------------------------------------

    @app.exception_handler(AnnotateError)
    async def _annotate_error(request: Request, exc: AnnotateError) -> JSONResponse:
        return _error(exc.status, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(400, _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            {"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(sqlite3.OperationalError)
    async def _busy(request: Request, exc: sqlite3.OperationalError) -> JSONResponse:
        log.warning("database error: %s", exc)
        return _error(503, f"database busy, retry ({exc})")

    # -- login ---------------------------------------------------------------------------------

    def login_page(request: Request, error: str = "", status: int = 200) -> HTMLResponse:
        login_csrf = request.session.get("login_csrf") or secrets.token_urlsafe(32)
        request.session["login_csrf"] = login_csrf
        return render(
            "login.html",
            code=status,
            error=error,
            csrf=login_csrf,
            token_required=token is not None,
            operator=request.session.get("operator", ""),
            info=info,
        )

    @app.get("/login", response_class=HTMLResponse)
    def login_get(request: Request) -> HTMLResponse:
        return login_page(request)

    @app.post("/login", response_class=HTMLResponse)
    async def login_post(request: Request) -> Response:
        form = parse_qs((await request.body()).decode(errors="replace"))

        def field(name: str) -> str:
            return form.get(name, [""])[0]

        client = _client(request)
        wait = throttle.retry_after(client) if token is not None else 0
        if wait:
            page = login_page(request, f"Too many wrong tokens: try again in {wait} s.", 429)
            page.headers["Retry-After"] = str(wait)
            return page
        expected = str(request.session.get("login_csrf", ""))
        if not expected or not hmac.compare_digest(field("csrf").encode(), expected.encode()):
            return login_page(request, "The form expired: log in again.", 403)
        name = field("operator").strip()
        if not OPERATOR_RE.fullmatch(name):
            return login_page(
                request, "An operator name is 1-64 letters, digits, spaces or . _ @ -", 400
            )
        if token is not None and not hmac.compare_digest(field("token").encode(), token.encode()):
            throttle.fail(client)
            log.warning("wrong token at login from %s", client)
            return login_page(request, "Wrong token.", 401)
        old_sid = request.session.get("sid")
        if isinstance(old_sid, str):
            db.end_session(old_sid)
        request.session.clear()
        sid = db.open_session(name, session_s)
        request.session.update(operator=name, csrf=secrets.token_urlsafe(32), sid=sid)
        if token_tag is not None:
            request.session["auth"] = token_tag
        return RedirectResponse("/", status_code=303)

    @app.post("/logout")
    def logout(request: Request) -> JSONResponse:
        released = db.release_all(operator(request))
        db.end_session(str(request.session["sid"]))  # a saved copy of the cookie is void now
        request.session.clear()
        return JSONResponse({"released": released})

    # -- the queue page ------------------------------------------------------------------------

    @app.get("/", response_class=HTMLResponse)
    def queue(request: Request) -> HTMLResponse:
        op = operator(request)
        upcoming = db.peek(op, 4)
        status = db.status()
        config = {
            "operator": op,
            "csrf": request.session["csrf"],
            "classes": classes,
            "width": width,
            "height": height,
            "grid": list(info.grid),
            "stride": info.stride,
            "lease_s": db.lease_s,
        }
        return render(
            "queue.html",
            operator=op,
            config=config,
            classes=classes,
            info=info,
            width=width,
            height=height,
            upcoming=[{"image_id": i, "url": image_url(i)} for i in upcoming],
            status=status,
        )

    # -- the API -------------------------------------------------------------------------------

    def image_json(state: Any) -> dict[str, Any]:
        return {
            **state.as_dict(),
            "url": image_url(state.image_id),
            "missing": state.image_id in missing,
        }

    def seen(image_id: str) -> None:
        """Refuse an answer on an image no one could see (its file cannot be read)."""
        if image_id in missing:
            raise Conflict(
                f"image {image_id!r} is missing on the server (its file cannot be read): no "
                f"verdict can be given on it; skip it"
            )

    def next_json(result: NextResult, op: str) -> dict[str, Any]:
        return {
            "image": image_json(result.image) if result.image is not None else None,
            "following": [image_json(s) for s in result.following],
            "revisit": result.revisit,
            "status": db.status(),
        }

    def action_json(result: ActionResult) -> JSONResponse:
        out = result.as_dict()
        out["image"] = image_json(result.image)
        return JSONResponse(out)

    @app.post("/api/next")
    def api_next(request: Request, body: Empty | None = None) -> JSONResponse:
        op = operator(request)
        return JSONResponse(next_json(db.next_image(op), op))

    @app.get("/api/status")
    def api_status(request: Request) -> JSONResponse:
        return JSONResponse({**db.status(), "you": operator(request)})

    @app.get("/api/images/{image_id:path}")
    def api_image(request: Request, image_id: str) -> JSONResponse:
        return JSONResponse(image_json(db.image_state(image_id)))

    @app.post("/api/verdict")
    def api_verdict(request: Request, body: VerdictIn) -> JSONResponse:
        seen(body.image_id)
        return action_json(
            db.verdict(
                operator(request), body.request_id, body.image_id, body.area_id, body.verdict
            )
        )

    @app.post("/api/class")
    def api_class(request: Request, body: ClassIn) -> JSONResponse:
        seen(body.image_id)
        return action_json(
            db.change_class(
                operator(request), body.request_id, body.image_id, body.area_id, body.cls
            )
        )

    @app.post("/api/healthy")
    def api_healthy(request: Request, body: ImageIn) -> JSONResponse:
        seen(body.image_id)
        return action_json(db.flag_healthy(operator(request), body.request_id, body.image_id))

    @app.post("/api/skip")
    def api_skip(request: Request, body: ImageIn) -> JSONResponse:
        return action_json(db.skip(operator(request), body.request_id, body.image_id))

    @app.post("/api/done")
    def api_done(request: Request, body: ImageIn) -> JSONResponse:
        seen(body.image_id)
        return action_json(db.finish(operator(request), body.request_id, body.image_id))

    @app.post("/api/drawn")
    def api_drawn(request: Request, body: DrawnIn) -> JSONResponse:
        seen(body.image_id)
        return action_json(
            db.draw(operator(request), body.request_id, body.image_id, body.cls, body.bbox)
        )

    @app.post("/api/drawn/delete")
    def api_erase(request: Request, body: EraseIn) -> JSONResponse:
        return action_json(
            db.erase(operator(request), body.request_id, body.image_id, body.area_id)
        )

    @app.post("/api/undo")
    def api_undo(request: Request, body: UndoIn) -> JSONResponse:
        return action_json(db.undo(operator(request), body.request_id))

    @app.post("/api/export")
    def api_export(request: Request, body: Empty | None = None) -> JSONResponse:
        summary = export_feedback(db, export_path, images.endpoint_url)
        log.info("%s exported %s", operator(request), summary.as_dict())
        return JSONResponse(summary.as_dict())

    @app.get("/favicon.ico")
    def favicon() -> Response:
        return Response(status_code=204)  # none: say so instead of a 404 in every console

    # -- images --------------------------------------------------------------------------------

    @app.get("/image/{image_id:path}")
    def image(image_id: str) -> Response:
        try:
            path = db.image_path(image_id)
        except NotFound:
            log.info("image refused: unknown image id %r", image_id)
            return _error(404, "no such image")
        try:
            data, media_type = images.read(path)
        except ImageNotFound as exc:
            missing[image_id] = str(exc)
            log.warning("image %r not served (404): %s", image_id, exc)
            return _error(404, "no such image")
        missing.pop(image_id, None)  # readable (again): answers on it are taken
        return Response(
            data, media_type=media_type, headers={"Cache-Control": "private, max-age=3600"}
        )

    return app
