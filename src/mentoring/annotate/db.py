"""The annotation database: one task set, its leases and the operators' append-only event log.

SQLite in WAL mode (readers never wait for the writer), ``synchronous=FULL``: a commit returns
only once the WAL is on disk, so a verdict the server acknowledged survives a ``kill -9`` of the
server and also a power cut or an OS crash of the line-side PC (``NORMAL`` would survive a killed
process but may lose the last commits on power loss; the fsync costs about a millisecond, well
inside a verdict's budget). Every action is one ``BEGIN IMMEDIATE`` transaction: actions are
serialised, and the lease check, the event and the derived state are written together or not at
all.

Tables:

- ``meta`` (the task set's sha256, classes, grid, the cookie-signing secret), ``images`` (task
  order) and ``areas``: the task set, loaded once (loading the same file again is a no-op,
  another file is an error naming both sha256s);
- ``leases(image_id PK, operator, granted_at, expires_at)``: who works on which image; an
  operator holds their current image and up to ``lease_ahead`` images after it (the ones the page
  shows next), all granted in one transaction; every action of the operator renews them, and
  they lapse after ``lease_s`` seconds without one. ``lease_log`` records every grant and release
  (the audit trail the concurrency test reads);
- ``events``: the append-only log. One row per action (``request_id`` UNIQUE: a retried request
  is answered from its first application, never applied twice), with the operator, the image,
  the area (or NULL), the kind, the value, the previous value and the time. Undo flags an event
  ``undone`` and appends an ``undo`` event naming it.

**Current state** is a fold of an image's events that are not undone, in log order (the last
verdict of an area wins; a class change confirms the area with that class; a flag, a skip or a
drawn box holds until undone). The ``images``, ``areas`` and ``drawn`` columns that hold it are a
cache of that fold, rewritten in the same transaction as each event (:meth:`AnnotationDB.refold`
rebuilds and checks it).

Example:
    >>> db = AnnotationDB("data/annotate/round-7.sqlite", lease_s=300)  # doctest: +SKIP
    >>> db.load_tasks(read_tasks("data/mining/tasks.json"), sha, "data/mining/tasks.json")
    >>> image = db.next_image("op-7").image                              # leased to op-7
    >>> db.verdict("op-7", "r-1f3a9c0d", image.image_id, image.areas[0].area_id, "defect")
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mentoring.feedback.partial import DEFAULT_MIN_COVERAGE, box_cells
from mentoring.feedback.schema import MiningTasks

SCHEMA_VERSION = 1
#: the kinds of events; ``undo`` names the event it undid in its value
KINDS = ("verdict", "class", "healthy", "skip", "done", "drawn", "drawn_delete", "undo")
VERDICTS: tuple[str, ...] = ("defect", "healthy")
#: kinds of events that answer an area (counted in areas per minute)
AREA_KINDS = ("verdict", "class")
#: columns added after the first layout (the camera original of ingested images): a database of
#: that layout gets them, empty, when it is opened
_ADDED_COLUMNS = (
    ("images", "orig_w", "INTEGER"),
    ("images", "orig_h", "INTEGER"),
    ("images", "source_uri", "TEXT NOT NULL DEFAULT ''"),
    ("areas", "orig_bbox", "TEXT"),
)
#: the window of the areas-per-minute rate
RATE_WINDOW_S = 600.0
#: images leased ahead of the current one: the page's prefetched next image is the operator's
#: (two operators never race for the same queue head), while no one holds more than 1 + this
LEASE_AHEAD = 1

_DDL = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS images (
        idx INTEGER PRIMARY KEY,
        image_id TEXT NOT NULL UNIQUE,
        path TEXT NOT NULL,
        score REAL NOT NULL,
        n_areas INTEGER NOT NULL,
        done INTEGER NOT NULL DEFAULT 0,
        answered INTEGER NOT NULL DEFAULT 0,
        healthy_by TEXT,
        healthy_at REAL,
        finished_by TEXT,
        finished_at REAL,
        orig_w INTEGER,
        orig_h INTEGER,
        source_uri TEXT NOT NULL DEFAULT ''
    )""",
    "CREATE INDEX IF NOT EXISTS images_done ON images(done, idx)",
    """CREATE TABLE IF NOT EXISTS areas (
        area_id TEXT PRIMARY KEY,
        image_id TEXT NOT NULL REFERENCES images(image_id),
        pos INTEGER NOT NULL,
        cls TEXT NOT NULL,
        score REAL NOT NULL,
        bbox TEXT NOT NULL,
        cells TEXT NOT NULL,
        verdict TEXT,
        cls_now TEXT,
        implied INTEGER NOT NULL DEFAULT 0,
        operator TEXT,
        at REAL,
        orig_bbox TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS areas_image ON areas(image_id, pos)",
    """CREATE TABLE IF NOT EXISTS drawn (
        area_id TEXT PRIMARY KEY,
        image_id TEXT NOT NULL REFERENCES images(image_id),
        cls TEXT NOT NULL,
        bbox TEXT NOT NULL,
        operator TEXT NOT NULL,
        at REAL NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS drawn_image ON drawn(image_id)",
    """CREATE TABLE IF NOT EXISTS leases (
        image_id TEXT PRIMARY KEY REFERENCES images(image_id),
        operator TEXT NOT NULL,
        granted_at REAL NOT NULL,
        expires_at REAL NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS leases_operator ON leases(operator)",
    """CREATE TABLE IF NOT EXISTS lease_log (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        image_id TEXT NOT NULL,
        operator TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('grant', 'release')),
        at REAL NOT NULL,
        expires_at REAL,
        previous TEXT
    )""",
    f"""CREATE TABLE IF NOT EXISTS events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        request_id TEXT NOT NULL UNIQUE,
        operator TEXT NOT NULL,
        image_id TEXT NOT NULL REFERENCES images(image_id),
        area_id TEXT,
        kind TEXT NOT NULL CHECK (kind IN ({", ".join(repr(k) for k in KINDS)})),
        value TEXT,
        previous TEXT,
        at REAL NOT NULL,
        undone INTEGER NOT NULL DEFAULT 0
    )""",
    "CREATE INDEX IF NOT EXISTS events_image ON events(image_id, id)",
    "CREATE INDEX IF NOT EXISTS events_operator ON events(operator, undone, id)",
    # logged-in sessions, by the sha256 of their id (the id itself is only in the cookie):
    # logout deletes the row, so a cookie saved before it no longer works
    """CREATE TABLE IF NOT EXISTS sessions (
        sid_sha256 TEXT PRIMARY KEY,
        operator TEXT NOT NULL,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL
    )""",
)


class AnnotateError(ValueError):
    """An action the database refuses; ``status`` is the HTTP status that says why."""

    status = 400


class NotFound(AnnotateError):
    """An image or area id that the task set does not hold."""

    status = 404


class Conflict(AnnotateError):
    """An action that contradicts the current state (a lease held by someone else, ...)."""

    status = 409


class TaskSetMismatch(AnnotateError):
    """The database already holds another task set."""

    status = 409


@dataclass(frozen=True)
class TaskSetInfo:
    """What the database holds: the task set's identity and shape."""

    sha256: str
    source: str  # the tasks file it was loaded from
    classes: list[str]
    grid: tuple[int, int]  # (h, w) cells
    stride: int  # pixels per cell side
    n_images: int
    n_areas: int

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the stored images, in pixels."""
        return self.grid[1] * self.stride, self.grid[0] * self.stride


@dataclass
class AreaState:
    """A detected area and its current verdict (None: not answered yet)."""

    area_id: str
    detected_class: str
    cls: str  # the current class: the detected one, or the operator's correction
    score: float
    bbox: tuple[int, int, int, int]
    cells: list[tuple[int, int]]
    verdict: str | None = None
    implied: bool = False  # rejected by the image's healthy flag, not by its own verdict
    operator: str | None = None
    at: float | None = None
    # the box in the camera original's pixels (x0, y0, x1, y1); None when stored = original
    orig_bbox: tuple[int, int, int, int] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "area_id": self.area_id,
            "class": self.cls,
            "detected_class": self.detected_class,
            "score": self.score,
            "bbox": list(self.bbox),
            "orig_bbox": None if self.orig_bbox is None else list(self.orig_bbox),
            "cells": [list(c) for c in self.cells],
            "verdict": self.verdict,
            "implied": self.implied,
            "operator": self.operator,
            "at": self.at,
        }


@dataclass
class DrawnState:
    """A box an operator drew around a missed defect: a confirmed area of its class."""

    area_id: str
    cls: str
    bbox: tuple[int, int, int, int]
    cells: list[tuple[int, int]]  # the cells it confirms at line.cell_min_coverage's default
    operator: str
    at: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "area_id": self.area_id,
            "class": self.cls,
            "bbox": list(self.bbox),
            "cells": [list(c) for c in self.cells],
            "operator": self.operator,
            "at": self.at,
        }


@dataclass
class ImageState:
    """An image of the task set, its areas and what the operators said about it."""

    image_id: str
    index: int  # position in the task set
    path: str
    score: float
    areas: list[AreaState]
    drawn: list[DrawnState] = field(default_factory=list)
    healthy: tuple[str, float] | None = None  # (operator, time) of the healthy flag
    finished: tuple[str, float] | None = None  # (operator, time): an image without areas, seen
    skipped_by: list[str] = field(default_factory=list)
    leased_to: str | None = None
    lease_expires_at: float | None = None
    orig_size: tuple[int, int] | None = None  # (width, height) of the camera original, if ingested
    source_uri: str = ""  # where the original was read (a path or s3://...), if ingested

    @property
    def done(self) -> bool:
        """Flagged healthy, every detected area answered, or (no area) marked done."""
        if self.healthy is not None or self.finished is not None:
            return True
        return bool(self.areas) and all(a.verdict is not None for a in self.areas)

    @property
    def answered(self) -> int:
        return sum(a.verdict is not None for a in self.areas)

    def as_dict(self) -> dict[str, Any]:
        return {
            "image_id": self.image_id,
            "index": self.index,
            "score": self.score,
            "done": self.done,
            "answered": self.answered,
            "healthy": self.healthy is not None,
            "healthy_by": self.healthy[0] if self.healthy else None,
            "finished": self.finished is not None,
            "skipped_by": list(self.skipped_by),
            "leased_to": self.leased_to,
            "lease_expires_at": self.lease_expires_at,
            "orig_size": None if self.orig_size is None else list(self.orig_size),
            "source_uri": self.source_uri,
            "areas": [a.as_dict() for a in self.areas],
            "drawn": [d.as_dict() for d in self.drawn],
        }


@dataclass(frozen=True)
class Event:
    """One row of the event log."""

    id: int
    request_id: str
    operator: str
    image_id: str
    area_id: str | None
    kind: str
    value: str | None
    previous: str | None
    at: float
    undone: bool

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class ActionResult:
    """What an action did: its event, whether it was a replay of a request already applied,
    and the state of the image it acted on."""

    event: Event
    replayed: bool
    image: ImageState
    undone: Event | None = None  # for an undo: the event it undid

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "event_id": self.event.id,
            "kind": self.event.kind,
            "area_id": self.event.area_id,
            "replayed": self.replayed,
            "image": self.image.as_dict(),
        }
        if self.undone is not None:
            out["undone"] = self.undone.as_dict()
        return out


@dataclass
class NextResult:
    """The image an operator works on now (leased to them), and what follows: first the images
    leased to them ahead (``ahead`` of them, in the order they come), then free ones (not
    leased)."""

    image: ImageState | None
    following: list[ImageState]
    revisit: bool = False  # only images this operator skipped were left
    ahead: int = 0  # how many of ``following`` (its first) are leased to the operator


def _event(row: sqlite3.Row) -> Event:
    return Event(
        id=row["id"],
        request_id=row["request_id"],
        operator=row["operator"],
        image_id=row["image_id"],
        area_id=row["area_id"],
        kind=row["kind"],
        value=row["value"],
        previous=row["previous"],
        at=row["at"],
        undone=bool(row["undone"]),
    )


def _box(value: str) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = json.loads(value)
    return int(x0), int(y0), int(x1), int(y1)


class AnnotationDB:
    """The annotation database at ``path`` (created if missing), one connection per thread.

    Args:
        path: the SQLite file.
        lease_s: seconds without action after which an operator's leases lapse.
        clock: seconds since the epoch (tests pass their own to move time).
        lease_ahead: images leased to an operator after their current one (0 to 2).
    """

    def __init__(
        self,
        path: str | Path,
        lease_s: float = 300.0,
        clock: Callable[[], float] = time.time,
        lease_ahead: int = LEASE_AHEAD,
    ) -> None:
        if lease_s <= 0:
            raise ValueError(f"lease_s must be > 0, got {lease_s}")
        if not 0 <= lease_ahead <= 2:
            raise ValueError(f"lease_ahead must be 0, 1 or 2, got {lease_ahead}")
        self.path = Path(path)
        self.lease_s = float(lease_s)
        self.lease_ahead = int(lease_ahead)
        self.clock = clock
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._grid_cache: tuple[tuple[int, int], int] | None = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = self._conn()
        conn.execute("PRAGMA journal_mode=WAL")
        with self._write() as c:
            for ddl in _DDL:
                c.execute(ddl)
            for table, column, decl in _ADDED_COLUMNS:
                have = {r["name"] for r in c.execute(f"PRAGMA table_info({table})")}
                if column not in have:
                    c.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
            version = self._meta(c, "schema_version")
            if version is None:
                c.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                c.execute("INSERT INTO meta VALUES ('secret', ?)", (secrets.token_hex(32),))
            elif version != str(SCHEMA_VERSION):
                raise AnnotateError(
                    f"{self.path}: annotation database of schema version {version}, this "
                    f"version reads {SCHEMA_VERSION}"
                )

    # -- connections and transactions ----------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self.path, timeout=30.0, isolation_level=None, check_same_thread=False
            )
            conn.row_factory = sqlite3.Row
            # FULL: the WAL is synced at each commit (see the module docstring)
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: ``BEGIN IMMEDIATE`` takes the write lock up front, so two
        actions never interleave their reads and writes."""
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: one consistent snapshot for several queries."""
        conn = self._conn()
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    def close(self) -> None:
        """Close every connection this object opened (in any thread)."""
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()
        self._local = threading.local()

    @staticmethod
    def _meta(conn: sqlite3.Connection, key: str) -> str | None:
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row["value"])

    # -- the task set --------------------------------------------------------------------------

    def load_tasks(self, tasks: MiningTasks, sha256: str, source: str) -> bool:
        """Load a task set; True if it was loaded now, False if the database already held it.

        Raises:
            TaskSetMismatch: the database holds another task set (both sha256s named).
            AnnotateError: an image id or area id used twice in the tasks (named).
        """
        with self._write() as conn:
            held = self._meta(conn, "tasks_sha256")
            if held == sha256:
                return False
            if held is not None:
                raise TaskSetMismatch(
                    f"{self.path} holds the task set {self._meta(conn, 'tasks_source')} "
                    f"(sha256 {held}); {source} has sha256 {sha256}. A database answers one task "
                    f"set: export this one, then serve the new tasks with another --db"
                )
            seen_images: set[str] = set()
            seen_areas: set[str] = set()
            dup: list[str] = []
            for im in tasks.images:
                if im.image_id in seen_images:
                    dup.append(f"image {im.image_id!r}")
                seen_images.add(im.image_id)
                for a in im.areas:
                    if a.area_id in seen_areas:
                        dup.append(f"area {a.area_id!r}")
                    seen_areas.add(a.area_id)
            if dup:
                raise AnnotateError(f"{source}: ids used twice: {', '.join(dup[:20])}")
            meta = {
                "tasks_sha256": sha256,
                "tasks_source": source,
                "classes": json.dumps(list(tasks.classes)),
                "grid": json.dumps(list(tasks.grid)),
                "stride": str(tasks.stride),
                "loaded_at": repr(self.clock()),
            }
            conn.executemany("INSERT INTO meta VALUES (?, ?)", list(meta.items()))
            conn.executemany(
                "INSERT INTO images (idx, image_id, path, score, n_areas, orig_w, orig_h, "
                "source_uri) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        i,
                        im.image_id,
                        im.path,
                        im.score,
                        len(im.areas),
                        *(im.orig_size or (None, None)),
                        im.source_uri,
                    )
                    for i, im in enumerate(tasks.images)
                ],
            )
            conn.executemany(
                "INSERT INTO areas (area_id, image_id, pos, cls, score, bbox, cells, cls_now, "
                "orig_bbox) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        a.area_id,
                        im.image_id,
                        k,
                        a.cls,
                        a.score,
                        json.dumps(list(a.bbox)),
                        json.dumps([list(c) for c in a.cells]),
                        a.cls,
                        None if a.orig_bbox is None else json.dumps(list(a.orig_bbox)),
                    )
                    for im in tasks.images
                    for k, a in enumerate(im.areas)
                ],
            )
            return True

    def info(self) -> TaskSetInfo:
        """The task set the database holds.

        Raises:
            AnnotateError: no task set loaded yet.
        """
        with self._read() as conn:
            sha = self._meta(conn, "tasks_sha256")
            if sha is None:
                raise AnnotateError(f"{self.path}: no task set loaded (run `annotate serve`)")
            grid = json.loads(self._meta(conn, "grid") or "[0, 0]")
            n_images = conn.execute("SELECT count(*) FROM images").fetchone()[0]
            n_areas = conn.execute("SELECT count(*) FROM areas").fetchone()[0]
            return TaskSetInfo(
                sha256=sha,
                source=self._meta(conn, "tasks_source") or "",
                classes=json.loads(self._meta(conn, "classes") or "[]"),
                grid=(int(grid[0]), int(grid[1])),
                stride=int(self._meta(conn, "stride") or 0),
                n_images=int(n_images),
                n_areas=int(n_areas),
            )

    def secret(self) -> str:
        """The random key that signs this database's session cookies (sessions survive a
        restart of the server)."""
        with self._read() as conn:
            value = self._meta(conn, "secret")
        assert value is not None
        return value

    # -- sessions ------------------------------------------------------------------------------

    @staticmethod
    def _sid_hash(sid: str) -> str:
        return hashlib.sha256(sid.encode()).hexdigest()

    def open_session(self, operator: str, lifetime_s: float) -> str:
        """Start a login session of ``operator`` that ends after ``lifetime_s`` seconds; its new
        random id (for the cookie). Sessions that ended are purged here."""
        if lifetime_s <= 0:
            raise ValueError(f"lifetime_s must be > 0, got {lifetime_s}")
        sid = secrets.token_urlsafe(32)
        now = self.clock()
        with self._write() as conn:
            conn.execute("DELETE FROM sessions WHERE expires_at <= ?", (now,))
            conn.execute(
                "INSERT INTO sessions VALUES (?, ?, ?, ?)",
                (self._sid_hash(sid), operator, now, now + lifetime_s),
            )
        return sid

    def session_operator(self, sid: str) -> str | None:
        """The operator of a live session (not logged out, not expired), else None."""
        row = (
            self._conn()
            .execute(
                "SELECT operator FROM sessions WHERE sid_sha256 = ? AND expires_at > ?",
                (self._sid_hash(sid), self.clock()),
            )
            .fetchone()
        )
        return None if row is None else str(row["operator"])

    def end_session(self, sid: str) -> bool:
        """Revoke a session (logout); whether it was live."""
        with self._write() as conn:
            cur = conn.execute("DELETE FROM sessions WHERE sid_sha256 = ?", (self._sid_hash(sid),))
            return cur.rowcount > 0

    def image_path(self, image_id: str) -> str:
        """The task's path of an image (relative to the data root, or an s3:// URI).

        Raises:
            NotFound: no such image in the task set.
        """
        row = (
            self._conn()
            .execute("SELECT path FROM images WHERE image_id = ?", (image_id,))
            .fetchone()
        )
        if row is None:
            raise NotFound(f"unknown image {image_id!r}")
        return str(row["path"])

    def image_paths(self) -> list[tuple[str, str]]:
        """Every image of the task set as (image id, task path), in task order."""
        rows = self._conn().execute("SELECT image_id, path FROM images ORDER BY idx").fetchall()
        return [(str(r["image_id"]), str(r["path"])) for r in rows]

    # -- state ---------------------------------------------------------------------------------

    def _fold(self, conn: sqlite3.Connection, image_id: str) -> ImageState:
        """The current state of an image from its events (not undone, in log order)."""
        row = conn.execute("SELECT * FROM images WHERE image_id = ?", (image_id,)).fetchone()
        if row is None:
            raise NotFound(f"unknown image {image_id!r}")
        areas = [
            AreaState(
                area_id=a["area_id"],
                detected_class=a["cls"],
                cls=a["cls"],
                score=a["score"],
                bbox=_box(a["bbox"]),
                cells=[(int(r), int(c)) for r, c in json.loads(a["cells"])],
                orig_bbox=None if a["orig_bbox"] is None else _box(a["orig_bbox"]),
            )
            for a in conn.execute(
                "SELECT * FROM areas WHERE image_id = ? ORDER BY pos", (image_id,)
            )
        ]
        state = ImageState(
            image_id=image_id,
            index=row["idx"],
            path=row["path"],
            score=row["score"],
            areas=areas,
            orig_size=(
                None
                if row["orig_w"] is None or row["orig_h"] is None
                else (int(row["orig_w"]), int(row["orig_h"]))
            ),
            source_uri=row["source_uri"] or "",
        )
        by_id = {a.area_id: a for a in areas}
        drawn: dict[str, DrawnState] = {}
        skipped: dict[str, None] = {}
        events = conn.execute(
            "SELECT * FROM events WHERE image_id = ? AND undone = 0 AND kind != 'undo' ORDER BY id",
            (image_id,),
        )
        grid, stride = self._grid(conn)
        for e in events:
            kind, op, at = e["kind"], e["operator"], e["at"]
            if kind == "verdict":
                area = by_id[e["area_id"]]
                area.verdict, area.operator, area.at = e["value"], op, at
            elif kind == "class":
                area = by_id[e["area_id"]]
                area.verdict, area.cls, area.operator, area.at = "defect", e["value"], op, at
            elif kind == "healthy":
                state.healthy = (op, at)
            elif kind == "done":
                state.finished = (op, at)
            elif kind == "skip":
                skipped[op] = None
            elif kind == "drawn":
                value = json.loads(e["value"])
                bbox = (
                    int(value["bbox"][0]),
                    int(value["bbox"][1]),
                    int(value["bbox"][2]),
                    int(value["bbox"][3]),
                )
                cover = box_cells(bbox, grid, stride, DEFAULT_MIN_COVERAGE)
                cells = [(int(r), int(c)) for r, c in zip(*cover.nonzero(), strict=True)]
                drawn[e["area_id"]] = DrawnState(e["area_id"], value["class"], bbox, cells, op, at)
            elif kind == "drawn_delete":
                drawn.pop(e["area_id"], None)
        if state.healthy is not None:
            # the flag says every detected area is healthy: the unanswered ones are rejected
            for area in areas:
                if area.verdict is None:
                    area.verdict, area.implied = "healthy", True
                    area.operator, area.at = state.healthy
        state.drawn = list(drawn.values())
        state.skipped_by = list(skipped)
        lease = conn.execute(
            "SELECT operator, expires_at FROM leases WHERE image_id = ?", (image_id,)
        ).fetchone()
        if lease is not None and lease["expires_at"] > self.clock():
            state.leased_to, state.lease_expires_at = lease["operator"], lease["expires_at"]
        return state

    def _grid(self, conn: sqlite3.Connection) -> tuple[tuple[int, int], int]:
        if self._grid_cache is None:
            grid = json.loads(self._meta(conn, "grid") or "[0, 0]")
            stride = int(self._meta(conn, "stride") or 0)
            if not stride:
                raise AnnotateError(f"{self.path}: no task set loaded (run `annotate serve`)")
            self._grid_cache = ((int(grid[0]), int(grid[1])), stride)
        return self._grid_cache

    def _store(self, conn: sqlite3.Connection, state: ImageState) -> None:
        """Write an image's folded state into the cache columns (same transaction)."""
        healthy, finished = state.healthy or (None, None), state.finished or (None, None)
        conn.execute(
            "UPDATE images SET done = ?, answered = ?, healthy_by = ?, healthy_at = ?, "
            "finished_by = ?, finished_at = ? WHERE image_id = ?",
            (int(state.done), state.answered, *healthy, *finished, state.image_id),
        )
        conn.executemany(
            "UPDATE areas SET verdict = ?, cls_now = ?, implied = ?, operator = ?, at = ? "
            "WHERE area_id = ?",
            [(a.verdict, a.cls, int(a.implied), a.operator, a.at, a.area_id) for a in state.areas],
        )
        conn.execute("DELETE FROM drawn WHERE image_id = ?", (state.image_id,))
        conn.executemany(
            "INSERT INTO drawn VALUES (?, ?, ?, ?, ?, ?)",
            [
                (d.area_id, state.image_id, d.cls, json.dumps(list(d.bbox)), d.operator, d.at)
                for d in state.drawn
            ],
        )

    def image_state(self, image_id: str) -> ImageState:
        """The current state of one image.

        Raises:
            NotFound: no such image.
        """
        with self._read() as conn:
            return self._fold(conn, image_id)

    def states(self) -> list[ImageState]:
        """The current state of every image, in task order, folded from the event log."""
        with self._read() as conn:
            ids = [r[0] for r in conn.execute("SELECT image_id FROM images ORDER BY idx")]
            return [self._fold(conn, i) for i in ids]

    def refold(self) -> list[str]:
        """Rebuild the cached state from the event log; the ids whose cache disagreed (empty
        when the cache was right, which every transaction keeps it)."""
        wrong: list[str] = []
        with self._write() as conn:
            ids = [r[0] for r in conn.execute("SELECT image_id FROM images ORDER BY idx")]
            for image_id in ids:
                before = self._cached(conn, image_id)
                state = self._fold(conn, image_id)
                self._store(conn, state)
                if self._cached(conn, image_id) != before:
                    wrong.append(image_id)
        return wrong

    @staticmethod
    def _cached(conn: sqlite3.Connection, image_id: str) -> tuple[Any, ...]:
        im = conn.execute(
            "SELECT done, answered, healthy_by, healthy_at, finished_by, finished_at "
            "FROM images WHERE image_id = ?",
            (image_id,),
        ).fetchone()
        areas = conn.execute(
            "SELECT area_id, verdict, cls_now, implied, operator, at FROM areas "
            "WHERE image_id = ? ORDER BY pos",
            (image_id,),
        ).fetchall()
        drawn = conn.execute(
            "SELECT area_id, cls, bbox, operator, at FROM drawn WHERE image_id = ? "
            "ORDER BY area_id",
            (image_id,),
        ).fetchall()
        return tuple(im), tuple(map(tuple, areas)), tuple(map(tuple, drawn))

    def events(self, operator: str | None = None) -> list[Event]:
        """The event log in order (one operator's, or everyone's)."""
        conn = self._conn()
        if operator is None:
            rows = conn.execute("SELECT * FROM events ORDER BY id")
        else:
            rows = conn.execute("SELECT * FROM events WHERE operator = ? ORDER BY id", (operator,))
        return [_event(r) for r in rows]

    def lease_log(self) -> list[dict[str, Any]]:
        """Every lease grant and release, in order."""
        rows = self._conn().execute("SELECT * FROM lease_log ORDER BY id")
        return [dict(r) for r in rows]

    # -- leases --------------------------------------------------------------------------------

    def _grant(self, conn: sqlite3.Connection, operator: str, image_id: str, now: float) -> None:
        """Lease ``image_id`` to ``operator`` (or renew their lease).

        Raises:
            Conflict: another operator holds a lease on it that has not lapsed.
        """
        row = conn.execute(
            "SELECT operator, expires_at FROM leases WHERE image_id = ?", (image_id,)
        ).fetchone()
        expires = now + self.lease_s
        if row is not None and row["expires_at"] > now:
            if row["operator"] != operator:
                raise Conflict(
                    f"image {image_id!r} is leased to {row['operator']!r} for "
                    f"{row['expires_at'] - now:.0f} s more"
                )
            conn.execute("UPDATE leases SET expires_at = ? WHERE image_id = ?", (expires, image_id))
            return
        previous = row["operator"] if row is not None else None
        conn.execute(
            "INSERT OR REPLACE INTO leases VALUES (?, ?, ?, ?)", (image_id, operator, now, expires)
        )
        conn.execute(
            "INSERT INTO lease_log (image_id, operator, kind, at, expires_at, previous) "
            "VALUES (?, ?, 'grant', ?, ?, ?)",
            (image_id, operator, now, expires, previous),
        )

    def _hold(self, conn: sqlite3.Connection, operator: str, image_id: str, now: float) -> None:
        """Check that ``operator`` holds the lease on ``image_id``, and renew it.

        Raises:
            NotFound: no such image.
            Conflict: no lease, a lapsed one, or someone else's.
        """
        if conn.execute("SELECT 1 FROM images WHERE image_id = ?", (image_id,)).fetchone() is None:
            raise NotFound(f"unknown image {image_id!r}")
        row = conn.execute(
            "SELECT operator, expires_at FROM leases WHERE image_id = ?", (image_id,)
        ).fetchone()
        if row is None or row["operator"] != operator or row["expires_at"] <= now:
            if row is not None and row["operator"] != operator and row["expires_at"] > now:
                why = f"it is leased to {row['operator']!r}"
            elif row is not None and row["operator"] == operator:
                why = (
                    f"your lease lapsed after {self.lease_s / 60:g} min without action; ask for "
                    f"the next image to take it again"
                )
            else:
                why = "it is not leased to you; ask for the next image"
            raise Conflict(f"image {image_id!r}: {why}")
        # the lapse is about the operator's inactivity: the images leased ahead renew too
        conn.execute(
            "UPDATE leases SET expires_at = ? WHERE operator = ? AND expires_at > ?",
            (now + self.lease_s, operator, now),
        )

    def _held(self, conn: sqlite3.Connection, operator: str, now: float) -> list[str]:
        """The images ``operator`` holds a live lease on and that are not done, in task order."""
        return [
            r[0]
            for r in conn.execute(
                "SELECT i.image_id FROM leases l JOIN images i ON i.image_id = l.image_id "
                "WHERE l.operator = ? AND l.expires_at > ? AND i.done = 0 ORDER BY i.idx",
                (operator, now),
            )
        ]

    def _cap(self, conn: sqlite3.Connection, operator: str, now: float, keep: str) -> None:
        """Release ``operator``'s leases beyond current + ``lease_ahead``, the last in task order
        first, never ``keep`` (an undo takes an image back on top of what its operator holds)."""
        held = self._held(conn, operator, now)
        extra = len(held) - 1 - self.lease_ahead
        for image_id in [i for i in reversed(held) if i != keep][: max(extra, 0)]:
            self._release(conn, operator, image_id, now)

    def _release(self, conn: sqlite3.Connection, operator: str, image_id: str, now: float) -> None:
        deleted = conn.execute(
            "DELETE FROM leases WHERE image_id = ? AND operator = ?", (image_id, operator)
        ).rowcount
        if deleted:
            conn.execute(
                "INSERT INTO lease_log (image_id, operator, kind, at) VALUES (?, ?, 'release', ?)",
                (image_id, operator, now),
            )

    def release_all(self, operator: str) -> int:
        """Release every lease ``operator`` holds (at logout); how many."""
        with self._write() as conn:
            now = self.clock()
            held = [
                r[0]
                for r in conn.execute("SELECT image_id FROM leases WHERE operator = ?", (operator,))
            ]
            for image_id in held:
                self._release(conn, operator, image_id, now)
            return len(held)

    def _candidates(
        self,
        conn: sqlite3.Connection,
        operator: str,
        now: float,
        limit: int,
        skip_skipped: bool,
        exclude: Iterable[str] = (),
        after: int = -1,
        free_only: bool = False,
    ) -> list[str]:
        """Images not done, not leased to someone else (nor to ``operator`` when ``free_only``),
        after task index ``after``, in task order, without ``exclude`` (and without the ones
        ``operator`` skipped when ``skip_skipped``)."""
        params: dict[str, Any] = {"now": now, "op": operator, "after": after, "limit": limit}
        mine = "" if free_only else " OR l.operator = :op"
        sql = (
            "SELECT i.image_id FROM images i LEFT JOIN leases l ON l.image_id = i.image_id "
            "WHERE i.done = 0 AND i.idx > :after "
            f"AND (l.image_id IS NULL OR l.expires_at <= :now{mine})"
        )
        names = []
        for k, image_id in enumerate(exclude):
            params[f"x{k}"] = image_id
            names.append(f":x{k}")
        if names:
            sql += f" AND i.image_id NOT IN ({', '.join(names)})"
        if skip_skipped:
            sql += (
                " AND i.image_id NOT IN (SELECT image_id FROM events WHERE operator = :op "
                "AND kind = 'skip' AND undone = 0)"
            )
        sql += " ORDER BY i.idx LIMIT :limit"
        return [r[0] for r in conn.execute(sql, params)]

    def next_image(self, operator: str, prefetch: int = 3) -> NextResult:
        """The image ``operator`` should work on now, leased to them, the next ``lease_ahead``
        images leased to them too, and free images after those, ``prefetch`` in all.

        1. The current image is the first in task order that they hold and have not finished
           (an image leased ahead becomes current once the one before it is done or skipped);
           else the first that is not done, not leased to someone else (or whose lease lapsed)
           and not skipped by them; else (``revisit``) one they skipped, when nothing else is
           left.
        2. Leases beyond current + ``lease_ahead`` are released (after an undo), the last first.
        3. The images they hold after the current one stay theirs; free images after the current
           one in task order are leased to them until they hold ``lease_ahead`` ahead. Only
           images after the current one: the current one stays the first they hold.
        4. ``following`` is those images, then free ones (shown as what may come, not leased).

        All in one transaction: the page's prefetched next image is the operator's, and no other
        operator is handed it (an image is leased to one operator at a time).
        """
        with self._write() as conn:
            now = self.clock()
            held = self._held(conn, operator, now)
            revisit = False
            skipped = {
                r[0]
                for r in conn.execute(
                    "SELECT image_id FROM events WHERE operator = ? AND kind = 'skip' "
                    "AND undone = 0",
                    (operator,),
                )
            }
            if held:
                image_id: str | None = held[0]
                revisit = image_id in skipped
            else:
                found = self._candidates(conn, operator, now, 1, skip_skipped=True)
                if not found:
                    found = self._candidates(conn, operator, now, 1, skip_skipped=False)
                    revisit = bool(found)
                image_id = found[0] if found else None
            if image_id is None:
                return NextResult(None, [])
            self._grant(conn, operator, image_id, now)
            self._cap(conn, operator, now, keep=image_id)
            index = conn.execute(
                "SELECT idx FROM images WHERE image_id = ?", (image_id,)
            ).fetchone()[0]
            ahead = [i for i in self._held(conn, operator, now) if i != image_id]
            ahead += self._candidates(
                conn,
                operator,
                now,
                self.lease_ahead - len(ahead),
                skip_skipped=not revisit,
                exclude=[image_id, *ahead],
                after=index,
                free_only=True,
            )
            for other in ahead:
                self._grant(conn, operator, other, now)
            free = self._candidates(
                conn,
                operator,
                now,
                max(prefetch - len(ahead), 0),
                skip_skipped=not revisit,
                exclude=[image_id, *ahead],
            )
            return NextResult(
                self._fold(conn, image_id),
                [self._fold(conn, i) for i in [*ahead, *free]],
                revisit,
                len(ahead),
            )

    def peek(self, operator: str, n: int = 4) -> list[str]:
        """The ids :meth:`next_image` would show ``operator`` now and next, leasing nothing."""
        with self._read() as conn:
            now = self.clock()
            held = self._held(conn, operator, now)
            rest = self._candidates(conn, operator, now, n, skip_skipped=True, exclude=held)
            return (held + rest)[:n]

    # -- actions -------------------------------------------------------------------------------

    def _replayed(
        self,
        conn: sqlite3.Connection,
        operator: str,
        request_id: str,
        kind: str,
        image_id: str | None,
        area_id: str | None = None,
    ) -> ActionResult | None:
        """The result of ``request_id`` if it was already applied (a retried request).

        Raises:
            Conflict: the id was used for another action, or by another operator.
        """
        row = conn.execute("SELECT * FROM events WHERE request_id = ?", (request_id,)).fetchone()
        if row is None:
            return None
        ev = _event(row)
        same = ev.operator == operator and ev.kind == kind
        if same and kind != "undo":
            same = ev.image_id == image_id and (area_id is None or ev.area_id == area_id)
        if not same:
            raise Conflict(
                f"request id {request_id!r} was already used by {ev.operator!r} for a {ev.kind} "
                f"on image {ev.image_id!r}; send a new id for a new action"
            )
        undone = None
        if kind == "undo" and ev.value is not None:
            undone = _event(
                conn.execute("SELECT * FROM events WHERE id = ?", (int(ev.value),)).fetchone()
            )
        return ActionResult(ev, True, self._fold(conn, ev.image_id), undone)

    def _append(
        self,
        conn: sqlite3.Connection,
        *,
        request_id: str,
        operator: str,
        image_id: str,
        kind: str,
        now: float,
        area_id: str | None = None,
        value: str | None = None,
        previous: Any = None,
    ) -> ActionResult:
        """Append an event, refold its image into the cache, return the result."""
        cur = conn.execute(
            "INSERT INTO events (request_id, operator, image_id, area_id, kind, value, previous, "
            "at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                request_id,
                operator,
                image_id,
                area_id,
                kind,
                value,
                None if previous is None else json.dumps(previous, sort_keys=True),
                now,
            ),
        )
        row = conn.execute("SELECT * FROM events WHERE id = ?", (cur.lastrowid,)).fetchone()
        state = self._fold(conn, image_id)
        self._store(conn, state)
        return ActionResult(_event(row), False, state)

    def _area(self, state: ImageState, area_id: str) -> AreaState:
        for a in state.areas:
            if a.area_id == area_id:
                return a
        raise NotFound(f"unknown area {area_id!r} of image {state.image_id!r}")

    def _classes(self, conn: sqlite3.Connection) -> list[str]:
        return list(json.loads(self._meta(conn, "classes") or "[]"))

    def _not_flagged(self, state: ImageState, what: str) -> None:
        if state.healthy is not None:
            raise Conflict(
                f"image {state.image_id!r} is flagged healthy by {state.healthy[0]!r}: undo the "
                f"flag before {what}"
            )

    def verdict(
        self, operator: str, request_id: str, image_id: str, area_id: str, verdict: str
    ) -> ActionResult:
        """Confirm (``defect``) or reject (``healthy``) a detected area."""
        if verdict not in VERDICTS:
            raise AnnotateError(f"verdict {verdict!r}: expected one of {', '.join(VERDICTS)}")
        with self._write() as conn:
            done = self._replayed(conn, operator, request_id, "verdict", image_id, area_id)
            if done is not None:
                return done
            now = self.clock()
            self._hold(conn, operator, image_id, now)
            state = self._fold(conn, image_id)
            area = self._area(state, area_id)
            if verdict == "defect":
                self._not_flagged(state, f"confirming area {area_id!r}")
            previous = {"verdict": None if area.implied else area.verdict, "class": area.cls}
            return self._append(
                conn,
                request_id=request_id,
                operator=operator,
                image_id=image_id,
                area_id=area_id,
                kind="verdict",
                value=verdict,
                previous=previous,
                now=now,
            )

    def change_class(
        self, operator: str, request_id: str, image_id: str, area_id: str, cls: str
    ) -> ActionResult:
        """Confirm a detected area as a defect of class ``cls`` (a correction when it is not the
        detected class)."""
        with self._write() as conn:
            done = self._replayed(conn, operator, request_id, "class", image_id, area_id)
            if done is not None:
                return done
            classes = self._classes(conn)
            if cls not in classes:
                raise AnnotateError(
                    f"area {area_id!r}: unknown class {cls!r} (classes: {', '.join(classes)})"
                )
            now = self.clock()
            self._hold(conn, operator, image_id, now)
            state = self._fold(conn, image_id)
            area = self._area(state, area_id)
            self._not_flagged(state, f"confirming area {area_id!r}")
            previous = {"verdict": None if area.implied else area.verdict, "class": area.cls}
            return self._append(
                conn,
                request_id=request_id,
                operator=operator,
                image_id=image_id,
                area_id=area_id,
                kind="class",
                value=cls,
                previous=previous,
                now=now,
            )

    def flag_healthy(self, operator: str, request_id: str, image_id: str) -> ActionResult:
        """Flag the whole image healthy: its unanswered areas count as rejected.

        Raises:
            Conflict: already flagged, or it has confirmed or drawn areas (named).
        """
        with self._write() as conn:
            done = self._replayed(conn, operator, request_id, "healthy", image_id)
            if done is not None:
                return done
            now = self.clock()
            self._hold(conn, operator, image_id, now)
            state = self._fold(conn, image_id)
            if state.healthy is not None:
                raise Conflict(f"image {image_id!r} is already flagged healthy")
            defects = [a.area_id for a in state.areas if a.verdict == "defect"]
            defects += [d.area_id for d in state.drawn]
            if defects:
                raise Conflict(
                    f"image {image_id!r} has confirmed or drawn areas {defects}: reject or undo "
                    f"them before flagging it healthy"
                )
            return self._append(
                conn,
                request_id=request_id,
                operator=operator,
                image_id=image_id,
                kind="healthy",
                value="true",
                previous={"healthy": False},
                now=now,
            )

    def skip(self, operator: str, request_id: str, image_id: str) -> ActionResult:
        """Skip an image: its lease is released and it is not offered to this operator again
        (unless nothing else is left, or they undo the skip)."""
        with self._write() as conn:
            done = self._replayed(conn, operator, request_id, "skip", image_id)
            if done is not None:
                return done
            now = self.clock()
            self._hold(conn, operator, image_id, now)
            result = self._append(
                conn,
                request_id=request_id,
                operator=operator,
                image_id=image_id,
                kind="skip",
                now=now,
            )
            self._release(conn, operator, image_id, now)
            result.image.leased_to = result.image.lease_expires_at = None
            return result

    def finish(self, operator: str, request_id: str, image_id: str) -> ActionResult:
        """Mark an image without detected areas as seen (done), e.g. after drawing on it.

        Raises:
            Conflict: the image has detected areas (they make it done once answered).
        """
        with self._write() as conn:
            done = self._replayed(conn, operator, request_id, "done", image_id)
            if done is not None:
                return done
            now = self.clock()
            self._hold(conn, operator, image_id, now)
            state = self._fold(conn, image_id)
            if state.areas:
                raise Conflict(
                    f"image {image_id!r} has {len(state.areas)} detected areas: answer them or "
                    f"flag the image healthy"
                )
            if state.finished is not None:
                raise Conflict(f"image {image_id!r} is already done")
            return self._append(
                conn,
                request_id=request_id,
                operator=operator,
                image_id=image_id,
                kind="done",
                now=now,
            )

    def draw(
        self,
        operator: str,
        request_id: str,
        image_id: str,
        cls: str,
        bbox: tuple[int, int, int, int],
    ) -> ActionResult:
        """Add a box drawn around a missed defect: a confirmed area of class ``cls`` on the
        cells the box covers. ``bbox`` is (x0, y0, x1, y1) in stored pixels, exclusive end.

        Raises:
            AnnotateError: unknown class, an empty box or one that leaves the image.
        """
        with self._write() as conn:
            done = self._replayed(conn, operator, request_id, "drawn", image_id)
            if done is not None:
                return done
            classes = self._classes(conn)
            (gh, gw), stride = self._grid(conn)
            width, height = gw * stride, gh * stride
            x0, y0, x1, y1 = bbox
            where = f"image {image_id!r}: drawn box {list(bbox)}"
            if cls not in classes:
                raise AnnotateError(f"{where}: unknown class {cls!r} ({', '.join(classes)})")
            if x0 >= x1 or y0 >= y1:
                raise AnnotateError(f"{where} is empty (x0 < x1 and y0 < y1 are needed)")
            if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
                raise AnnotateError(f"{where} leaves the image ({width} x {height} pixels)")
            now = self.clock()
            self._hold(conn, operator, image_id, now)
            state = self._fold(conn, image_id)
            self._not_flagged(state, "drawing a defect")
            # an id unique among the image's areas, mined and drawn, never reused after undo
            n = conn.execute(
                "SELECT count(*) FROM events WHERE image_id = ? AND kind = 'drawn'", (image_id,)
            ).fetchone()[0]
            taken = {a.area_id for a in state.areas}
            area_id = f"{image_id}/drawn/{n}"
            while area_id in taken:
                n += 1
                area_id = f"{image_id}/drawn/{n}"
            return self._append(
                conn,
                request_id=request_id,
                operator=operator,
                image_id=image_id,
                area_id=area_id,
                kind="drawn",
                value=json.dumps({"bbox": list(bbox), "class": cls}, sort_keys=True),
                now=now,
            )

    def erase(self, operator: str, request_id: str, image_id: str, area_id: str) -> ActionResult:
        """Remove a drawn box.

        Raises:
            NotFound: no such drawn area on the image.
        """
        with self._write() as conn:
            done = self._replayed(conn, operator, request_id, "drawn_delete", image_id, area_id)
            if done is not None:
                return done
            now = self.clock()
            self._hold(conn, operator, image_id, now)
            state = self._fold(conn, image_id)
            drawn = {d.area_id: d for d in state.drawn}
            if area_id not in drawn:
                raise NotFound(f"no drawn area {area_id!r} on image {image_id!r}")
            d = drawn[area_id]
            return self._append(
                conn,
                request_id=request_id,
                operator=operator,
                image_id=image_id,
                area_id=area_id,
                kind="drawn_delete",
                previous={"bbox": list(d.bbox), "class": d.cls},
                now=now,
            )

    def undo(self, operator: str, request_id: str) -> ActionResult:
        """Undo the operator's latest action that is not undone yet, on whichever image; the
        image is leased to them again.

        Raises:
            Conflict: nothing to undo, or the image is leased to another operator now.
        """
        with self._write() as conn:
            done = self._replayed(conn, operator, request_id, "undo", None)
            if done is not None:
                return done
            row = conn.execute(
                "SELECT * FROM events WHERE operator = ? AND undone = 0 AND kind != 'undo' "
                "ORDER BY id DESC LIMIT 1",
                (operator,),
            ).fetchone()
            if row is None:
                raise Conflict(f"nothing to undo for {operator!r}")
            target = _event(row)
            now = self.clock()
            self._grant(conn, operator, target.image_id, now)
            conn.execute("UPDATE events SET undone = 1 WHERE id = ?", (target.id,))
            result = self._append(
                conn,
                request_id=request_id,
                operator=operator,
                image_id=target.image_id,
                area_id=target.area_id,
                kind="undo",
                value=str(target.id),
                previous={"kind": target.kind, "value": target.value},
                now=now,
            )
            result.undone = _event(
                conn.execute("SELECT * FROM events WHERE id = ?", (target.id,)).fetchone()
            )
            # the image taken back counts: at most current + lease_ahead stay held
            self._cap(conn, operator, now, keep=target.image_id)
            return result

    # -- progress ------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Progress: totals, what is left, and per operator what they did (current, not undone)
        and their areas per minute over the last ten minutes."""
        with self._read() as conn:
            now = self.clock()
            n_images, n_done = conn.execute("SELECT count(*), sum(done) FROM images").fetchone()
            n_areas, n_answered = conn.execute(
                "SELECT count(*), count(verdict) FROM areas"
            ).fetchone()
            n_drawn = conn.execute("SELECT count(*) FROM drawn").fetchone()[0]
            leases = [
                {k: r[k] for k in ("image_id", "operator", "expires_at")}
                for r in conn.execute(
                    "SELECT l.* FROM leases l JOIN images i ON i.image_id = l.image_id "
                    "WHERE l.expires_at > ? AND i.done = 0 ORDER BY i.idx",
                    (now,),
                )
            ]
            ops: dict[str, dict[str, Any]] = {}

            def op(name: str) -> dict[str, Any]:
                return ops.setdefault(
                    name,
                    {
                        "operator": name,
                        "areas": 0,
                        "images": 0,
                        "drawn": 0,
                        "healthy_images": 0,
                        "skipped": 0,
                        "actions": 0,
                        "areas_per_minute": 0.0,
                        "last_at": None,
                    },
                )

            for r in conn.execute(
                "SELECT operator, count(*) FROM areas WHERE verdict IS NOT NULL AND implied = 0 "
                "GROUP BY operator"
            ):
                op(r[0])["areas"] = r[1]
            for r in conn.execute("SELECT operator, count(*) FROM drawn GROUP BY operator"):
                op(r[0])["drawn"] = r[1]
            for r in conn.execute(
                "SELECT healthy_by, count(*) FROM images WHERE healthy_by IS NOT NULL "
                "GROUP BY healthy_by"
            ):
                op(r[0])["healthy_images"] = r[1]
            for r in conn.execute(
                "SELECT operator, count(DISTINCT image_id) FROM ("
                "SELECT operator, image_id FROM areas WHERE operator IS NOT NULL "
                "UNION SELECT operator, image_id FROM drawn "
                "UNION SELECT finished_by, image_id FROM images WHERE finished_by IS NOT NULL"
                ") GROUP BY operator"
            ):
                op(r[0])["images"] = r[1]
            for r in conn.execute(
                "SELECT operator, count(*), max(at) FROM events WHERE undone = 0 "
                "AND kind != 'undo' GROUP BY operator"
            ):
                op(r[0])["actions"], op(r[0])["last_at"] = r[1], r[2]
            for r in conn.execute(
                "SELECT operator, count(DISTINCT image_id) FROM events WHERE kind = 'skip' "
                "AND undone = 0 GROUP BY operator"
            ):
                op(r[0])["skipped"] = r[1]
            since = now - RATE_WINDOW_S
            kinds = ", ".join(f"'{k}'" for k in AREA_KINDS)
            for r in conn.execute(
                f"SELECT operator, count(*), min(at) FROM events WHERE undone = 0 AND at > ? "
                f"AND kind IN ({kinds}) GROUP BY operator",
                (since,),
            ):
                # over the window, or since their first area in it (a fresh start is not
                # diluted by minutes they were not working); at least ten seconds
                span = max(now - r[2], 10.0)
                op(r[0])["areas_per_minute"] = round(60.0 * r[1] / span, 1)
            return {
                "tasks_sha256": self._meta(conn, "tasks_sha256"),
                "images": {
                    "total": n_images,
                    "done": int(n_done or 0),
                    "left": n_images - int(n_done or 0),
                },
                "areas": {
                    "total": n_areas,
                    "done": n_answered,
                    "left": n_areas - n_answered,
                    "drawn": n_drawn,
                },
                "leases": leases,
                "operators": sorted(ops.values(), key=lambda o: str(o["operator"])),
            }
