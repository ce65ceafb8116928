"""A mining round published on a store: what the operators answer, and where their answers land.

The mining pipeline publishes each task set under ``<prefix>/<tasks sha256[:12]>/`` (an
``s3://`` prefix, or a folder), the *round*:

- ``tasks.json``: the mining tasks; written last, so a round that has it is complete;
- ``images/<path>``: every mined image at the path its task gives, the annotation server's data
  root (the operators' station needs no access to the plant's line);
- ``labelstudio/``: the Label Studio tasks (``tasks/tasks.json``), ``config.xml``, ``mapping.json``;
- ``feedback/*.json``: the operators' feedback files, where ``mentoring annotate export`` and
  ``mentoring mentor import-labelstudio`` write.

Retraining takes the round (``mining_round``), imports its feedback against its own tasks, and
never mines again for it: a verdict can only land on the area it was given for (area ids are
derived from the area's content, :func:`mentoring.mining.content_area_id`).

Example:
    >>> r = publish_round(Path("tasks.json"), Path("data"), "s3://plant/mining")  # doctest: +SKIP
    >>> r.uri                                                    # doctest: +SKIP
    's3://plant/mining/3f2a9c0d1b7e'
    >>> MiningRound.at("s3://plant/mining/3f2a9c0d1b7e/tasks.json").feedback_uri  # doctest: +SKIP
    's3://plant/mining/3f2a9c0d1b7e/feedback'
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from mentoring.feedback.schema import FeedbackError, read_tasks
from mentoring.io import sha256_file, write_bytes
from mentoring.storage import LocalStore, S3Store, StorageError, is_s3, open_store, sha256_bytes

TASKS = "tasks.json"
IMAGES = "images"
LABELSTUDIO = "labelstudio"
FEEDBACK = "feedback"
#: a round's name: the first 12 hex digits of its tasks file's sha256
ROUND_NAME = re.compile(r"[0-9a-f]{12}")
#: parallel uploads of the mined images
UPLOAD_WORKERS = 8


class RoundError(FeedbackError):
    """A round that is not where it is said to be, is incomplete, or does not match its name."""


def _join(location: str, *parts: str) -> str:
    if is_s3(location):
        return "/".join([location.rstrip("/"), *parts])
    return str(Path(location, *parts))


@dataclass(frozen=True)
class MiningRound:
    """One published task set and its feedback, at ``uri`` (``.../<sha256[:12]>``)."""

    uri: str
    endpoint_url: str | None = None

    @classmethod
    def at(cls, location: str | Path, endpoint_url: str | None = None) -> MiningRound:
        """The round at ``location``: its folder or prefix, or its ``tasks.json``.

        Raises:
            RoundError: the last component is not a round name (12 hex digits).
        """
        loc = str(location).rstrip("/")
        if PurePosixPath(loc).name == TASKS:
            loc = loc[: -len(TASKS)].rstrip("/")
        name = PurePosixPath(loc).name
        if not ROUND_NAME.fullmatch(name):
            raise RoundError(
                f"{location}: not a mining round (expected <prefix>/<tasks sha256[:12]>, "
                f"or its {TASKS}, as the mining task publishes it)"
            )
        return cls(loc, endpoint_url)

    @classmethod
    def of_tasks(
        cls, tasks_path: Path, prefix: str, endpoint_url: str | None = None
    ) -> MiningRound:
        """The round ``tasks_path`` is (or would be) published as under ``prefix``."""
        return cls(_join(prefix, sha256_file(tasks_path)[:12]), endpoint_url)

    @property
    def name(self) -> str:
        return PurePosixPath(self.uri).name

    @property
    def tasks_uri(self) -> str:
        return _join(self.uri, TASKS)

    @property
    def images_uri(self) -> str:
        return _join(self.uri, IMAGES)

    @property
    def labelstudio_uri(self) -> str:
        return _join(self.uri, LABELSTUDIO)

    @property
    def feedback_uri(self) -> str:
        return _join(self.uri, FEEDBACK)

    def store(self) -> LocalStore | S3Store:
        return open_store(self.uri, endpoint_url=self.endpoint_url)

    def read_tasks_bytes(self) -> bytes:
        """The round's ``tasks.json``, checked against the round's name.

        Raises:
            RoundError: absent (an incomplete or mistyped round) or another task set's.
        """
        try:
            data = self.store().read_bytes(TASKS)
        except StorageError as exc:
            raise RoundError(
                f"{self.tasks_uri}: cannot read the round's tasks ({exc}); a round without "
                f"{TASKS} is incomplete (its publication did not finish)"
            ) from exc
        sha = sha256_bytes(data)
        if sha[:12] != self.name:
            raise RoundError(
                f"{self.tasks_uri}: sha256 {sha[:12]}... does not match the round's name "
                f"{self.name}: the tasks were changed after publication"
            )
        return data

    def fetch_tasks(self, dest: Path) -> Path:
        """Copy the round's checked tasks to ``dest`` (atomically); return ``dest``."""
        write_bytes(dest, self.read_tasks_bytes())
        return dest

    def feedback_names(self) -> list[str]:
        """The feedback files of the round (``feedback/*.json``), sorted."""
        try:
            keys = [o.key for o in self.store().list(f"{FEEDBACK}/")]
        except StorageError as exc:
            raise RoundError(f"{self.feedback_uri}: cannot list the feedback ({exc})") from exc
        return sorted(
            PurePosixPath(k).name
            for k in keys
            if k.endswith(".json") and PurePosixPath(k).parent.as_posix() == FEEDBACK
        )

    def fetch_feedback(self, dest_dir: Path) -> list[Path]:
        """Copy every feedback file of the round into ``dest_dir``; the local paths.

        Raises:
            RoundError: the round has no feedback yet (named with where it is expected).
        """
        names = self.feedback_names()
        if not names:
            raise RoundError(
                f"{self.feedback_uri}: no feedback yet on round {self.name}: export the "
                f"operators' answers there (`mentoring annotate export --tasks {self.tasks_uri}`)"
            )
        store = self.store()
        out = []
        for name in names:
            path = dest_dir / name
            write_bytes(path, store.read_bytes(f"{FEEDBACK}/{name}"))
            out.append(path)
        return out

    def feedback_location(self, name: str) -> str:
        """Where the feedback file ``name`` of this round goes."""
        if "/" in name or not name.endswith(".json"):
            raise RoundError(f"{name!r}: a feedback file name is a plain *.json name")
        return _join(self.feedback_uri, name)


def round_of(location: str | Path) -> MiningRound | None:
    """The round a tasks location belongs to, or None for a plain tasks file (not in a round)."""
    try:
        return MiningRound.at(location)
    except RoundError:
        return None


def round_of_labelstudio(
    location: str | Path, endpoint_url: str | None = None
) -> MiningRound | None:
    """The round whose ``labelstudio/`` folder ``location`` is, or None."""
    parent, _, last = str(location).rstrip("/").rpartition("/")
    if last != LABELSTUDIO:
        return None
    rnd = round_of(parent)
    return MiningRound(rnd.uri, endpoint_url) if rnd else None


def write_location(location: str | Path, data: bytes, endpoint_url: str | None = None) -> str:
    """Write ``data`` to a file path or an ``s3://`` URI (atomically either way); the location."""
    loc = str(location)
    if is_s3(loc):
        parent, _, name = loc.rstrip("/").rpartition("/")
        store = open_store(parent, endpoint_url=endpoint_url)
        store.write_bytes(name, data)
        return store.uri(name)
    write_bytes(Path(loc), data)
    return loc


def read_location(location: str | Path, endpoint_url: str | None = None) -> bytes:
    """The bytes at a file path or an ``s3://`` URI."""
    loc = str(location)
    if is_s3(loc):
        parent, _, name = loc.rstrip("/").rpartition("/")
        return open_store(parent, endpoint_url=endpoint_url).read_bytes(name)
    return Path(loc).read_bytes()


def publish_round(
    tasks_path: Path, data_root: Path, prefix: str, endpoint_url: str | None = None
) -> MiningRound:
    """Publish a task set as a round under ``prefix``: its mined images, then its tasks.

    The images go first, in parallel, and ``tasks.json`` last: a round that has its tasks has
    every image. Publishing the same tasks again rewrites the same objects.

    Raises:
        FileNotFoundError: a mined image missing under ``data_root`` (named).
        StorageError: an upload that failed after the store's retries (named).
    """
    rnd = MiningRound.of_tasks(tasks_path, prefix, endpoint_url)
    tasks = read_tasks(tasks_path)
    store = rnd.store()
    # an image given by its own s3:// URI is served from there (ImageSource reads it)
    paths = sorted({im.path for im in tasks.images if not is_s3(im.path)})
    missing = [p for p in paths if not (data_root / p).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} mined image(s) missing under {data_root}: {missing[:5]}"
        )

    def upload(path: str) -> None:
        store.write_bytes(f"{IMAGES}/{path}", (data_root / path).read_bytes())

    with ThreadPoolExecutor(UPLOAD_WORKERS) as pool:
        list(pool.map(upload, paths))
    store.write_bytes(TASKS, tasks_path.read_bytes())
    return rnd
