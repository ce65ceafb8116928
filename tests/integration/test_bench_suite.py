"""The older benchmarks at a tiny size: each runs for real and its JSON holds what it says it
measures (ratios of the figures it reports, the targets it checks); never their timings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _bench(name: str, out: Path, *args: str, cwd: Path | None = None, timeout: int = 900) -> dict:
    env = {**os.environ}
    if cwd is not None:  # an MLflow store of the test's own
        env["MLFLOW_TRACKING_URI"] = f"sqlite:///{cwd / 'mlflow.db'}"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / name), *args, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text())


def test_train_step_benchmark_tiny(tmp_path: Path) -> None:
    r = _bench("train_step.py", tmp_path / "t.json", "--reps", "1", "--steps", "1")
    med, ips, ratios = r["seconds_per_step_median"], r["images_per_s_median"], r["ratios"]
    assert ratios["masked_over_plain"] == pytest.approx(med["masked"] / med["plain"])
    assert ratios["dann_over_plain"] == pytest.approx(med["dann"] / med["plain"])
    store = max(ips["store_0_threads"], ips["store_2_threads"])
    assert ratios["store_over_in_memory"] == pytest.approx(store / ips["in_memory"])
    assert r["paper_epoch_seconds"]["real_source"] == pytest.approx(21_000 / ips["real_source"])
    assert r["all_targets_met"] == all(r["targets"].values())


def test_tracking_benchmark_tiny(tmp_path: Path) -> None:
    r = _bench("tracking.py", tmp_path / "t.json", "--reps", "1")
    assert r["epoch_log_ratio"] == pytest.approx(r["epoch_log_s"] / r["estimated_demo_epoch_s"])
    assert r["log_model_ratio"] == pytest.approx(r["log_model_s"] / r["demo_baseline_train_s"])
    assert r["log_model_s"] > 0 and r["epoch_log_s"] > 0


def test_baseline_benchmark_tiny(tmp_path: Path) -> None:
    r = _bench("baseline_demo.py", tmp_path / "b.json", "--profile", "tiny", cwd=tmp_path)
    s = r["seconds"]
    assert r["profile"] == "tiny"
    assert s["total"] == pytest.approx(s["generate"] + s["train"] + s["evaluate"], abs=0.05)
    assert set(r["metrics"]) == {"original", "new"}
    assert r["targets"]["total_le_300s"] == (s["total"] <= 300)
    assert r["all_targets_met"] == all(r["targets"].values())


@pytest.mark.browser
def test_annotate_benchmark_quick(tmp_path: Path) -> None:
    r = _bench("annotate.py", tmp_path / "a.json", "--quick", "--operators", "1")
    case = r["cases"]["1"]
    ops = case["per_operator"]
    assert len(ops) == 1 and ops[0]["areas_acknowledged"] > 0
    assert case["a_next_area_ms"]["n"] > 0 and case["c_verdict_server_ms"]["n"] > 0
    assert r["all_targets_met"] == all(all(c["pass"].values()) for c in r["cases"].values())
    p95, target = case["a_next_area_ms"]["p95"], r["targets"]["a_next_area_p95_ms"]
    assert case["pass"]["a_next_area_p95"] == (p95 <= target)


@pytest.mark.slow
def test_ingest_benchmark_quick(tmp_path: Path) -> None:
    r = _bench("ingest.py", tmp_path / "i.json", "--quick")
    mem = r["memory"]
    assert mem["ratio_10n_over_n"] == pytest.approx(
        mem["peak_rss_mb"]["10n"] / mem["peak_rss_mb"]["n"]
    )
    assert r["quick"] is True and r["throughput"]
    assert r["all_targets_met"] == all(r["targets"].values())
