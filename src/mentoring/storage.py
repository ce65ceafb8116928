"""One storage layer for images and JSON: a local folder or an S3 prefix, behind one interface.

A *store* is opened from a location: a local path (``data/ingest``) or ``s3://bucket/prefix``.
Keys are ``/``-separated paths relative to that location. S3 goes through boto3, so any
S3-compatible store works through ``endpoint_url`` (MinIO, Ceph, moto on loopback); when
``endpoint_url`` is not given, boto3's own ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` apply.
**Credentials come only from the standard AWS chain** (environment variables, the shared
profile, the instance or pod role): nothing here accepts a key.

Retries use botocore's retry configuration in ``adaptive`` mode (exponential backoff with
client-side rate limiting on throttling); a local write is atomic (temp file, then rename).

Example:
    >>> store = open_store("s3://plant-images/line-3", endpoint_url="http://127.0.0.1:9000")
    >>> for obj in store.list("new/pool/images/"):      # doctest: +SKIP
    ...     data = store.read_bytes(obj.key)
    >>> open_store("data/ingest").read_json("new/pool/images/p1.json")  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from mentoring.io import write_bytes

#: botocore retry attempts (first try included) unless the caller says otherwise
DEFAULT_MAX_ATTEMPTS = 8


class StorageError(OSError):
    """A location or object that cannot be read or written; the message names it."""


@dataclass(frozen=True)
class ObjectInfo:
    """One listed object. ``etag`` is S3's ETag (quotes stripped); locally, size + mtime.

    ``problem`` (with ``problem_kind``, a quarantine kind) says why a listed entry cannot be
    read as an object: a dangling link, a link out of the folder, a FIFO, an unsafe S3 key.
    Such an entry is listed (so that it is accounted for) but never read.
    """

    key: str
    size: int
    etag: str
    problem: str = ""
    problem_kind: str = ""


class Store(Protocol):
    """What the stages need from a storage location."""

    def uri(self, key: str = "") -> str: ...

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]: ...

    def read_bytes(self, key: str) -> bytes: ...

    def write_bytes(self, key: str, data: bytes) -> None: ...

    def exists(self, key: str) -> bool: ...

    def read_json(self, key: str) -> Any: ...

    def write_json(self, key: str, obj: Any) -> None: ...


def unsafe_key(key: str) -> bool:
    """True for a key that is not a plain relative path: a leading '/', or a '..', '.' or empty
    segment ('a//b'). "" (the store itself) and a prefix's one trailing '/' are fine."""
    path = key[:-1] if key.endswith("/") else key
    if not path:
        return False
    return key.startswith("/") or any(part in ("", ".", "..") for part in path.split("/"))


def _check_key(key: str, where: str) -> str:
    if unsafe_key(key):
        raise StorageError(f"{where}: key {key!r} must be relative and stay inside the store")
    return key


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


def _parse_json(data: bytes, where: str) -> Any:
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StorageError(f"{where}: not valid JSON ({exc})") from None


class LocalStore:
    """A folder on local disk. Listing walks it in sorted order; hidden files are skipped."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def uri(self, key: str = "") -> str:
        """The absolute path of ``key`` (what a manifest records as the source)."""
        root = self.root.absolute()
        return str(root / key) if key else str(root)

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key, str(self.root))

    def _inspect(self, path: str) -> tuple[os.stat_result | None, str, str]:
        """(stat of what ``path`` names, problem, problem kind): a link is followed only to a
        regular file inside the folder; anything else is a problem, and never opened."""
        try:
            st = os.lstat(path)
        except OSError as exc:
            return None, f"cannot be examined ({exc.strerror})", "fetch_failed"
        if stat.S_ISLNK(st.st_mode):
            target = os.path.realpath(path)
            root = os.path.realpath(self.root)
            if not os.path.exists(target):
                return None, f"dangling symbolic link to {os.readlink(path)!r}", "bad_link"
            if os.path.commonpath([root, target]) != root:
                return None, f"symbolic link out of the source folder (to {target})", "bad_link"
            if os.path.isdir(target):
                return None, "symbolic link to a folder (not followed)", "bad_link"
            st = os.stat(target)
        if not stat.S_ISREG(st.st_mode):
            what = (
                "a FIFO"
                if stat.S_ISFIFO(st.st_mode)
                else "a socket"
                if stat.S_ISSOCK(st.st_mode)
                else "a device"
                if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
                else "not a regular file"
            )
            return None, f"{what}, not a regular file: never opened", "not_a_file"
        return st, "", ""

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every file under ``prefix``, sorted; hidden files and folders are left out.

        A symbolic link to a regular file inside the folder is listed as that file; a dangling
        link, a link out of the folder or to a folder, a FIFO, socket or device is listed with
        a ``problem`` (and never opened: a FIFO would block the reader)."""
        base = self.root / prefix if prefix and prefix.endswith("/") else self.root
        if not self.root.is_dir():
            raise StorageError(f"{self.root}: folder not found")
        if not base.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            linked = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
            for name in sorted([*filenames, *linked]):
                if name.startswith("."):
                    continue
                path = os.path.join(dirpath, name)
                key = Path(path).relative_to(self.root).as_posix()
                if prefix and not key.startswith(prefix):
                    continue
                st, problem, kind = self._inspect(path)
                if st is None:
                    yield ObjectInfo(key, 0, "", problem, kind)
                    continue
                yield ObjectInfo(key, st.st_size, f"{st.st_size:x}-{st.st_mtime_ns:x}")

    def read_bytes(self, key: str) -> bytes:
        path = self._path(key)
        if os.path.lexists(path):
            st, problem, _ = self._inspect(str(path))
            if st is None:
                raise StorageError(f"{self.uri(key)}: {problem}")
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise StorageError(f"{self.uri(key)}: not found") from None
        except IsADirectoryError:
            raise StorageError(f"{self.uri(key)}: is a folder, not a file") from None
        except OSError as exc:
            raise StorageError(f"{self.uri(key)}: {exc.strerror or exc}") from None

    def write_bytes(self, key: str, data: bytes) -> None:
        write_bytes(self._path(key), data)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def read_json(self, key: str) -> Any:
        return _parse_json(self.read_bytes(key), self.uri(key))

    def write_json(self, key: str, obj: Any) -> None:
        self.write_bytes(key, _json_bytes(obj))


def s3_client(
    endpoint_url: str | None = None,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    max_pool_connections: int = 16,
) -> Any:
    """A boto3 S3 client: credentials from the standard chain, adaptive retries.

    ``endpoint_url`` (or boto3's ``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL`` when None) points
    it at any S3-compatible store.
    """
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"mode": "adaptive", "max_attempts": max_attempts},
        max_pool_connections=max_pool_connections,
        connect_timeout=10,
        read_timeout=60,
    )
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url or None, config=config)


class S3Store:
    """``s3://bucket/prefix`` through boto3. Keys are relative to the prefix."""

    def __init__(self, bucket: str, prefix: str = "", client: Any = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = client if client is not None else s3_client()

    def uri(self, key: str = "") -> str:
        """``s3://bucket/prefix/key`` (for messages and manifests: any key, even unsafe)."""
        full = (f"{self.prefix}/{key}" if self.prefix else key) if key else self.prefix
        return f"s3://{self.bucket}/{full}" if full else f"s3://{self.bucket}"

    def _key(self, key: str) -> str:
        _check_key(key, self.uri())
        return f"{self.prefix}/{key}" if self.prefix else key

    def _error(self, exc: Exception, key: str) -> StorageError:
        from botocore.exceptions import ClientError

        if isinstance(exc, ClientError):
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404", "NotFound"):
                return StorageError(f"{self.uri(key)}: not found")
            if code == "NoSuchBucket":
                return StorageError(f"{self.uri(key)}: bucket {self.bucket!r} does not exist")
            return StorageError(f"{self.uri(key)}: S3 error {code} ({exc})")
        return StorageError(f"{self.uri(key)}: {type(exc).__name__}: {exc}")

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object under ``prefix`` (relative), with a paginator: any number of objects."""
        full = self._key(prefix) if prefix else (f"{self.prefix}/" if self.prefix else "")
        strip = len(self.prefix) + 1 if self.prefix else 0
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
                for obj in page.get("Contents", []):
                    key = obj["Key"][strip:]
                    if not key or key.endswith("/"):
                        continue  # folder markers
                    etag = str(obj["ETag"]).strip('"')
                    if unsafe_key(key):
                        problem = "key is not a plain relative path ('..', '.', '' or a '/')"
                        yield ObjectInfo(key, int(obj["Size"]), etag, problem, "unsafe_key")
                        continue
                    yield ObjectInfo(key, int(obj["Size"]), etag)
        except Exception as exc:
            raise self._error(exc, prefix) from exc

    def read_bytes(self, key: str) -> bytes:
        """The object's bytes. botocore retries the request; a body cut short while streaming
        (which botocore does not retry: the response had already arrived) is fetched again, up to
        ``max_attempts`` times with backoff."""
        from botocore.exceptions import (
            ConnectionClosedError,
            IncompleteReadError,
            ReadTimeoutError,
            ResponseStreamingError,
        )

        streaming = (
            IncompleteReadError,
            ResponseStreamingError,
            ReadTimeoutError,
            ConnectionClosedError,
        )
        attempts = int(self.client.meta.config.retries.get("total_max_attempts", 0)) or 5
        for attempt in range(1, attempts + 1):
            try:
                body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
                return bytes(body.read())
            except streaming as exc:
                if attempt == attempts:
                    raise self._error(exc, key) from exc
                time.sleep(min(0.05 * 2**attempt, 2.0))
            except Exception as exc:
                raise self._error(exc, key) from exc
        raise AssertionError("unreachable")

    def write_bytes(self, key: str, data: bytes) -> None:
        """One PUT: S3 makes an object visible only once it is complete (atomic)."""
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
        except Exception as exc:
            raise self._error(exc, key) from exc

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code", "") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise self._error(exc, key) from exc

    def read_json(self, key: str) -> Any:
        return _parse_json(self.read_bytes(key), self.uri(key))

    def write_json(self, key: str, obj: Any) -> None:
        self.write_bytes(key, _json_bytes(obj))


def is_s3(location: str | Path) -> bool:
    return str(location).startswith("s3://")


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> (``bucket``, ``a/b``); a bad URI is a :class:`StorageError`."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise StorageError(f"{uri!r} is not an S3 URI (s3://bucket/prefix)")
    return parsed.netloc, parsed.path.lstrip("/")


def open_store(
    location: str | Path,
    endpoint_url: str | None = None,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    max_pool_connections: int = 16,
) -> LocalStore | S3Store:
    """The store at ``location``: ``s3://bucket/prefix`` or a local folder."""
    if is_s3(location):
        bucket, prefix = split_s3_uri(str(location))
        client = s3_client(endpoint_url, max_attempts, max_pool_connections)
        return S3Store(bucket, prefix, client)
    return LocalStore(location)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
