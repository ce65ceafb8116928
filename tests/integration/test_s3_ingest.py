"""Ingestion from a real S3 endpoint (moto's server on loopback), with planted bad objects,
reruns, a run killed halfway, and injected faults (throttling, 500s, resets, cut bodies).

Every test checks the reconciliation (listed = ingested + quarantined + already present +
skipped) and that the manifest holds each good image exactly once.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mentoring.config import Params, parse_params
from mentoring.data.images import Mapping
from mentoring.data.ingest import ingest_batch
from mentoring.data.manifest import read_manifest
from mentoring.storage import StorageError, open_store
from tests.servers import FaultProxy, aws_client_kwargs

N_GOOD = 40


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _objects() -> dict[str, bytes]:
    """A camera's prefix: 40 good images (various sizes, gray and RGB, some with masks and
    sidecars) and 5 bad objects."""
    rng = np.random.default_rng(0)
    objs: dict[str, bytes] = {}
    for i in range(N_GOOD):
        h, w = [(128, 128), (300, 200), (96, 160)][i % 3]
        shape = (h, w, 3) if i % 4 == 0 else (h, w)
        objs[f"images/2026-11-27/p{i:03d}.png"] = _png(rng.integers(0, 255, shape, np.uint8))
        if i % 5 == 0:
            mask = np.zeros((h, w), np.uint8)
            mask[10:30, 10:40] = 1 + i % 3
            objs[f"masks/2026-11-27/p{i:03d}.png"] = _png(mask)
        if i % 7 == 0:
            objs[f"images/2026-11-27/p{i:03d}.json"] = json.dumps(
                {"part_ref": "bracket", "camera": f"cam-{i % 2}", "acquired_at": f"T{i}"}
            ).encode()
    good = objs["images/2026-11-27/p001.png"]
    objs["images/2026-11-27/empty.png"] = b""
    objs["images/2026-11-27/text.png"] = b"not an image"
    objs["images/2026-11-27/cut.png"] = good[: len(good) // 2]
    objs["masks/2026-11-27/orphan.png"] = _png(np.zeros((8, 8), np.uint8))
    objs["images/2026-11-27/copy-of-p001.png"] = good  # same content under another key
    return objs


BAD_KINDS = {
    "images/2026-11-27/empty.png": "zero_byte",
    "images/2026-11-27/text.png": "not_an_image",
    "images/2026-11-27/cut.png": "truncated",
    "masks/2026-11-27/orphan.png": "mask_without_image",
}


def _bucket(endpoint: str, name: str, objects: dict[str, bytes], prefix: str = "line-3") -> str:
    s3 = boto3.client("s3", endpoint_url=endpoint, **aws_client_kwargs())
    s3.create_bucket(Bucket=name)
    for key, data in objects.items():
        s3.put_object(Bucket=name, Key=f"{prefix}/{key}", Body=data)
    return f"s3://{name}/{prefix}"


def _params(endpoint: str, uri: str = "", **line: object) -> Params:
    return parse_params(
        {
            "base": {"profile": "tiny"},
            "line": {
                "s3": {"endpoint_url": endpoint, "concurrency": 4, "max_attempts": 10, "uri": uri},
                "resize": "pad",
                **line,
            },
        }
    )


def _ingest(params: Params, uri: str, data: Path, results: Path) -> dict[str, Any]:
    return ingest_batch(params, uri, "new", "pool", data, results)


def test_ingest_from_s3_is_reconciled_idempotent_and_maps_back(
    s3_endpoint: str, tmp_path: Path
) -> None:
    objects = _objects()
    uri = _bucket(s3_endpoint, "plant-ingest", objects)
    params = _params(s3_endpoint)
    m = _ingest(params, uri, tmp_path / "data", tmp_path / "results")
    assert m["reconciled"] and m["listed"] == len(objects)
    assert m["ingested"] == N_GOOD + 1 + 8 + 6  # images, the copy, their masks and sidecars
    # the orphan mask waits for its image (retried on every run), the others are quarantined
    assert m["quarantined"] == len(BAD_KINDS) - 1 and m["to_retry"] == 1
    assert m["retry_kinds"] == {"mask_without_image": 1}
    assert m["already_present"] == 0 and m["skipped"] == {}
    assert m["bytes_fetched"] > 0
    saved = json.loads((tmp_path / "results/metrics.json").read_text())
    assert saved["listed"] == m["listed"] and saved["reconciled"]
    kinds = {q["file"].split("/line-3/", 1)[1]: q["kind"] for q in m["quarantined_files"]}
    assert kinds == BAD_KINDS
    for key in BAD_KINDS:
        assert (tmp_path / "data/quarantine/new/pool" / key).exists()
    # the same content under two keys is reported, and both are kept
    assert [g for g in m["duplicate_content"] if any("copy-of-p001" in k for k in g)]
    df = read_manifest(tmp_path / "data/manifests/line.parquet")
    assert len(df) == N_GOOD + 1 and df["image_id"].is_unique
    assert (df["width"] == 128).all() and (df["height"] == 128).all()
    row = df.set_index("image_id").loc["new-pool-2026-11-27.p001"]
    assert row["source_uri"] == f"{uri}/images/2026-11-27/p001.png"
    assert (row["orig_width"], row["orig_height"]) == (200, 300)
    mapping = Mapping.from_json(row["mapping"], 128, 128)
    assert mapping.policy == "pad" and mapping.to_original((0, 0, 128, 128)) == (0, 0, 200, 300)
    p7 = df.set_index("image_id").loc["new-pool-2026-11-27.p007"]
    assert (p7["camera"], p7["part_ref"], p7["acquired_at"]) == ("cam-1", "bracket", "T7")
    masked = df[df["mask_path"] != ""]
    assert len(masked) == 8 and (masked["defect_classes"] != "").all()

    # a second run fetches nothing and changes nothing
    before = (tmp_path / "data/manifests/line.parquet").read_bytes()
    again = _ingest(params, uri, tmp_path / "data", tmp_path / "results")
    assert again["reconciled"] and again["bytes_fetched"] == 0
    assert again["ingested"] == 0 and again["already_present"] == m["ingested"]
    assert again["quarantined"] == m["quarantined"] and again["to_retry"] == 1
    assert (tmp_path / "data/manifests/line.parquet").read_bytes() == before

    # new objects arrive: only they are fetched; a re-upload with new content is skipped
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, **aws_client_kwargs())
    s3.put_object(
        Bucket="plant-ingest",
        Key="line-3/images/2026-11-28/q000.png",
        Body=_png(np.full((64, 64), 7, np.uint8)),
    )
    s3.put_object(
        Bucket="plant-ingest",
        Key="line-3/images/2026-11-27/p002.png",
        Body=_png(np.full((128, 128), 1, np.uint8)),
    )
    third = _ingest(params, uri, tmp_path / "data", tmp_path / "results")
    assert third["reconciled"] and third["ingested"] == 1
    assert third["skipped"] == {"content changed after ingestion (the first version is kept)": 1}
    df3 = read_manifest(tmp_path / "data/manifests/line.parquet")
    assert len(df3) == N_GOOD + 2 and df3["image_id"].is_unique


def test_ingest_survives_throttling_errors_resets_and_cut_bodies(
    s3_endpoint: str, tmp_path: Path
) -> None:
    objects = _objects()
    uri = _bucket(s3_endpoint, "plant-faults", objects)
    clean = _ingest(_params(s3_endpoint), uri, tmp_path / "clean", tmp_path / "r0")
    with FaultProxy(s3_endpoint, rate=0.3, seed=1) as proxy:
        faulty = _ingest(_params(proxy.url), uri, tmp_path / "faulty", tmp_path / "r1")
    injected = {k: v for k, v in proxy.counts.items() if k != "forwarded"}
    assert all(v > 0 for v in injected.values()), injected  # every kind of fault happened
    for key in ("listed", "ingested", "quarantined", "already_present", "skipped"):
        assert faulty[key] == clean[key], key
    a = read_manifest(tmp_path / "clean/manifests/line.parquet")
    b = read_manifest(tmp_path / "faulty/manifests/line.parquet")
    cols = [c for c in a.columns if c != "source_uri"]
    pd.testing.assert_frame_equal(a[cols], b[cols])  # nothing lost, nothing duplicated


def test_a_store_that_keeps_failing_is_a_clear_error(s3_endpoint: str, tmp_path: Path) -> None:
    _bucket(s3_endpoint, "plant-down", {"images/a.png": _png(np.zeros((8, 8), np.uint8))})
    with FaultProxy(s3_endpoint, rate=1.0) as proxy:
        store = open_store("s3://plant-down/line-3", endpoint_url=proxy.url, max_attempts=2)
        with pytest.raises(StorageError, match="s3://plant-down/line-3"):
            list(store.list())
    store = open_store("s3://no-such-bucket/x", endpoint_url=s3_endpoint)
    with pytest.raises(StorageError, match="bucket 'no-such-bucket' does not exist"):
        list(store.list())


def _cli(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "mentoring.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def test_an_ingestion_killed_halfway_resumes_to_the_same_manifest(
    s3_endpoint: str, tmp_path: Path
) -> None:
    rng = np.random.default_rng(3)
    objects = {
        f"images/p{i:03d}.png": _png(rng.integers(0, 255, (128, 128), np.uint8)) for i in range(120)
    }
    uri = _bucket(s3_endpoint, "plant-resume", objects)
    env = dict(os.environ)
    base = ["ingest", uri, "--domain", "new", "--split", "pool", "-p", "params.yaml"]
    sets = ["-S", "base.profile=tiny", "-S", "line.s3.concurrency=2"]
    # the reference: one uninterrupted run
    ref = _cli(
        [
            *base,
            *sets,
            "-S",
            f"line.s3.endpoint_url={s3_endpoint}",
            "--data",
            str(tmp_path / "ref"),
            "--results",
            str(tmp_path / "r0"),
        ],
        env,
    )
    assert ref.wait(timeout=120) == 0, ref.stdout.read().decode() if ref.stdout else ""
    # a slow path (40 ms a request) so that the kill lands halfway
    with FaultProxy(s3_endpoint, rate=0.0, delay_s=0.04) as proxy:
        args = [
            *base,
            *sets,
            "-S",
            f"line.s3.endpoint_url={proxy.url}",
            "--data",
            str(tmp_path / "data"),
            "--results",
            str(tmp_path / "r1"),
        ]
        run = _cli(args, env)
        journal_dir = tmp_path / "data/ingest/journal"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            lines = sum(len(p.read_text().splitlines()) for p in journal_dir.glob("*.jsonl"))
            if lines >= 30 or run.poll() is not None:
                break
            time.sleep(0.05)
        os.killpg(run.pid, signal.SIGKILL)
        run.wait(timeout=30)
        assert 30 <= lines < 120, f"the kill did not land halfway ({lines} of 120 done)"
        assert not (tmp_path / "data/manifests/line.parquet").exists()
        again = _cli(args, env)
        assert again.wait(timeout=120) == 0, again.stdout.read().decode() if again.stdout else ""
    m = json.loads((tmp_path / "r1/metrics.json").read_text())
    assert m["reconciled"] and m["resumed"] >= 30 and m["ingested"] == 120
    a = read_manifest(tmp_path / "ref/manifests/line.parquet")
    b = read_manifest(tmp_path / "data/manifests/line.parquet")
    pd.testing.assert_frame_equal(a, b)  # exactly the same manifest, no duplicate
    assert not list(journal_dir.glob("*.jsonl"))  # the journal is gone once the run succeeds
    stored = sorted(p.name for p in (tmp_path / "data/line/new/pool/images").iterdir())
    assert stored == sorted(f"{i}.png" for i in b["image_id"])


def test_line_stage_reads_the_whole_layout_from_s3(s3_endpoint: str, tmp_path: Path) -> None:
    from mentoring.line.generate import generate_line
    from mentoring.stages import line

    gen = tmp_path / "gen"
    params = _params(s3_endpoint, source="synthetic")
    generate_line(params, gen)
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, **aws_client_kwargs())
    s3.create_bucket(Bucket="plant-line")
    for path in sorted((gen / "line").rglob("*.png")):
        s3.put_object(
            Bucket="plant-line",
            Key=f"line/{path.relative_to(gen / 'line').as_posix()}",
            Body=path.read_bytes(),
        )
    p = _params(s3_endpoint, "s3://plant-line/line", source="s3")
    m = line.run(p, tmp_path / "data", tmp_path / "results")
    assert m["source"] == "s3" and m["n_images"] == 112
    assert all(r["reconciled"] for r in m["ingest"].values())
    want = read_manifest(gen / "manifests/line.parquet")
    got = read_manifest(tmp_path / "data/manifests/line.parquet")
    # the same source bytes, in the same order (stored PNGs are re-encoded: compare sources)
    assert list(got["source_sha256"]) == list(want["sha256"])
    assert (got["source_uri"].str.startswith("s3://plant-line/line/")).all()
