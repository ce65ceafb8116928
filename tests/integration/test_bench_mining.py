"""benchmarks/mining.py at a tiny size: it measures the stage, the bare forward, RSS and FLOPs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_mining_benchmark_tiny(tmp_path: Path) -> None:
    out = tmp_path / "mining.json"
    args = ["--pool", "16", "--factor", "2", "--reps", "1", "--workers", "0,2", "--out", str(out)]
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks/mining.py"), *args],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    r = json.loads(out.read_text())
    t, m, lim = r["throughput"], r["memory"], r["limit"]
    assert set(t["stage_images_per_s"]) == {"0", "2"} and r["device"] == "cpu"
    for w, v in t["stage_images_per_s"].items():
        assert t["stage_over_bare"][w] == pytest.approx(v / t["bare_forward_images_per_s"])
    # the large run mined twice the images, every one of them (worst case: areas everywhere)
    assert m["images"] == {"small": 16, "large": 32}
    assert m["mined"]["small"]["n_mined"] == 16 and m["mined"]["large"]["n_mined"] == 32
    assert m["large_over_small"] == pytest.approx(
        m["peak_rss_mib"]["large"] / m["peak_rss_mib"]["small"]
    )
    assert m["peak_rss_mib"]["small"] > 100  # a real process with torch loaded, in MiB
    # the default segmenter at 128 x 128: about 0.16 GFLOPs per image
    assert 1e8 < lim["flops_per_image"] < 1e9
    assert 0 < lim["bare_forward_fraction_of_peak"] <= 1.5
    e = r["evaluation_memory"]
    assert e["new_eval_images"] == {"small": 16, "large": 32} and e["original_eval_images"] == 2
    assert e["large_over_small"] == pytest.approx(
        e["peak_rss_mib"]["large"] / e["peak_rss_mib"]["small"]
    )
    assert all(0 <= run["new_map"] <= 1 for run in e["runs"].values())
    assert set(r["pass"]) == {"throughput", "memory", "evaluation_memory"}
