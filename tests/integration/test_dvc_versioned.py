"""The line read from a DVC-versioned repository whose DVC remote is S3 (moto on loopback).

A plant's data repository is built the way docs/data-versioning.md says: git + `dvc init`, a small
generated line in ``data/``, `dvc add data`, an S3 remote (its endpoint committed in
``.dvc/config``, credentials only in the environment), `dvc push`, commit; then a second line
(another seed, other sizes) committed the same way. The local DVC cache is wiped, so every file
comes from S3, and the repository is read through a ``file://`` URL (cloned, like a git server).
`fetch_line` at each commit sha returns exactly that revision's bytes; the ``line`` stage with
``line.source: dvc`` (the real CLI) writes a manifest that `mentoring validate` accepts and
records the data version in its metrics.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from dvc.repo import Repo as DvcRepo
from typer.testing import CliRunner

from mentoring.cli import app
from mentoring.config import Params, load_params, parse_params
from mentoring.data.versioned import VersionedDataError, fetch_line, resolve_rev
from mentoring.line.generate import generate_line
from mentoring.stages import line as line_stage
from mentoring.stages import validate
from tests.servers import AWS_ENV_TO_UNSET, AWS_TEST_ENV, aws_client_kwargs

# DVC's own code, run in-process here, uses a deprecated pygtrie API
pytestmark = [
    pytest.mark.network,
    pytest.mark.filterwarnings("ignore:_NoneStep.value:DeprecationWarning"),
]

REPO = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).parent / "mentoring")


def small_line(seed: int, original_train: int) -> Params:
    """A line smaller than `tiny` (every file is a request to moto), still valid."""
    sizes = {"original_train": original_train, "original_eval": 8, "new_pool": 8, "new_eval": 8}
    line = {"seed": seed, "workers": 1, "profiles": {"small": sizes}}
    return parse_params({"base": {"profile": "small"}, "line": line})


LINE1 = small_line(seed=0, original_train=16)  # 40 images: 81 files with the manifest
LINE2 = small_line(seed=1, original_train=12)  # 36 images, all different: 73 files


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` in the test's environment; fail with its output on a non-zero exit."""
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited with {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def snapshot(data: Path) -> dict[str, bytes]:
    """{data-relative path: bytes} of the line's files (line/ and the manifest)."""
    files = [p for p in (data / "line").rglob("*") if p.is_file()]
    files.append(data / "manifests/line.parquet")
    return {p.relative_to(data).as_posix(): p.read_bytes() for p in files}


@dataclass
class Plant:
    url: str  # file:// URL of the data repository
    rev1: str
    rev2: str
    line1: dict[str, bytes]
    line2: dict[str, bytes]


@pytest.fixture(scope="module")
def plant(tmp_path_factory: pytest.TempPathFactory, _moto_endpoint: str) -> Iterator[Plant]:
    """The data repository, two revisions pushed to S3; the module runs in its environment."""
    tmp = tmp_path_factory.mktemp("plant")
    bucket = f"line-{uuid.uuid4().hex[:12]}"
    with pytest.MonkeyPatch.context() as mp:
        for key in AWS_ENV_TO_UNSET:
            mp.delenv(key, raising=False)
        for key, value in AWS_TEST_ENV.items():
            mp.setenv(key, value)
        mp.setenv("DVC_NO_ANALYTICS", "1")
        mp.setenv("DVC_SITE_CACHE_DIR", str(tmp / "dvc-site"))
        mp.setenv("DVC_GLOBAL_CONFIG_DIR", str(tmp / "dvc-global"))
        mp.setenv("DVC_SYSTEM_CONFIG_DIR", str(tmp / "dvc-system"))
        for who in ("AUTHOR", "COMMITTER"):
            mp.setenv(f"GIT_{who}_NAME", "plant")
            mp.setenv(f"GIT_{who}_EMAIL", "plant@example.com")
        boto3.client("s3", endpoint_url=_moto_endpoint, **aws_client_kwargs()).create_bucket(
            Bucket=bucket
        )
        root = tmp / "line-data"
        root.mkdir()
        run(["git", "init", "-q", "-b", "main"], root)
        # DVC's Python API, in this process (each `dvc` command would start in about a second):
        # dvc init; dvc remote add -d s3 s3://...; dvc remote modify s3 endpointurl ...
        DvcRepo.init(str(root)).close()
        remote = {"url": f"s3://{bucket}/dvcstore", "endpointurl": _moto_endpoint}
        with DvcRepo(str(root)) as dvc, dvc.config.edit() as conf:
            conf["remote"]["s3"] = remote
            conf["core"]["remote"] = "s3"

        def commit(message: str) -> str:
            with DvcRepo(str(root)) as dvc:  # dvc add data; dvc push
                dvc.add([str(root / "data")])
                dvc.push()
            run(["git", "add", "data.dvc", ".gitignore", ".dvc"], root)
            run(["git", "commit", "-q", "-m", message], root)
            return run(["git", "rev-parse", "HEAD"], root).stdout.strip()

        generate_line(LINE1, root / "data")
        line1 = snapshot(root / "data")
        rev1 = commit("line: seed 0")
        shutil.rmtree(root / "data")
        generate_line(LINE2, root / "data")
        line2 = snapshot(root / "data")
        rev2 = commit("line: seed 1, fewer images")
        # a branch whose remote is a bucket that does not exist
        run(["git", "checkout", "-q", "-b", "lost-bucket"], root)
        with DvcRepo(str(root)) as dvc, dvc.config.edit() as conf:
            conf["remote"]["s3"]["url"] = f"s3://{bucket}-gone/dvcstore"
        run(["git", "commit", "-q", "-am", "remote: a bucket that is gone"], root)
        run(["git", "checkout", "-q", "main"], root)
        shutil.rmtree(root / ".dvc/cache")  # every file must come from S3
        yield Plant(root.as_uri(), rev1, rev2, line1, line2)


def test_fetch_each_commit_from_s3(plant: Plant, tmp_path: Path) -> None:
    data = tmp_path / "data"
    manifest, info = fetch_line(plant.url, plant.rev1, "data", data)
    assert manifest == data / "manifests/line.parquet"
    assert snapshot(data) == plant.line1
    assert info["commit"] == plant.rev1 and info["n_files"] == len(plant.line1) == 81
    assert info["n_copied"] == 81 and info["bytes"] == sum(map(len, plant.line1.values()))

    _, info = fetch_line(plant.url, plant.rev2, "data", data)
    assert snapshot(data) == plant.line2  # the images rev2 does not have are gone
    assert info["commit"] == plant.rev2 and info["n_files"] == len(plant.line2) == 73

    _, info = fetch_line(plant.url, "main", "data", data)  # the branch: the same commit
    assert info["n_copied"] == 0 and info["commit"] == plant.rev2 and info["rev"] == "main"
    assert snapshot(data) == plant.line2


def test_branch_resolves_to_its_sha(plant: Plant) -> None:
    assert resolve_rev(plant.url, "main") == plant.rev2
    assert resolve_rev(plant.url, plant.rev1) == plant.rev1
    assert resolve_rev(plant.url, "main~1") == plant.rev1


def test_unknown_rev_untracked_path_and_lost_remote_are_clear_errors(
    plant: Plant, tmp_path: Path
) -> None:
    with pytest.raises(VersionedDataError, match=r"unknown revision 'v9\.9'") as exc:
        fetch_line(plant.url, "v9.9", "data", tmp_path / "d")
    assert plant.url in str(exc.value)
    with pytest.raises(VersionedDataError, match="'results' holds no line") as exc:
        fetch_line(plant.url, plant.rev1, "results", tmp_path / "d")
    assert plant.url in str(exc.value) and plant.rev1 in str(exc.value)
    with pytest.raises(VersionedDataError, match="DVC remote") as exc:
        fetch_line(plant.url, "lost-bucket", "data", tmp_path / "d")
    assert "lost-bucket" in str(exc.value) and "bucket does not exist" in str(exc.value)
    assert not (tmp_path / "d").exists()


def test_line_stage_cli_reads_the_commit_and_validate_accepts_it(
    plant: Plant, tmp_path: Path
) -> None:
    sets = ["-S", "line.source=dvc"]
    sets += ["-S", f"line.dvc.repo={plant.url}", "-S", f"line.dvc.rev={plant.rev1}"]
    params = ["--params", str(REPO / "params.yaml")]
    data, results = tmp_path / "data", tmp_path / "results"
    out_opts = ["--data", str(data), "--results", str(results)]
    run([CLI, "line", "run", *params, *sets, *out_opts], tmp_path)
    assert snapshot(data) == plant.line1
    metrics = json.loads((results / "metrics.json").read_text())
    assert metrics["source"] == "dvc" and metrics["n_images"] == 40
    assert metrics["data_version"] == {
        "repo": plant.url,
        "rev": plant.rev1,
        "commit": plant.rev1,
        "path": "data",
    }
    assert (results / "plots/preview.png").stat().st_size > 10_000
    # what `mentoring validate` runs (in this process: great-expectations takes seconds to load)
    checked = validate.run(
        load_params(REPO / "params.yaml"), data / "manifests/line.parquet", tmp_path / "validate"
    )
    assert checked["success"] and checked["n_failed"] == 0 and checked["n_images"] == 40

    # a bad revision: one red line, exit code 2, the data left as it was (in-process CLI)
    bad = [*sets[:-1], "line.dvc.rev=no-such-tag"]
    result = CliRunner().invoke(app, ["line", "run", *params, *bad, *out_opts])
    assert result.exit_code == 2, result.output
    assert "unknown revision 'no-such-tag'" in result.output and plant.url in result.output
    assert snapshot(data) == plant.line1


def test_line_stage_run_with_a_branch_records_the_commit(plant: Plant, tmp_path: Path) -> None:
    params = parse_params(
        {
            "line": {"source": "dvc", "dvc": {"repo": plant.url, "rev": "main"}},
        }
    )
    metrics = line_stage.run(params, tmp_path / "data", tmp_path / "results")
    assert metrics["data_version"] == {
        "repo": plant.url,
        "rev": "main",
        "commit": plant.rev2,
        "path": "data",
    }
    assert metrics["n_images"] == 36
    saved = json.loads((tmp_path / "results/metrics.json").read_text())
    assert saved["data_version"]["commit"] == plant.rev2
    assert os.path.exists(tmp_path / "results/plots/preview.png")


def test_kfp_ingest_reads_a_branch_when_the_run_runs_and_is_cached_on_its_sha(
    plant: Plant, tmp_path: Path
) -> None:
    """The pipelines' `line_version` -> `ingest` steps (kfp's local runner, its cache on): the
    branch is resolved when each run runs (a schedule keeps the branch, not the sha it had when
    the schedule was made), ingest's cache key is that sha, so a run after the branch moved
    reads the new commit and a run after it reuses its artifact; `ingest` itself refuses a
    branch (its key could not see it move)."""
    from kfp import dsl, local

    from mentoring.components.ingest import ingest
    from mentoring.components.line_version import line_version
    from mentoring.orchestration.adapter import pipeline_value

    def done(status: dsl.PipelineTaskFinalStatus) -> None:
        print(status.state)

    def pipeline(params: dict, repo: str, rev: str) -> None:
        # inside an exit handler, as in the real pipelines: kfp.local caches only in its
        # control-flow orchestrator (the plain-DAG one has no cache)
        with dsl.ExitHandler(exit_task()):
            version = line_version(params=params, dataset_repo=repo, dataset_rev=rev)
            version.set_caching_options(False)  # as compiled (pipelines/platform.py)
            ingest(
                params=params,
                dataset_repo=repo,
                dataset_rev=version.outputs["rev"],
                source_key=version.outputs["key"],
            )

    # kfp reads real types (this module's annotations are strings: `from __future__`)
    done.__annotations__ = {"status": dsl.PipelineTaskFinalStatus, "return": None}
    exit_task = dsl.component(install_kfp_package=False)(done)
    pipeline.__annotations__ = {"params": dict, "repo": str, "rev": str, "return": None}
    ingest_only = dsl.pipeline(name="ingest-only")(pipeline)

    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(tmp_path / "outputs"),
        enable_caching=True,
        cache_root=str(tmp_path / "cache"),
    )
    args = {"params": pipeline_value(LINE1), "repo": plant.url}
    repo = Path(plant.url.removeprefix("file://"))

    def lines() -> list[Path]:  # the ingest outputs written so far, oldest first
        found = (tmp_path / "outputs").glob("*/ingest/line/manifests/line.parquet")
        return sorted((p.parents[1] for p in found), key=lambda p: p.stat().st_mtime)

    run(["git", "branch", "-f", "weekly", plant.rev1], repo)
    try:
        ingest_only(**args, rev="weekly")
        (line,) = lines()
        assert snapshot(line) == plant.line1
        meta = json.loads((line.parent / "executor_output.json").read_text())
        ingested = meta["artifacts"]["line"]["artifacts"][0]["metadata"]
        assert ingested["data_version"]["commit"] == plant.rev1
        ingest_only(**args, rev=plant.rev1)
        assert lines() == [line]  # the same sha: a cache hit, the step did not run again
        run(["git", "branch", "-f", "weekly", plant.rev2], repo)  # the branch moves on
        ingest_only(**args, rev="weekly")
        first, second = lines()
        assert first == line and snapshot(second) == plant.line2
        ingest_only(**args, rev="weekly")
        assert lines() == [first, second]  # unchanged since: cached
    finally:
        run(["git", "branch", "-D", "weekly"], repo)
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(tmp_path / "direct"),
        raise_on_error=True,
    )
    with pytest.raises(RuntimeError, match="ingest"):
        ingest(params=args["params"], dataset_repo=plant.url, dataset_rev="main")
