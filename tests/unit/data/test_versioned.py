"""Tests of reading a line from a DVC-versioned repository (src/mentoring/data/versioned.py).

A local git + DVC repository with a folder remote holds a small hand-made line (a few bytes per
"image": fetch_line never decodes them) at three commits: rev1, rev2 (one image changed, one
removed, one added) and rev3 (committed but never pushed). The repository's DVC cache is wiped
after each push, so the data comes from the remote. The S3 round trip and the stage are in
tests/integration/test_dvc_versioned.py.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from mentoring.data.manifest import COLUMNS, write_manifest
from mentoring.data.versioned import (
    VersionedDataError,
    fetch_line,
    is_commit_sha,
    resolve_rev,
)

# DVC's own code, run in-process here, uses a deprecated pygtrie API
pytestmark = pytest.mark.filterwarnings("ignore:_NoneStep.value:DeprecationWarning")

SPLITS = (("original", "train"), ("original", "eval"), ("new", "pool"), ("new", "eval"))


def git(root: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True)
    return proc.stdout.strip()


def write_line(data: Path, images: dict[str, bytes]) -> dict[str, bytes]:
    """A line in the project's layout: ``images`` is {image_id: bytes}, with an id of the form
    ``<domain>-<split>-<n>``; every image gets a mask. Returns {data-relative path: bytes}."""
    if data.exists():
        shutil.rmtree(data)
    rows = []
    for image_id, content in sorted(images.items()):
        domain, split, _ = image_id.split("-")
        rel = f"line/{domain}/{split}"
        (data / rel / "images").mkdir(parents=True, exist_ok=True)
        (data / rel / "masks").mkdir(parents=True, exist_ok=True)
        (data / rel / "images" / f"{image_id}.png").write_bytes(content)
        (data / rel / "masks" / f"{image_id}.png").write_bytes(b"mask " + content)
        rows.append(
            {
                "image_id": image_id,
                "path": f"{rel}/images/{image_id}.png",
                "mask_path": f"{rel}/masks/{image_id}.png",
                "domain": domain,
                "split": split,
                "part_ref": "disc",
                "width": 32,
                "height": 32,
                "channels": 1,
                "sha256": hashlib.sha256(content).hexdigest(),
                "defect_classes": "",
                "n_defects": 0,
                "n_nuisances": 0,
            }
        )
    write_manifest(pd.DataFrame(rows, columns=list(COLUMNS)), data / "manifests/line.parquet")
    return snapshot(data)


def snapshot(data: Path) -> dict[str, bytes]:
    """{data-relative path: bytes} of the line's files under ``data`` (line/ and the manifest)."""
    files = [p for p in (data / "line").rglob("*") if p.is_file()]
    files.append(data / "manifests/line.parquet")
    return {p.relative_to(data).as_posix(): p.read_bytes() for p in files}


def inodes(data: Path) -> dict[str, tuple[int, int]]:
    return {
        p.relative_to(data).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in data.rglob("*")
        if p.is_file()
    }


@dataclass
class Repo:
    root: Path
    remote: Path
    rev1: str
    rev2: str
    rev3: str  # committed, its data never pushed
    line1: dict[str, bytes]
    line2: dict[str, bytes]


@pytest.fixture(scope="module")
def dvc_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """DVC's per-user and per-machine state inside the test; git identity for commits."""
    state = tmp_path_factory.mktemp("dvc-state")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DVC_NO_ANALYTICS", "1")
        mp.setenv("DVC_SITE_CACHE_DIR", str(state / "site"))
        mp.setenv("DVC_GLOBAL_CONFIG_DIR", str(state / "global"))
        mp.setenv("DVC_SYSTEM_CONFIG_DIR", str(state / "system"))
        for key in ("GIT_AUTHOR", "GIT_COMMITTER"):
            mp.setenv(f"{key}_NAME", "test")
            mp.setenv(f"{key}_EMAIL", "test@example.com")
        yield


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, dvc_env: None) -> Repo:
    from dvc.repo import Repo as DvcRepo

    root = tmp_path_factory.mktemp("plant") / "line-data"
    root.mkdir()
    remote = root.parent / "dvc-remote"
    git(root, "init", "-q", "-b", "main")
    images = {f"{d}-{s}-{i}": f"{d} {s} {i} v1".encode() for d, s in SPLITS for i in range(3)}
    line1 = write_line(root / "data", images)

    def commit(message: str, push: bool = True) -> str:
        with DvcRepo(str(root)) as dvc:
            dvc.add([str(root / "data")])
            if push:
                dvc.push()
        shutil.rmtree(root / ".dvc/cache")  # what the remote holds, not the local cache
        git(root, "add", "data.dvc", ".gitignore", ".dvc")
        git(root, "commit", "-q", "-m", message)
        return git(root, "rev-parse", "HEAD")

    DvcRepo.init(str(root)).close()
    with DvcRepo(str(root)) as dvc, dvc.config.edit() as conf:  # dvc remote add -d store
        conf["remote"]["store"] = {"url": str(remote)}
        conf["core"]["remote"] = "store"
    rev1 = commit("line v1")
    git(root, "tag", "-a", "line-v1", "-m", "first line")
    images2 = dict(images)
    images2["new-pool-0"] = b"new pool 0 v2"  # changed
    del images2["original-eval-2"]  # removed
    images2["new-eval-7"] = b"new eval 7 v2"  # added
    line2 = write_line(root / "data", images2)
    rev2 = commit("line v2")
    git(root, "tag", "line-v2")
    write_line(root / "data", {**images2, "new-eval-8": b"never pushed"})
    rev3 = commit("line v3, not pushed", push=False)
    git(root, "checkout", "-q", "-b", "line-v1-fix", rev1)
    git(root, "checkout", "-q", "main")
    return Repo(root, remote, rev1, rev2, rev3, line1, line2)


@pytest.mark.parametrize(
    ("rev", "expected"),
    [
        ("0123456789abcdef0123456789abcdef01234567", True),
        ("0123456789ABCDEF0123456789ABCDEF01234567", False),  # not the canonical form
        ("0123456789abcdef", False),  # short
        ("0123456789abcdef0123456789abcdef012345678", False),  # 41
        ("main", False),
        ("", False),
        ("v1.0", False),
    ],
)
def test_is_commit_sha(rev: str, expected: bool) -> None:
    assert is_commit_sha(rev) is expected


def test_resolve_rev_branches_tags_and_shas(repo: Repo) -> None:
    root = str(repo.root)
    assert resolve_rev(root, "main") == repo.rev3
    assert resolve_rev(root, "") == repo.rev3  # the default branch
    assert resolve_rev(root, "line-v1") == repo.rev1  # annotated tag: the commit it tags
    assert resolve_rev(root, "line-v2") == repo.rev2  # lightweight tag
    assert resolve_rev(root, "line-v1-fix") == repo.rev1
    assert resolve_rev(root, "refs/heads/main") == repo.rev3
    assert resolve_rev(root, repo.rev2) == repo.rev2  # a sha is checked, then returned
    assert resolve_rev(root, repo.rev2[:10]) == repo.rev2  # short sha
    assert resolve_rev(root, "main~2") == repo.rev1
    assert resolve_rev(repo.root.as_uri(), "line-v2") == repo.rev2  # file:// URL


@pytest.mark.parametrize("rev", ["no-such-branch", "0123456789abcdef0123456789abcdef01234567"])
def test_resolve_rev_unknown_rev_names_repo_and_rev(repo: Repo, rev: str) -> None:
    with pytest.raises(VersionedDataError, match="unknown revision") as exc:
        resolve_rev(str(repo.root), rev)
    assert str(repo.root) in str(exc.value) and rev in str(exc.value)


def test_resolve_rev_missing_repo(tmp_path: Path) -> None:
    missing = str(tmp_path / "nowhere")
    with pytest.raises(VersionedDataError, match="cannot be read") as exc:
        resolve_rev(missing, "main")
    assert missing in str(exc.value)
    with pytest.raises(VersionedDataError, match="no data repository"):
        resolve_rev("", "main")


def test_fetch_each_revision_exactly_then_nothing_twice(repo: Repo, tmp_path: Path) -> None:
    data = tmp_path / "data"
    calls: list[tuple[int, int]] = []
    manifest, info = fetch_line(
        str(repo.root), repo.rev1, "data", data, progress=lambda d, t: calls.append((d, t))
    )
    assert manifest == data / "manifests/line.parquet"
    assert snapshot(data) == repo.line1
    n1 = len(repo.line1)
    assert info == {
        "repo": str(repo.root),
        "rev": repo.rev1,
        "commit": repo.rev1,
        "path": "data",
        "n_files": n1,
        "bytes": sum(len(b) for b in repo.line1.values()),
        "n_copied": n1,
    }
    assert calls[-1] == (n1, n1)
    assert not [p for p in data.iterdir() if p.name.startswith(".")]  # no staging left

    before = inodes(data)
    _, again = fetch_line(str(repo.root), "line-v1", "data", data)  # same commit, by its tag
    assert again["n_copied"] == 0 and again["commit"] == repo.rev1 and again["rev"] == "line-v1"
    assert inodes(data) == before  # nothing rewritten

    _, info2 = fetch_line(str(repo.root), repo.rev2, "data", data)
    assert snapshot(data) == repo.line2  # the removed image and mask are gone too
    changed = {rel for rel, b in repo.line2.items() if repo.line1.get(rel) != b}
    assert info2["n_copied"] == len(changed) == 5  # image+mask changed, image+mask added, manifest
    assert info2["commit"] == repo.rev2

    _, info1 = fetch_line(str(repo.root), repo.rev1, "data", data)
    assert snapshot(data) == repo.line1
    back = {rel for rel, b in repo.line1.items() if repo.line2.get(rel) != b}
    assert info1["n_copied"] == len(back) == 5  # changed image+mask, removed image+mask, manifest


def test_fetch_replaces_another_line_and_keeps_the_rest_of_data_dir(
    repo: Repo, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    write_line(data, {"original-train-0": b"synthetic", "new-eval-9": b"other"})
    (data / "mining").mkdir()
    (data / "mining/tasks.json").write_text("{}")
    fetch_line(str(repo.root), repo.rev2, "data", data)
    assert snapshot(data) == repo.line2
    assert (data / "mining/tasks.json").read_text() == "{}"


def test_fetch_from_a_file_url_clones_and_reads_the_remote(repo: Repo, tmp_path: Path) -> None:
    _, info = fetch_line(repo.root.as_uri(), "line-v2", "data", tmp_path / "d")
    assert snapshot(tmp_path / "d") == repo.line2
    assert info["commit"] == repo.rev2 and info["repo"] == repo.root.as_uri()


def test_untracked_path_is_a_clear_error(repo: Repo, tmp_path: Path) -> None:
    with pytest.raises(VersionedDataError) as exc:
        fetch_line(str(repo.root), "line-v2", "images", tmp_path / "d")
    msg = str(exc.value)
    assert str(repo.root) in msg and "line-v2" in msg and repo.rev2[:12] in msg
    assert "'images' holds no line" in msg
    assert not (tmp_path / "d").exists()


def test_unknown_rev_is_a_clear_error(repo: Repo, tmp_path: Path) -> None:
    with pytest.raises(VersionedDataError, match="unknown revision 'line-v9'"):
        fetch_line(str(repo.root), "line-v9", "data", tmp_path / "d")


def test_data_missing_from_the_remote_leaves_data_dir_untouched(repo: Repo, tmp_path: Path) -> None:
    data = tmp_path / "data"
    fetch_line(str(repo.root), repo.rev2, "data", data)
    before = inodes(data)
    with pytest.raises(VersionedDataError) as exc:
        fetch_line(str(repo.root), repo.rev3, "data", data)
    msg = str(exc.value)
    assert str(repo.root) in msg and repo.rev3 in msg and "'data'" in msg
    assert "DVC remote" in msg and "dvc push" in msg
    assert inodes(data) == before
    assert sorted(p.name for p in data.iterdir()) == ["line", "manifests"]  # no staging left


def test_inconsistent_line_is_refused(tmp_path: Path, dvc_env: None) -> None:
    """A line committed in git itself (no DVC): fine when consistent; an image that differs
    from its manifest sha256, or a missing mask, is refused and data_dir is left as it was."""
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    good = write_line(root / "plant/data", {"original-train-0": b"a", "new-pool-0": b"b"})
    git(root, "add", "plant")
    git(root, "commit", "-q", "-m", "good")
    (root / "plant/data/line/new/pool/images/new-pool-0.png").write_bytes(b"tampered")
    git(root, "commit", "-q", "-am", "tampered")
    git(root, "rm", "-q", "plant/data/line/original/train/masks/original-train-0.png")
    git(root, "commit", "-q", "-m", "mask lost")

    data = tmp_path / "data"
    _, info = fetch_line(str(root), "main~2", "plant/data/", data)  # git-tracked files work too
    assert snapshot(data) == good and info["n_copied"] == len(good)
    before = inodes(data)
    with pytest.raises(VersionedDataError, match=r"1 image\(s\) .* differ from the sha256"):
        fetch_line(str(root), "main~1", "plant/data", data)
    with pytest.raises(VersionedDataError, match="referenced file") as exc:
        fetch_line(str(root), "main", "plant/data", data)
    assert "plant/data/line/original/train/masks/original-train-0.png" in str(exc.value)
    assert ".line-fetch" not in str(exc.value)
    assert inodes(data) == before
