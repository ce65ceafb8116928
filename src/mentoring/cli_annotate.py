"""``mentoring annotate serve | export | status``: the mentoring web interface (docs/annotate.md).

The commands are registered on :mod:`mentoring.cli`'s ``annotate`` group, with its error handling.
A task set gets its own database, ``data/annotate/annotate-<first 12 of its sha256>.sqlite``
unless ``--db`` names one, and its export goes to ``data/feedback/<database name>.json``. A
published mining round (``--tasks s3://.../<sha256[:12]>``, :mod:`mentoring.feedback.rounds`) is
served from S3: its tasks are fetched (and checked against the round's name) into
``data/annotate/rounds/<round>/``, its images read from the round's ``images/``, and the export
goes to the round's ``feedback/``, where the retraining pipeline's ``mining_round`` imports it.

Example:
    mentoring annotate serve                                   # http://127.0.0.1:8000/
    mentoring annotate serve --host 0.0.0.0 --token "$(openssl rand -hex 24)"
    mentoring annotate serve --tasks s3://plant/mining/3f2a9c0d1b7e
    mentoring annotate status
    mentoring annotate export && mentoring mentor import
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from mentoring import pipeline_spec as spec
from mentoring.cli import _md, out
from mentoring.feedback.rounds import MiningRound, round_of
from mentoring.feedback.schema import read_tasks
from mentoring.io import sha256_file
from mentoring.storage import is_s3

#: the folder of the annotation databases (one per task set)
DB_DIR = Path("data/annotate")
TOKEN_ENV = "MENTORING_ANNOTATE_TOKEN"
#: the shortest token accepted (a token is what stands between the plant network and the app)
MIN_TOKEN_CHARS = 16

TasksOpt = Annotated[
    str,
    typer.Option(
        help="Mining tasks (`mentoring mine`), or a published mining round "
        "(s3://bucket/prefix/<sha256[:12]>, or its tasks.json); without --db they also name "
        "the database."
    ),
]
EndpointOpt = Annotated[
    str | None,
    typer.Option(
        help="S3 endpoint for s3:// rounds and images [default: boto3's AWS_ENDPOINT_URL_S3 / "
        "AWS_ENDPOINT_URL, else AWS]."
    ),
]
DbOpt = Annotated[
    Path | None,
    typer.Option(
        "--db",
        help=_md(
            "Annotation database [default: data/annotate/annotate-<tasks sha256[:12]>.sqlite]."
        ),
    ),
]
OutOpt = Annotated[
    str | None,
    typer.Option(
        "--out",
        help=_md(
            "Feedback file to write, a path or s3:// URI [default: the round's "
            "feedback/<database name>.json for a round, else data/feedback/<database name>.json]."
        ),
    ),
]
DEFAULT_TASKS = str(spec.default("mentor", "tasks"))


def default_db(tasks_sha256: str) -> Path:
    """The database of a task set when ``--db`` is not given."""
    return DB_DIR / f"annotate-{tasks_sha256[:12]}.sqlite"


def default_export(db: Path) -> Path:
    """Where a database's feedback goes when ``--out`` is not given."""
    return spec.default("mentor", "feedback") / f"{db.stem}.json"


def is_loopback(host: str) -> bool:
    """Is ``host`` a loopback address (or ``localhost``)?"""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class TaskSet:
    """The tasks a command works on: a local file, and the round it was published as."""

    path: Path  # the local tasks file (a round's is fetched first)
    mining_round: MiningRound | None  # None: a plain tasks file

    def export_to(self, db: Path) -> str:
        """Where the feedback of ``db`` goes by default."""
        if self.mining_round is not None:
            return self.mining_round.feedback_location(f"{db.stem}.json")
        return str(default_export(db))

    def data_root(self) -> str:
        """Where the tasks' image paths start by default."""
        if self.mining_round is not None:
            return self.mining_round.images_uri
        return str(self.path.resolve().parent.parent)


def task_set(tasks: str, endpoint_url: str | None = None, fetch: bool = True) -> TaskSet:
    """Resolve ``--tasks``: an ``s3://`` round is fetched (once per round: the copy is checked
    against the round's name) into ``data/annotate/rounds/<round>/tasks.json``; a local folder
    or file is a round when its folder is named like one.

    Raises:
        RoundError: an ``s3://`` location that is no round, or whose tasks do not match it.
    """
    if is_s3(tasks):
        rnd = MiningRound.at(tasks, endpoint_url)
        local = DB_DIR / "rounds" / rnd.name / "tasks.json"
        if fetch or not local.exists():
            rnd.fetch_tasks(local)
        return TaskSet(local, rnd)
    path = Path(tasks)
    if path.is_dir():
        path = path / "tasks.json"
    local_round = round_of(path)
    return TaskSet(path, MiningRound(local_round.uri) if local_round else None)


def _existing_db(tasks: Path, db: Path | None) -> Path:
    if db is None:
        if not tasks.exists():
            raise FileNotFoundError(f"{tasks}: tasks not found; pass --db or --tasks")
        db = default_db(sha256_file(tasks))
        if not db.exists():
            raise FileNotFoundError(
                f"{db}: no annotation database for {tasks} (run `mentoring annotate serve` "
                f"first, or pass --db)"
            )
    elif not db.exists():
        raise FileNotFoundError(f"{db}: annotation database not found")
    return db


def serve_cmd(
    tasks: TasksOpt = DEFAULT_TASKS,
    db: DbOpt = None,
    data_root: Annotated[
        str | None,
        typer.Option(
            help="Where the tasks' image paths start: a folder or s3://bucket/prefix "
            "[default: a round's images/, else the folder above the tasks' folder, data/ for "
            "data/mining/tasks.json].",
        ),
    ] = None,
    host: Annotated[
        str, typer.Option(help="Address to bind; any non-loopback address needs --token.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to bind.")] = 8000,
    token: Annotated[
        str | None,
        typer.Option(
            envvar=TOKEN_ENV,
            show_envvar=True,
            help=f"Token every request must carry (header or login); at least "
            f"{MIN_TOKEN_CHARS} characters. Required off loopback.",
        ),
    ] = None,
    lease_minutes: Annotated[
        float,
        typer.Option(min=0.05, help="An image goes back to the queue after this idle time."),
    ] = 5.0,
    out_path: OutOpt = None,
    endpoint_url: EndpointOpt = None,
    secure_cookies: Annotated[
        bool, typer.Option(help="Mark the session cookie Secure (when served behind HTTPS).")
    ] = False,
    session_hours: Annotated[
        float, typer.Option(min=0.0002, help="A login ends after this long (log in again).")
    ] = 12.0,
    max_login_failures: Annotated[
        int, typer.Option(min=1, help="Wrong tokens per client address before it gets 429.")
    ] = 10,
    login_window_s: Annotated[
        float,
        typer.Option(min=0.1, help="Window of --max-login-failures, and how long 429 lasts."),
    ] = 300.0,
    header_timeout_s: Annotated[
        float,
        typer.Option(min=0.1, help="A client that has not sent its headers by then is dropped."),
    ] = 10.0,
    allow_missing_images: Annotated[
        bool,
        typer.Option(
            help="Start even when some tasks' images cannot be read (shown as missing; "
            "answers on them refused)."
        ),
    ] = False,
) -> None:
    """Serve the mentoring web interface on the task set (state in the database: a restart
    continues where it stopped)."""
    import uvicorn

    from mentoring.annotate.app import LOOPBACK_HOSTS, LoginThrottle, create_app
    from mentoring.annotate.db import AnnotationDB
    from mentoring.annotate.images import ImageSource, missing_images
    from mentoring.annotate.server import header_timeout_protocol

    loopback = is_loopback(host)
    if not loopback and not token:
        raise ValueError(
            f"refusing to serve on {host}, which is not loopback, without a token: pass --token "
            f"or set {TOKEN_ENV} (e.g. `openssl rand -hex 24`)"
        )
    if token is not None and len(token) < MIN_TOKEN_CHARS:
        raise ValueError(f"the token must have at least {MIN_TOKEN_CHARS} characters")
    ts = task_set(tasks, endpoint_url)
    mining = read_tasks(ts.path)
    sha = sha256_file(ts.path)
    db = db or default_db(sha)
    database = AnnotationDB(db, lease_s=lease_minutes * 60.0)
    source = ts.mining_round.tasks_uri if ts.mining_round else str(ts.path)
    loaded = database.load_tasks(mining, sha, source)
    root = data_root or ts.data_root()
    export_path = out_path or ts.export_to(db)
    images = ImageSource(root, endpoint_url=endpoint_url)
    missing = missing_images(database, images)
    if missing:
        listed = "; ".join(f"{i!r}: {why}" for i, why in list(missing.items())[:5])
        more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
        what = f"{len(missing)} of {len(mining.images)} images cannot be read under {root}"
        if not allow_missing_images:
            raise FileNotFoundError(
                f"{what}: {listed}{more}. Pass --data-root (the folder the tasks' paths start "
                f"from), or --allow-missing-images to serve the others"
            )
        typer.echo(f"warning: {what}; shown as missing, answers refused: {listed}{more}", err=True)
    app = create_app(
        database,
        images,
        export_path=export_path,
        token=token or None,
        allowed_hosts=(*LOOPBACK_HOSTS, host) if loopback else None,
        secure_cookies=secure_cookies,
        port=port,
        session_s=session_hours * 3600.0,
        missing_images=missing,
        throttle=LoginThrottle(max_login_failures, login_window_s),
    )
    shown = f"[{host}]" if ":" in host else host
    status = database.status()
    typer.echo(
        f"mentoring annotate: open http://{shown}:{port}/ "
        f"({len(mining.images)} images, {status['areas']['left']} of {status['areas']['total']} "
        f"areas left; {'loaded' if loaded else 'continuing'} {db}; "
        f"{'token required' if token else 'no token, loopback only'}; "
        f"leases {lease_minutes:g} min; export to {export_path})",
        err=False,
    )
    uvicorn.run(
        app,
        host=host.strip("[]"),
        port=port,
        http=header_timeout_protocol(header_timeout_s),
        log_level="info",
        access_log=False,
        timeout_graceful_shutdown=5,
    )


def export_cmd(
    tasks: TasksOpt = DEFAULT_TASKS,
    db: DbOpt = None,
    out_path: OutOpt = None,
    endpoint_url: EndpointOpt = None,
) -> None:
    """Write the current feedback of a database as a feedback file for `mentoring mentor` (for a
    round: into the round's feedback/, which retraining's mining_round imports)."""
    from mentoring.annotate.db import AnnotationDB
    from mentoring.annotate.export import export_feedback

    ts = task_set(tasks, endpoint_url, fetch=False)
    path = _existing_db(ts.path, db)
    database = AnnotationDB(path)
    try:
        s = export_feedback(database, out_path or ts.export_to(path), endpoint_url)
    finally:
        database.close()
    out.print(
        f"{s.items} items on {s.images} images: {s.areas} area verdicts ({s.corrected} with a "
        f"corrected class), {s.healthy_images} images flagged healthy, {s.drawn} drawn areas "
        f"-> {escape(str(s.path))}",
        soft_wrap=True,
    )


def status_cmd(
    tasks: TasksOpt = DEFAULT_TASKS,
    db: DbOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
    endpoint_url: EndpointOpt = None,
) -> None:
    """What is done per operator, and what is left."""
    from mentoring.annotate.db import AnnotationDB

    path = _existing_db(task_set(tasks, endpoint_url, fetch=False).path, db)
    database = AnnotationDB(path)
    try:
        s = database.status()
        info = database.info()
    finally:
        database.close()
    if as_json:
        typer.echo(json.dumps(s, indent=2, sort_keys=True))
        return
    out.print(
        f"{escape(info.source)} (sha256 {info.sha256[:12]}): "
        f"{s['images']['done']}/{s['images']['total']} images done, "
        f"{s['areas']['done']}/{s['areas']['total']} areas answered, {s['areas']['drawn']} drawn; "
        f"left: {s['images']['left']} images, {s['areas']['left']} areas",
        soft_wrap=True,
    )
    table = Table("operator", "areas", "images", "drawn", "healthy", "skipped", "areas/min")
    for o in s["operators"]:
        table.add_row(
            escape(o["operator"]),
            str(o["areas"]),
            str(o["images"]),
            str(o["drawn"]),
            str(o["healthy_images"]),
            str(o["skipped"]),
            f"{o['areas_per_minute']:g}",
        )
    if s["operators"]:
        out.print(table)
    for lease in s["leases"]:
        out.print(
            f"  {escape(lease['image_id'])} leased to {escape(lease['operator'])}", soft_wrap=True
        )
