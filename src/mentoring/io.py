"""Atomic file writes: write to a temporary file beside the target, then rename.

A reader (or a killed process) never sees a half-written file.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates 0600 files; outputs get the usual permissions (0666 minus the umask)
_FILE_MODE = 0o666 & ~_umask()


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent
    )
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted JSON, atomically."""
    write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def write_with(path: str | Path, writer: Callable[[Path], None]) -> None:
    """Atomically write ``path`` with a function that writes to the path it is given."""
    with atomic_path(path) as tmp:
        writer(tmp)


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


#: what a pod needs when it cannot write its volume (docs/kubeflow-cluster.md)
VOLUME_HELP = (
    "on Kubernetes the volume's root must be writable by the pod's user: KFP sets no fsGroup, "
    "so use a storage class whose volumes are group-0 or world writable, or add fsGroup "
    "(e.g. 10001) to the pipeline pods with an admission policy; see docs/kubeflow-cluster.md, "
    "'Non-root pods on fresh volumes'"
)


class NotWritableError(RuntimeError):
    """A folder this process cannot create or write; the message says who owns what."""


def writable_dir(path: str | Path) -> Path:
    """Create ``path`` (and its parents) and check that this process can write in it.

    Raises:
        NotWritableError: naming the first folder it cannot write, its owner and mode, this
            process's uid, gid and groups, and what a cluster must provide.
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".write-check-")
        os.close(fd)
        os.unlink(probe)
    except PermissionError:
        blocker = path
        while not blocker.exists() and blocker != blocker.parent:
            blocker = blocker.parent
        st = blocker.stat()
        raise NotWritableError(
            f"{blocker}: not writable by this process (uid {os.getuid()}, gid {os.getgid()}, "
            f"groups {sorted(os.getgroups())}): owned by {st.st_uid}:{st.st_gid}, mode "
            f"{st.st_mode & 0o7777:04o}; {VOLUME_HELP}"
        ) from None
    return path
