"""Data versioning round trips through DVC remotes: an S3 remote (moto on loopback) and a folder.

Each test builds a fresh git + DVC repository with a directory of binary files, a parquet table
and a JSON file, `dvc push`es them, checks the remote holds exactly the content-addressed objects
the `.dvc` files name, wipes the cache and the workspace, `dvc pull`s, and compares the bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import boto3
import pandas as pd
import pytest
import yaml

from tests.servers import aws_client_kwargs

pytestmark = pytest.mark.network

DVC_BIN = Path(sys.executable).parent / "dvc"
DVC = [str(DVC_BIN)] if DVC_BIN.exists() else [sys.executable, "-m", "dvc"]
TRACKED = ("data/images", "data/table.parquet", "data/meta.json")


def run(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``cmd``; on a non-zero exit, fail with its command line and captured output."""
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited with {proc.returncode}\n"
            f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
        )
    return proc


@dataclass
class DvcRepo:
    """A git + DVC repository whose ``TRACKED`` paths are `dvc add`ed and not yet pushed."""

    root: Path
    dvc_env: dict[str, str]  # added to the test's environment (read at each call) for dvc
    site_cache: Path
    originals: dict[str, bytes]  # workspace-relative path -> content, for every tracked file

    def dvc(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run([*DVC, *args], self.root, {**os.environ, **self.dvc_env})

    def expected_objects(self) -> set[str]:
        """Remote object names (``files/md5/ab/cdef...``) the `.dvc` files point to."""
        md5s = {hashlib.md5(data).hexdigest() for data in self.originals.values()}
        for tracked in TRACKED:
            meta = yaml.safe_load((self.root / f"{tracked}.dvc").read_text())
            md5s.update(out["md5"] for out in meta["outs"])  # adds the directory's `.dir` listing
        return {f"files/md5/{md5[:2]}/{md5[2:]}" for md5 in md5s}

    def wipe_cache_and_workspace(self) -> None:
        shutil.rmtree(self.root / ".dvc" / "cache")
        shutil.rmtree(self.site_cache, ignore_errors=True)
        for tracked in TRACKED:
            path = self.root / tracked
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
        assert not any((self.root / rel).exists() for rel in self.originals)

    def assert_workspace_restored(self) -> None:
        restored = {
            path.relative_to(self.root).as_posix(): path.read_bytes()
            for tracked in TRACKED
            for path in [self.root / tracked, *(self.root / tracked).rglob("*")]
            if path.is_file()
        }
        assert restored.keys() == self.originals.keys()
        for rel, data in self.originals.items():
            assert restored[rel] == data, f"{rel} differs after dvc pull"


def write_data(root: Path) -> dict[str, bytes]:
    """A few binary "images" (one in a subfolder), a parquet table and a JSON file."""
    rng = random.Random(0)
    files = {
        "data/images/a.bin": rng.randbytes(64 * 1024),
        "data/images/b.bin": rng.randbytes(10 * 1024),
        "data/images/sub/c.bin": rng.randbytes(1024),
        "data/meta.json": json.dumps({"domain": "original", "n": 3}).encode(),
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    table = root / "data/table.parquet"
    pd.DataFrame({"id": ["a", "b", "c"], "width": [64, 64, 32]}).to_parquet(table)
    files["data/table.parquet"] = table.read_bytes()
    return files


@pytest.fixture
def dvc_repo(tmp_path: Path) -> DvcRepo:
    root = tmp_path / "repo"
    root.mkdir()
    # Keep DVC's per-user and per-machine state (config, repo index, analytics) inside the test.
    dvc_env = {
        "DVC_NO_ANALYTICS": "1",
        "DVC_SITE_CACHE_DIR": str(tmp_path / "dvc-site-cache"),
        "DVC_GLOBAL_CONFIG_DIR": str(tmp_path / "dvc-global"),
        "DVC_SYSTEM_CONFIG_DIR": str(tmp_path / "dvc-system"),
    }
    run(["git", "init", "-q"], root, dict(os.environ))
    repo = DvcRepo(root, dvc_env, tmp_path / "dvc-site-cache", write_data(root))
    repo.dvc("init", "-q")
    repo.dvc("add", "-q", *TRACKED)
    return repo


def round_trip(repo: DvcRepo, remote_objects: Callable[[], set[str]]) -> None:
    """Push, check the remote holds exactly the expected objects, wipe, pull, compare bytes."""
    repo.dvc("push")
    assert remote_objects() == repo.expected_objects()
    repo.wipe_cache_and_workspace()
    repo.dvc("pull")
    repo.assert_workspace_restored()


def test_s3_remote_push_pull_round_trip(dvc_repo: DvcRepo, s3_endpoint: str) -> None:
    bucket, prefix = f"dvc-{uuid.uuid4().hex[:12]}", "dvcstore"
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, **aws_client_kwargs())
    s3.create_bucket(Bucket=bucket)
    # Credentials reach dvc through the environment, which the s3_endpoint fixture set.
    dvc_repo.dvc("remote", "add", "-d", "s3remote", f"s3://{bucket}/{prefix}")
    dvc_repo.dvc("remote", "modify", "s3remote", "endpointurl", s3_endpoint)

    def remote_objects() -> set[str]:
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/")
        keys = {obj["Key"] for page in pages for obj in page.get("Contents", [])}
        return {key.removeprefix(f"{prefix}/") for key in keys}

    round_trip(dvc_repo, remote_objects)


def test_local_remote_push_pull_round_trip(dvc_repo: DvcRepo, tmp_path: Path) -> None:
    store = tmp_path / "dvc-remote"
    dvc_repo.dvc("remote", "add", "-d", "localremote", str(store))

    def remote_objects() -> set[str]:
        return {p.relative_to(store).as_posix() for p in store.rglob("*") if p.is_file()}

    round_trip(dvc_repo, remote_objects)
