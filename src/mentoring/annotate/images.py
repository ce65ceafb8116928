"""The task set's images, read by the path its tasks give, confined to the task set's store.

The web interface serves an image by **task image id only**: the id is looked up in the task set
and the path comes from there, never from the request. The path is relative to the data root (a
local folder or an ``s3://`` prefix, read through :func:`mentoring.storage.open_store`), or an
``s3://`` URI of its own. Locally, a path that is absolute, climbs with ``..`` or resolves
(symlinks followed) outside the data root is refused, as is any file type that is not an image a
browser shows: a task file cannot make the server read anything else.

Example:
    >>> source = ImageSource("data")                      # the demo's data root
    >>> data, media_type = source.read("line/new/pool/images/new-pool-000012.png")  # doctest: +SKIP
"""

from __future__ import annotations

import os
import threading
from pathlib import Path, PurePosixPath
from typing import Any

from mentoring.storage import LocalStore, S3Store, StorageError, is_s3, open_store, split_s3_uri

#: the image types served, by suffix (anything else is refused)
MEDIA_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".gif": "image/gif",
    ".bmp": "image/bmp",
}


class ImageNotFound(LookupError):
    """An image that cannot be served; the message says why (for the log, not the client)."""


class ImageSource:
    """Reads a task set's images from its data root.

    Args:
        root: the data root: a local folder (task paths are relative to it) or an ``s3://``
            prefix.
        endpoint_url: S3 endpoint for ``s3://`` roots and paths (default: boto3's
            ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``, else AWS).
    """

    def __init__(self, root: str | Path, endpoint_url: str | None = None) -> None:
        self.root = str(root)
        self.endpoint_url = endpoint_url
        self._stores: dict[str, LocalStore | S3Store] = {}
        self._lock = threading.Lock()
        self._local_root = None if is_s3(self.root) else Path(self.root).resolve()

    def _store(self, location: str) -> LocalStore | S3Store:
        with self._lock:
            if location not in self._stores:
                self._stores[location] = open_store(location, endpoint_url=self.endpoint_url)
            return self._stores[location]

    @staticmethod
    def _media_type(path: str) -> str:
        media = MEDIA_TYPES.get(PurePosixPath(path).suffix.lower())
        if media is None:
            raise ImageNotFound(f"{path}: not an image type that is served")
        return media

    @staticmethod
    def _relative(path: str) -> str:
        """``path`` as a key inside the root: relative, no ``..``, no backslash tricks."""
        pure = PurePosixPath(path)
        if not path or pure.is_absolute() or "\\" in path or ".." in pure.parts or "\0" in path:
            raise ImageNotFound(f"{path!r}: not a path inside the data root")
        return pure.as_posix()

    def read(self, path: str) -> tuple[bytes, str]:
        """The bytes and media type of the image at a task's ``path``.

        Raises:
            ImageNotFound: the path leaves the store, is not an image type, or cannot be read.
        """
        media = self._media_type(path)
        try:
            if is_s3(path):
                bucket, key = split_s3_uri(path)
                return self._store(f"s3://{bucket}").read_bytes(self._relative(key)), media
            key = self._relative(path)
            if self._local_root is None:
                return self._store(self.root).read_bytes(key), media
            # resolve symlinks, then require the file to be inside the root
            target = (self._local_root / key).resolve()
            if not target.is_relative_to(self._local_root) or not target.is_file():
                raise ImageNotFound(f"{path!r}: resolves to {target}, outside {self._local_root}")
            return target.read_bytes(), media
        except (StorageError, OSError) as exc:
            raise ImageNotFound(f"{path!r}: {exc}") from None

    def problem(self, path: str) -> str | None:
        """Why the image at a task's ``path`` cannot be served, or None when it can (checked
        without reading it: the file exists, is readable and is inside the data root; for S3,
        the object exists). ``serve`` checks every task's image with it at start."""
        try:
            self._media_type(path)
            if is_s3(path):
                bucket, key = split_s3_uri(path)
                found = self._store(f"s3://{bucket}").exists(self._relative(key))
                return None if found else f"{path}: no such object"
            key = self._relative(path)
            if self._local_root is None:
                found = self._store(self.root).exists(key)
                return None if found else f"{self.root.rstrip('/')}/{key}: no such object"
            target = (self._local_root / key).resolve()
            if not target.is_relative_to(self._local_root):
                return f"{path}: resolves to {target}, outside {self._local_root}"
            if not target.is_file():
                return f"{target}: no such file"
            if not os.access(target, os.R_OK):
                return f"{target}: not readable"
            return None
        except ImageNotFound as exc:
            return str(exc)
        except (StorageError, OSError) as exc:
            return f"{path}: {exc}"


def missing_images(db: Any, source: ImageSource) -> dict[str, str]:
    """Image id -> why its image cannot be read, for every task of ``db`` (an
    :class:`~mentoring.annotate.db.AnnotationDB`) whose image ``source`` cannot serve."""
    out: dict[str, str] = {}
    for image_id, path in db.image_paths():
        why = source.problem(path)
        if why is not None:
            out[image_id] = why
    return out
