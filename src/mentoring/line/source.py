"""What a line source holds right now, as one key: what a cached ingest step is keyed on.

A Kubeflow task is served from the cache when its inputs, image and command match an earlier
execution (the v2 driver's cache key, ``backend/src/v2/cacheutils/cache.go``). The ingest step's
inputs are its params, so on their own they cannot see a folder or an S3 prefix that gained
images, or a branch that moved. :func:`source_version` reads the source's identity at run time
(an uncached step) and hands it to ingest as an input, so that ingest is reused exactly when
what it would read is unchanged:

- ``synthetic``: the params themselves (the line is a pure function of them);
- ``dvc``: the full commit sha the revision resolves to now (a branch is read when the run
  runs, not when a schedule was created);
- ``folder`` / ``s3``: a sha256 over every object's key, size and ETag (size + mtime locally).

Example:
    >>> source_version(params).key       # doctest: +SKIP
    's3:9f2c...:1532'
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from mentoring.config import Params
from mentoring.data.versioned import resolve_rev
from mentoring.line.ingest import open_line_source


@dataclass(frozen=True)
class SourceVersion:
    """The identity of a line source's content.

    Attributes:
        source: ``line.source``.
        key: changes exactly when what ingestion would read changes.
        rev: ``dvc``: the full commit sha the revision resolved to; else "".
        n_objects: objects listed (``folder`` / ``s3``); 0 otherwise.
    """

    source: str
    key: str
    rev: str = ""
    n_objects: int = 0


def source_version(params: Params) -> SourceVersion:
    """The current :class:`SourceVersion` of ``params.line``'s source.

    Raises:
        VersionedDataError: the DVC repository or revision cannot be read.
        StorageError: the folder or the S3 prefix cannot be listed.
    """
    line = params.line
    if line.source == "synthetic":
        return SourceVersion("synthetic", "synthetic")
    if line.source == "dvc":
        sha = resolve_rev(line.dvc.repo, line.dvc.rev)
        return SourceVersion("dvc", f"dvc:{line.dvc.repo}@{sha}:{line.dvc.path}", rev=sha)
    location = line.ingest_dir if line.source == "folder" else line.s3.uri
    store = open_line_source(params, location)
    digest = hashlib.sha256()
    n = 0
    for info in sorted(store.list(), key=lambda o: o.key):
        digest.update(f"{info.key}\0{info.size}\0{info.etag}\n".encode())
        n += 1
    return SourceVersion(line.source, f"{line.source}:{digest.hexdigest()}:{n}", n_objects=n)
