"""Read the line from a DVC-versioned data repository at one git revision.

A plant versions its line in a git repository with DVC (``docs/data-versioning.md``): a folder
of it (``path``, ``data`` by default) holds the line in this project's layout::

    <path>/line/<domain>/<split>/images/<image_id>.png
    <path>/line/<domain>/<split>/masks/<image_id>.png
    <path>/manifests/line.parquet

(what ``mentoring line generate --data <path>`` writes), ``dvc add``-ed, ``dvc push``-ed to the
repository's DVC remote (e.g. S3) and committed. A revision of that repository names one version
of the line for good; its commit sha is what a pipeline records and caches on.

:func:`resolve_rev` turns a branch, tag or sha into the full commit sha (``git ls-remote`` for
names, DVC's own git access for shas and other expressions); :func:`fetch_line` copies the line of
one revision into a data folder through :class:`dvc.api.DVCFileSystem`: the files come from the
repository's DVC remote (or its local cache, for a local repository), credentials from the usual
chain of the remote's client (for S3: ``AWS_ACCESS_KEY_ID``... or ``~/.aws``), never from params.

Example:
    >>> url = "https://git.example.com/plant/line-data.git"
    >>> commit = resolve_rev(url, "main")  # doctest: +SKIP
    >>> manifest, info = fetch_line(url, commit, "data", "data")  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mentoring.data.manifest import ManifestError, read_manifest
from mentoring.io import sha256_file

if TYPE_CHECKING:
    from dvc.api import DVCFileSystem

__all__ = ["VersionedDataError", "fetch_line", "is_commit_sha", "resolve_rev"]

_SHA = re.compile(r"[0-9a-f]{40}")
MANIFEST = "manifests/line.parquet"  # the manifest, relative to the line's folder
#: git ls-remote: seconds before an unreachable repository is an error
LS_REMOTE_TIMEOUT_S = 120.0
#: files downloaded at once from the DVC remote (each one is a request or two)
DOWNLOAD_THREADS = 8


class VersionedDataError(ValueError):
    """A versioned line that cannot be read; the message names the repo, revision and path."""


def is_commit_sha(rev: str) -> bool:
    """Whether ``rev`` is a full commit sha (40 lowercase hex digits), not a branch or tag.

    A pipeline caching on its data should refuse anything else: a branch name moves.
    """
    return bool(_SHA.fullmatch(rev))


def _cause(exc: BaseException) -> str:
    """``exc`` and the distinct messages of its causes, e.g. why DVC failed to load a folder."""
    texts: list[str] = []
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen and len(texts) < 4:
        seen.add(id(cur))
        text = str(cur).strip() or type(cur).__name__
        if text not in texts:
            texts.append(text)
        cur = cur.__cause__ or cur.__context__
    return ": ".join(texts)


def _clean_clones() -> None:
    """Remove the temporary clones and caches DVC made for git URLs (it keeps them per process).

    They are process-wide: this also drops clones opened by other DVC API users of the process.
    """
    from dvc.repo.open_repo import clean_repos

    clean_repos()


def _ls_remote(repo: str, name: str) -> str | None:
    """The commit ``name`` (a branch, tag, ``HEAD`` or full ref) points to, by git's precedence.

    Returns None when no ref matches, or when ``git`` is not installed (the caller falls back
    to DVC's own git access).
    """
    try:
        proc = subprocess.run(
            ["git", "ls-remote", "--", repo, name, f"{name}^{{}}"],
            capture_output=True,
            text=True,
            timeout=LS_REMOTE_TIMEOUT_S,
            env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},  # never wait for a password
        )
    except FileNotFoundError:
        return None
    except subprocess.TimeoutExpired:
        raise VersionedDataError(
            f"git repository {repo!r}: no answer within {LS_REMOTE_TIMEOUT_S:.0f} s"
        ) from None
    if proc.returncode != 0:
        raise VersionedDataError(
            f"git repository {repo!r} cannot be read (git ls-remote exited with "
            f"{proc.returncode}): {' '.join((proc.stderr or proc.stdout).split())}"
        )
    refs: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        sha, _, ref = line.partition("\t")
        refs[ref.strip()] = sha.strip()
    # gitrevisions(7): <name>, refs/<name>, refs/tags/, refs/heads/, refs/remotes/, .../HEAD
    for ref in (
        name,
        f"refs/{name}",
        f"refs/tags/{name}",
        f"refs/heads/{name}",
        f"refs/remotes/{name}",
        f"refs/remotes/{name}/HEAD",
    ):
        if ref in refs:
            return refs.get(f"{ref}^{{}}", refs[ref])  # an annotated tag: the commit it tags
    return None


@contextmanager
def _open(repo: str, rev: str) -> Iterator[DVCFileSystem]:
    """A DVCFileSystem of ``repo`` at ``rev``, opened now so that a bad repo or rev fails here."""
    from dvc.api import DVCFileSystem
    from dvc.scm import RevError

    fs = DVCFileSystem(repo, rev=rev)
    try:
        try:
            fs.repo  # noqa: B018  (opens the repository: clones a git URL)
        except RevError:
            raise VersionedDataError(
                f"git repository {repo!r}: unknown revision {rev!r} (not a commit, tag or branch "
                "of the repository)"
            ) from None
        except Exception as exc:
            raise VersionedDataError(
                f"git repository {repo!r} at {rev!r} cannot be opened: {_cause(exc)}"
            ) from exc
        yield fs
    finally:
        fs.close()


def _resolve(repo: str, rev: str) -> str:
    if not repo.strip():
        raise VersionedDataError("no data repository given (line.dvc.repo is empty)")
    name = rev.strip() or "HEAD"
    if not is_commit_sha(name):
        sha = _ls_remote(repo, name)
        if sha:
            return sha
    # a sha (is it in the repository?), a short sha, or an expression such as main~1
    with _open(repo, name) as fs:
        commit = str(fs.repo.get_rev())
    if not is_commit_sha(commit):
        raise VersionedDataError(f"git repository {repo!r}: {rev!r} resolved to {commit!r}")
    return commit


def resolve_rev(repo: str, rev: str = "") -> str:
    """The full commit sha that ``rev`` names in the git repository ``repo``.

    Args:
        repo: git URL (https, ssh, ``file://``) or local path of the repository.
        rev: a commit sha (checked to exist: it may be unknown to the repository), a short sha,
            a tag (annotated tags give the commit they tag), a branch, or "" for the default
            branch (``HEAD``).

    Raises:
        VersionedDataError: the repository cannot be read, or has no such revision.
    """
    try:
        return _resolve(repo, rev)
    finally:
        _clean_clones()


def _md5_file(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _local_files(data_dir: Path) -> set[str]:
    """The line's files present in ``data_dir``, relative to it (posix)."""
    found = {p.relative_to(data_dir).as_posix() for p in (data_dir / "line").rglob("*")}
    found = {rel for rel in found if (data_dir / rel).is_file()}
    if (data_dir / MANIFEST).is_file():
        found.add(MANIFEST)
    return found


def _check_line(manifest: Path, staging: Path, where: str, path: str) -> None:
    """The manifest's files exist and its images have the sha256 it lists."""
    try:
        df = read_manifest(manifest, check_files=True)
    except ManifestError as exc:
        text = str(exc).replace(str(staging.resolve()), path).replace(str(staging), path)
        raise VersionedDataError(f"{where}: the line in {path!r} is inconsistent: {text}") from None
    bad = [
        str(row.image_id)
        for row in df.itertuples()
        if sha256_file(staging / str(row.path)) != row.sha256
    ]
    if bad:
        raise VersionedDataError(
            f"{where}: {len(bad)} image(s) of {path!r} differ from the sha256 of {MANIFEST}: "
            f"{bad[:5]}{' ...' if len(bad) > 5 else ''}"
        )


def fetch_line(
    repo: str,
    rev: str,
    path: str,
    data_dir: str | Path,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Copy the line of ``repo`` at ``rev`` (folder ``path``) into ``data_dir``.

    ``<path>/line/`` becomes ``<data_dir>/line/`` and ``<path>/manifests/line.parquet`` becomes
    ``<data_dir>/manifests/line.parquet``, exactly: files of another version are removed. Files
    already in ``data_dir`` with the revision's md5 are not downloaded again; when all are there
    and nothing else is, nothing is written. Otherwise the new line is assembled in a temporary
    folder inside ``data_dir``, checked (every file the manifest names exists, every image has
    its sha256) and renamed into place: a failure leaves ``data_dir`` as it was.

    Args:
        repo: git URL or local path of the data repository.
        rev: commit sha (what a pipeline should pin), tag, branch, or "" for the default branch.
        path: the repository's folder holding ``line/`` and ``manifests/line.parquet``.
        data_dir: the data root to write ``line/`` and ``manifests/line.parquet`` in.
        progress: called as ``progress(done, total)`` over the files.

    Returns:
        The manifest path and ``{"repo", "rev", "commit", "path", "n_files", "bytes",
        "n_copied"}``: ``commit`` is the full sha ``rev`` resolved to, ``n_files`` and ``bytes``
        count the line's files (manifest included), ``n_copied`` those downloaded this time.

    Raises:
        VersionedDataError: unknown revision, ``path`` not holding a line at that revision, the
            DVC remote unreachable (or without the data), or an inconsistent line; the message
            names the repository, revision and path.
    """
    data_dir = Path(data_dir)
    base = path.strip().strip("/")
    prefix = "" if base in ("", ".") else f"{base}/"
    try:
        commit = _resolve(repo, rev)
        where = f"{repo}@{rev or 'HEAD'} (commit {commit[:12]})"
        with _open(repo, commit) as fs:
            wanted = _list_line(fs, prefix, where, path)
            info = _copy_line(fs, wanted, data_dir, where, path, progress)
    finally:
        _clean_clones()
    return data_dir / MANIFEST, {"repo": repo, "rev": rev, "commit": commit, "path": path, **info}


@dataclass(frozen=True)
class _Entry:
    rpath: str  # path in the repository
    md5: str
    info: dict[str, Any]  # DVCFileSystem's info (saves a lookup per file when downloading)


def _list_line(fs: DVCFileSystem, prefix: str, where: str, path: str) -> dict[str, _Entry]:
    """``{data_dir-relative path: entry}`` of the revision's line under ``prefix`` (the folder
    with a trailing slash, "" for the repository's root)."""
    line_dir, manifest = f"{prefix}line", f"{prefix}{MANIFEST}"
    try:
        found = {manifest: fs.info(manifest)}
        found |= fs.find(line_dir, detail=True)
        if len(found) == 1:
            raise FileNotFoundError(line_dir)
    except FileNotFoundError:
        raise VersionedDataError(
            f"{where}: {path!r} holds no line at this revision ({line_dir}/ and {manifest} are "
            "not tracked): the folder must hold what `mentoring line generate --data "
            f"{path}` writes, `dvc add`ed and committed"
        ) from None
    except Exception as exc:
        raise VersionedDataError(
            f"{where}: cannot list {path!r} from the repository's DVC remote: {_cause(exc)} "
            f"({_HINT})"
        ) from exc
    wanted: dict[str, _Entry] = {}
    for rpath, info in found.items():
        if info.get("type") != "file":
            continue
        # DVC-tracked files carry their md5; git-tracked ones are read from git (local, cheap)
        md5 = info.get("md5") or hashlib.md5(fs.cat_file(rpath)).hexdigest()
        wanted[rpath.removeprefix(prefix)] = _Entry(rpath, str(md5), info)
    return wanted


_HINT = "is the remote reachable, the data `dvc push`ed, the credentials in the environment?"


def _download(
    fs: DVCFileSystem, entries: list[tuple[_Entry, Path]], on_file: Callable[[], None]
) -> None:
    """Download each entry to its path, a few at a time (each file is a request or two)."""
    if not entries:
        return

    def get(item: tuple[_Entry, Path]) -> None:
        entry, dest = item
        dest.parent.mkdir(parents=True, exist_ok=True)
        fs.get_file(entry.rpath, str(dest), info=dict(entry.info))

    with ThreadPoolExecutor(max_workers=DOWNLOAD_THREADS) as pool:
        for _ in pool.map(get, entries):
            on_file()


def _copy_line(
    fs: DVCFileSystem,
    wanted: dict[str, _Entry],
    data_dir: Path,
    where: str,
    path: str,
    progress: Callable[[int, int], None] | None,
) -> dict[str, Any]:
    total = len(wanted)
    present = _local_files(data_dir) if data_dir.is_dir() else set()
    keep = {
        rel
        for rel, entry in wanted.items()
        if rel in present and _md5_file(data_dir / rel) == entry.md5
    }
    done = len(keep)
    if progress:
        progress(done, total)
    if keep == present == set(wanted):  # this revision's line is already there
        nbytes = sum((data_dir / rel).stat().st_size for rel in wanted)
        return {"n_files": total, "bytes": nbytes, "n_copied": 0}

    data_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".line-fetch-", dir=data_dir))
    try:
        for rel in sorted(keep):
            dest = staging / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(data_dir / rel, dest)  # unchanged: no copy (the old one is removed)
            except OSError:
                shutil.copy2(data_dir / rel, dest)

        def on_file() -> None:
            nonlocal done
            done += 1
            if progress:
                progress(done, total)

        fetch = sorted(set(wanted) - keep)
        try:
            _download(fs, [(wanted[rel], staging / rel) for rel in fetch], on_file)
        except Exception as exc:
            raise VersionedDataError(
                f"{where}: cannot download {len(fetch)} file(s) of {path!r} from the "
                f"repository's DVC remote: {_cause(exc)} ({_HINT})"
            ) from exc
        _check_line(staging / MANIFEST, staging, where, path)
        nbytes = sum((staging / rel).stat().st_size for rel in wanted)
        # swap: the old line/ goes into the staging folder, removed with it
        (data_dir / "manifests").mkdir(exist_ok=True)
        if (data_dir / "line").exists():
            os.replace(data_dir / "line", staging / ".old-line")
        os.replace(staging / "line", data_dir / "line")
        os.replace(staging / MANIFEST, data_dir / MANIFEST)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {"n_files": total, "bytes": nbytes, "n_copied": len(fetch)}
