"""Ingestion under attack: a hostile corpus over a folder and over moto's S3, a flaky store,
masks that arrive late (issue 23, items 1-5).

The rule under test: anything about one object quarantines that object with a kind and a reason
and the batch goes on; what can heal is tried again on every later run until it succeeds; the
counts reconcile (listed = ingested + quarantined + to retry + already present + skipped) and
nothing is lost. Each test adds its figures to ``results/reliability.json``.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from mentoring.cli import app
from mentoring.config import Params, parse_params
from mentoring.data import ingest as ingest_mod
from mentoring.data.images import QUARANTINE_KINDS, RETRIED_KINDS
from mentoring.data.ingest import IngestError, ingest_batch
from mentoring.data.manifest import read_manifest
from mentoring.io import write_json
from tests.factories import jpeg_bytes as _jpeg
from tests.factories import png_bytes as _png
from tests.servers import FaultProxy, aws_client_kwargs

REPO = Path(__file__).resolve().parents[2]
RELIABILITY = REPO / "results" / "reliability.json"


def record(area: str, figures: dict[str, Any]) -> None:
    """Add one area's figures to the reliability report (read, update, atomic write)."""
    report = json.loads(RELIABILITY.read_text()) if RELIABILITY.exists() else {}
    report[area] = figures
    write_json(RELIABILITY, report)


def _claimed_size(png: bytes, width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (a decompression bomb's header), CRC fixed."""
    ihdr = bytearray(png[16:29])
    ihdr[0:8] = struct.pack(">II", width, height)
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + bytes(ihdr)) & 0xFFFFFFFF)
    return png[:16] + bytes(ihdr) + crc + png[33:]


LONG = "x" * 120  # two folders of 120 and a name: an image id over 255 bytes once flattened


def corpus() -> tuple[dict[str, bytes], dict[str, str]]:
    """(key under the split's prefix -> bytes, key -> expected outcome): a quarantine kind, or
    ``ingested`` / ``skipped``. Good images sit beside every bad one."""
    rng = np.random.default_rng(23)
    noise = rng.integers(0, 255, (64, 64), dtype=np.uint8)
    good = _png(noise)
    zeros = np.zeros((64, 64), np.uint8)
    files: dict[str, bytes] = {}
    want: dict[str, str] = {}

    def put(key: str, data: bytes, outcome: str) -> None:
        files[key] = data
        want[key] = outcome

    for i in range(6):  # good images with masks
        img = rng.integers(0, 255, (64, 64), dtype=np.uint8)
        mask = np.zeros((64, 64), np.uint8)
        mask[8:20, 8:20] = 1
        put(f"images/good-{i}.png", _png(img), "ingested")
        put(f"masks/good-{i}.png", _png(mask), "ingested")
    put("images/empty.png", b"", "zero_byte")
    put("images/notes.png", b"notes, not pixels", "not_an_image")
    put("images/readme.txt", b"plain text", "not_an_image")
    put("images/photo.png", _jpeg(noise), "wrong_extension")
    put("images/anim.gif", b"GIF89a" + bytes(40), "not_an_image")
    put("images/cut.png", good[: len(good) // 2], "truncated")
    jpeg = _jpeg(noise)
    put("images/cut-jpeg.jpg", jpeg[: len(jpeg) * 2 // 3], "truncated")
    flipped = good[:200] + bytes(b ^ 0xFF for b in good[200:260]) + good[260:]
    put("images/flipped.png", flipped, "corrupt")
    put("images/bomb.png", _claimed_size(good, 40_000, 40_000), "too_large")
    put("images/near-bomb.png", _claimed_size(good, 10_000, 10_000), "too_large")
    put("images/tiny.png", _png(np.zeros((1, 1), np.uint8)), "too_small")
    put("images/thin.png", _png(np.zeros((64, 4), np.uint8)), "too_small")
    put("images/no-mask.png", _png(zeros), "image_without_mask")
    put("masks/orphan.png", _png(zeros), "mask_without_image")
    for name, mask, kind in (
        ("bad-mask", _png(np.full((64, 64), 9, np.uint8)), "mask_unknown_class"),
        ("rgb-mask", _png(np.zeros((64, 64, 3), np.uint8)), "mask_not_index"),
        ("garbled-mask", b"garbage", "mask_unreadable"),
        ("empty-mask", b"", "mask_unreadable"),
        ("small-mask", _png(np.zeros((32, 32), np.uint8)), "mask_size_mismatch"),
    ):
        put(f"images/{name}.png", _png(zeros), kind)
        put(f"masks/{name}.png", mask, kind)
    put("images/twin.png", good, "ingested")
    put("masks/twin.png", _png(zeros), "ingested")
    put("images/twin.jpg", _jpeg(noise), "duplicate_id")
    # an exact copy under another name: both kept (a warning), the batch passes
    put("images/copy-of-twin.png", good, "ingested")
    put("masks/copy-of-twin.png", _png(zeros), "ingested")
    for name, sidecar in (
        ("side-text", b"{not json"),
        ("side-deep", b"[" * 100_000 + b"]" * 100_000),
        ("side-nan", b'{"camera": NaN, "gain": Infinity}'),
        ("side-list", b'["cam-1"]'),
        ("side-latin1", '{"camera": "caméra"}'.encode("latin-1")),
    ):
        put(f"images/{name}.png", _png(rng.integers(0, 255, (64, 64), dtype=np.uint8)), "ingested")
        put(f"masks/{name}.png", _png(zeros), "ingested")
        put(f"images/{name}.json", sidecar, "bad_sidecar")
    put(f"images/{LONG}/{LONG}/{LONG}.png", _png(zeros), "bad_name")
    put("images/bell\x07\x7f.png", _png(zeros), "bad_name")
    put("images/.hidden.png", good, "skipped")
    return files, want


def _params(endpoint: str = "", **s3: object) -> Params:
    return parse_params(
        {
            "base": {"profile": "tiny"},
            "line": {
                "image_size": 64,
                "resize": "resize",
                "s3": {"endpoint_url": endpoint, "concurrency": 2, "max_attempts": 4, **s3},
            },
        }
    )


def _outcomes(m: dict[str, Any], prefix: str) -> dict[str, str]:
    """key -> quarantine kind of this run's quarantined files."""
    return {q["file"][len(prefix) :].lstrip("/"): q["kind"] for q in m["quarantined_files"]}


def _check(m: dict[str, Any], want: dict[str, str], prefix: str, data: Path) -> dict[str, Any]:
    got = _outcomes(m, prefix)
    expected_bad = {k: v for k, v in want.items() if v not in ("ingested", "skipped")}
    assert got == expected_bad
    assert m["reconciled"]
    bad_kinds = [k for k in expected_bad.values() if k not in RETRIED_KINDS]
    n_retry = sum(1 for k in expected_bad.values() if k in RETRIED_KINDS)
    assert m["quarantined"] == len(bad_kinds) and m["to_retry"] == n_retry
    assert m["ingested"] == sum(1 for v in want.values() if v == "ingested")
    assert sum(m["skipped"].values()) == sum(1 for v in want.values() if v == "skipped")
    assert m["validation"]["success"], m["validation"]["failures"]
    report = json.loads((data / "quarantine/report.json").read_text())
    assert all(e["reason"] and e["kind"] in QUARANTINE_KINDS for e in report)
    for entry in report:  # what was copied is where the report says; nothing out of the folder
        if entry["copy"]:
            assert (data / entry["copy"]).is_file(), entry
            assert (data / entry["copy"]).resolve().is_relative_to((data / "quarantine").resolve())
    df = read_manifest(data / "manifests/line.parquet")
    assert df["image_id"].is_unique
    assert all(ch.isprintable() for i in df["image_id"] for ch in i)
    listed = m["listed"]
    lost = (
        listed
        - (m["ingested"] + m["quarantined"] + m["to_retry"] + m["already_present"])
        - sum(m["skipped"].values())
    )
    return {
        "hostile_kinds": len(set(expected_bad.values())),
        "hostile_inputs": len(expected_bad),
        "listed": listed,
        "ingested": m["ingested"],
        "quarantined": m["quarantined"],
        "already_present": m["already_present"],
        "skipped": sum(m["skipped"].values()),
        "to_retry": m["to_retry"],
        "items_lost": lost,
    }


def test_a_hostile_folder_quarantines_each_bad_object_and_ingests_the_rest(
    tmp_path: Path,
) -> None:
    files, want = corpus()
    src = tmp_path / "camera"
    for key, data in files.items():
        (src / key).parent.mkdir(parents=True, exist_ok=True)
        (src / key).write_bytes(data)
    outside = tmp_path / "secret.txt"
    outside.write_text("not yours")
    os.symlink(tmp_path / "nowhere.png", src / "images/dangling.png")
    os.symlink(outside, src / "images/escape.png")
    os.symlink(src / "masks", src / "images/folder-link.png")
    os.symlink(src / "images/good-0.png", src / "images/alias.png")  # inside: followed
    os.symlink(src / "masks/good-0.png", src / "masks/alias.png")
    os.mkfifo(src / "images/pipe.png")  # would block a reader forever
    want |= {
        "images/dangling.png": "bad_link",
        "images/escape.png": "bad_link",
        "images/folder-link.png": "bad_link",
        "images/alias.png": "ingested",
        "masks/alias.png": "ingested",
        "images/pipe.png": "not_a_file",
    }
    del want["images/.hidden.png"]  # a folder's listing leaves hidden files out
    data = tmp_path / "data"
    m = ingest_batch(_params(), str(src), "original", "train", data, tmp_path / "results")
    figures = _check(m, want, str(src.absolute()), data)
    # 30+ kinds of hostile input (one case each: a mask paired with its image is one case),
    # ending in 18 quarantine kinds
    cases = [k for k, v in want.items() if v not in ("ingested", "skipped")]
    assert len([k for k in cases if not k.startswith("masks/")]) + 1 >= 30
    assert len(set(want.values()) - {"ingested", "skipped"}) >= 18
    assert not list((data / "quarantine").rglob("secret.txt"))
    assert "not yours" not in "".join(
        p.read_text(errors="ignore") for p in (data / "quarantine").rglob("*") if p.is_file()
    )
    # a rerun fetches nothing new, changes nothing and still says what waits
    again = ingest_batch(_params(), str(src), "original", "train", data, tmp_path / "results")
    assert again["reconciled"] and again["ingested"] == 0
    assert again["to_retry"] == m["to_retry"] and again["quarantined"] == m["quarantined"]
    record("ingestion/folder", {**figures, "runs": 2})


def test_a_hostile_s3_prefix_quarantines_each_bad_object_and_ingests_the_rest(
    s3_endpoint: str, tmp_path: Path
) -> None:
    files, want = corpus()
    for key in ("images/../up.png", "images/./here.png", "images//double.png"):
        files[key] = _png(np.zeros((64, 64), np.uint8))
        want[key] = "unsafe_key"
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, **aws_client_kwargs())
    s3.create_bucket(Bucket="hostile")
    for key, body in files.items():
        s3.put_object(Bucket="hostile", Key=f"cam/{key}", Body=body)
    listed = {o["Key"] for o in s3.list_objects_v2(Bucket="hostile")["Contents"]}
    assert "cam/images/../up.png" in listed  # the store keeps the key as it was written
    data = tmp_path / "data"
    params = _params(s3_endpoint)
    m = ingest_batch(params, "s3://hostile/cam", "original", "train", data, tmp_path / "r")
    figures = _check(m, want, "s3://hostile/cam", data)
    assert not (tmp_path / "up.png").exists() and not (data / "up.png").exists()
    record("ingestion/s3", {**figures, "runs": 1})


def _flaky_corpus() -> dict[str, bytes]:
    rng = np.random.default_rng(5)
    objs = {}
    for i in range(24):
        objs[f"images/p{i:02d}.png"] = _png(rng.integers(0, 255, (64, 64), np.uint8))
        if i % 3 == 0:
            objs[f"images/p{i:02d}.json"] = json.dumps({"camera": f"cam-{i}"}).encode()
    return objs


def test_a_failed_fetch_is_fetched_again_on_later_runs_until_nothing_is_left(
    s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 23, item 1: at 60% faults, botocore's max_attempts=1 and no second pass in the
    run (what is left is left to the next runs) a run leaves objects behind; each later run
    fetches them again, says how many are left, and the manifest ends equal to a clean run's:
    nothing lost, nothing twice."""
    objs = _flaky_corpus()
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, **aws_client_kwargs())
    s3.create_bucket(Bucket="flaky")
    for key, body in objs.items():
        s3.put_object(Bucket="flaky", Key=f"cam/{key}", Body=body)
    uri = "s3://flaky/cam"
    clean = ingest_batch(_params(s3_endpoint), uri, "new", "pool", tmp_path / "clean", tmp_path)
    assert clean["to_retry"] == 0 and clean["ingested"] == len(objs)
    monkeypatch.setattr(ingest_mod, "REFETCH_PASSES", 0)
    runs: list[dict[str, Any]] = []
    faults = 0
    for attempt in range(30):  # bounded; a listing that fails makes a run that does nothing
        with FaultProxy(s3_endpoint, rate=0.6, seed=attempt) as proxy:
            params = _params(proxy.url, max_attempts=1, concurrency=1)
            try:
                m = ingest_batch(params, uri, "new", "pool", tmp_path / "data", tmp_path / "r")
            except IngestError:  # the listing itself failed: the run did nothing, try again
                faults += sum(v for k, v in proxy.counts.items() if k != "forwarded")
                continue
        faults += sum(v for k, v in proxy.counts.items() if k != "forwarded")
        assert m["reconciled"]
        assert set(m["retry_kinds"]) <= {"fetch_failed"}
        runs.append(m)
        if m["to_retry"] == 0:
            break
    assert runs and runs[0]["to_retry"] > 0, "the faults never made a fetch fail"
    assert runs[-1]["to_retry"] == 0, [r["to_retry"] for r in runs]
    assert sum(r["recovered"] for r in runs) >= runs[0]["to_retry"]
    a = read_manifest(tmp_path / "clean/manifests/line.parquet")
    b = read_manifest(tmp_path / "data/manifests/line.parquet")
    pd.testing.assert_frame_equal(a.drop(columns="source_uri"), b.drop(columns="source_uri"))
    report = json.loads((tmp_path / "data/quarantine/report.json").read_text())
    assert report == []  # healed entries leave the quarantine report
    record(
        "ingestion/s3-faults",
        {
            "faults_injected": faults,
            "runs": len(runs),
            "listed": len(objs),
            "ingested": len(b) + sum(1 for k in objs if k.endswith(".json")),
            "to_retry_per_run": [r["to_retry"] for r in runs],
            "items_lost": len(a) - len(b),
        },
    )


def test_masks_that_arrive_late_are_used_and_the_cli_says_what_waits(tmp_path: Path) -> None:
    """Issue 23, item 2: an image waiting for its mask exits 3 and is ingested once the mask
    is there; a mask replaced after a bad upload is used too."""
    src = tmp_path / "camera"
    (src / "images").mkdir(parents=True)
    (src / "masks").mkdir()
    rng = np.random.default_rng(2)
    for name in ("a", "b", "c"):
        (src / f"images/{name}.png").write_bytes(_png(rng.integers(0, 255, (64, 64), np.uint8)))
    mask = np.zeros((64, 64), np.uint8)
    mask[4:12, 4:12] = 1
    (src / "masks/a.png").write_bytes(_png(mask))
    (src / "masks/c.png").write_bytes(_png(np.full((64, 64), 9, np.uint8)))  # a bad mask
    args = [
        "ingest",
        str(src),
        "--domain",
        "original",
        "--split",
        "train",
        "-p",
        str(REPO / "params.yaml"),
        "-S",
        "base.profile=tiny",
        "-S",
        "line.image_size=64",
        "--data",
        str(tmp_path / "data"),
        "--results",
        str(tmp_path / "results"),
    ]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 3, first.output
    assert "left to retry" in first.output
    m1 = json.loads((tmp_path / "results/metrics.json").read_text())
    assert m1["ingested"] == 2 and m1["to_retry"] == 1 and m1["quarantined"] == 2
    (src / "masks/b.png").write_bytes(_png(mask))  # the late mask
    (src / "masks/c.png").write_bytes(_png(mask))  # the bad mask replaced
    second = CliRunner().invoke(app, args)
    assert second.exit_code == 0, second.output
    m2 = json.loads((tmp_path / "results/metrics.json").read_text())
    assert m2["ingested"] == 4 and m2["to_retry"] == 0 and m2["quarantined"] == 0
    assert m2["already_present"] == 2 and m2["recovered"] == 3  # b, and c with its mask
    df = read_manifest(tmp_path / "data/manifests/line.parquet")
    assert sorted(df["image_id"]) == ["original-train-a", "original-train-b", "original-train-c"]
    assert (df["mask_path"] != "").all()
    assert json.loads((tmp_path / "data/quarantine/report.json").read_text()) == []
    assert not [p for p in (tmp_path / "data/quarantine").rglob("*.png")]
    third = CliRunner().invoke(app, args)
    assert third.exit_code == 0 and "0 image(s) stored" in third.output


def test_a_split_outside_the_line_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    src = tmp_path / "camera/images"
    src.mkdir(parents=True)
    (src / "a.png").write_bytes(_png(np.zeros((64, 64), np.uint8)))
    data = tmp_path / "data"
    for split in ("../../outside", "training", ""):
        with pytest.raises(IngestError, match="is not a split of the line"):
            ingest_batch(_params(), str(src.parent), "new", split, data, tmp_path / "r")
    assert not data.exists() and not (tmp_path / "outside").exists()


def test_the_docs_list_every_quarantine_kind_and_whether_it_is_retried() -> None:
    text = (REPO / "docs/ingestion.md").read_text()
    table = text.split("### The quarantine kinds", 1)[1].split("\n\n", 2)[1]
    rows = {}
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        for kind in cells[0].replace("`", "").split(","):
            rows[kind.strip()] = cells[2]
    assert set(rows) == set(QUARANTINE_KINDS)
    for kind, retried in rows.items():
        assert (retried != "no") == (kind in RETRIED_KINDS) or retried.startswith("when"), kind
    assert all(rows[k].startswith(("every run", "as soon as")) for k in RETRIED_KINDS)
