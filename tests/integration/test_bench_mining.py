"""benchmarks/mining.py at a tiny size: it measures the stage, the bare forward, RSS and FLOPs."""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


def _trained_stand_in(path: Path) -> Path:
    """A model file as a trained one is saved, whose weights detect almost nothing (a very low
    prior): the realistic case's path, without a training in the test."""
    from mentoring.config import load_params
    from mentoring.models.segmenter import Segmenter
    from mentoring.models.store import save_model
    from mentoring.training.outputs import model_arch

    p = load_params(REPO / "params.yaml", {"model.prior": 0.001})
    torch.manual_seed(0)
    save_model(path, Segmenter(**model_arch(p)).eval(), model_arch(p), p.line.classes)
    return path


def _check_memory(m: dict[str, Any]) -> None:
    """Two runs of each size; the ratio is of the median peaks, every run's peak is kept."""
    runs = m["peak_rss_mib_runs"]
    assert set(runs) == {"small", "large"} and all(len(v) == 2 for v in runs.values())
    for size, peaks in runs.items():
        assert m["peak_rss_mib"][size] == pytest.approx(statistics.median(peaks))
        assert m["spread_mib"][size] == pytest.approx(max(peaks) - min(peaks))
    assert m["large_over_small"] == pytest.approx(
        m["peak_rss_mib"]["large"] / m["peak_rss_mib"]["small"]
    )
    # within each large run: a peak per tenth of its images, none above the process's peak
    # (a tiny run is one batch: the tenths between its start and its end have no sample)
    tenths = m["large_rss_by_tenth_mib"]
    assert len(tenths) == 2 and all(len(t) == 10 for t in tenths)
    for t, peak in zip(tenths, runs["large"], strict=True):
        assert t[0] is not None and t[9] is not None  # before the first batch, after the last
        assert all(100 < v <= peak + 1 for v in t if v is not None)  # MiB, torch loaded
    growth = [max(v for v in t[1:] if v is not None) / t[0] for t in tenths]
    assert m["large_within_run"] == pytest.approx(statistics.median(growth))


def test_mining_benchmark_tiny(tmp_path: Path) -> None:
    out = tmp_path / "mining.json"
    model = _trained_stand_in(tmp_path / "trained.pt")
    args = ["--pool", "16", "--factor", "2", "--reps", "1", "--workers", "0,2", "--out", str(out)]
    args += ["--mem-reps", "2"]
    args += ["--model", str(model)]
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
    for case in (t, r["throughput_trained"]):  # decoding alone, and the bound it sets
        d, b = case["decode_images_per_s"], case["bare_forward_images_per_s"]
        assert d > 0 and case["decode_bound_over_bare"] == pytest.approx(d / (d + b))
        # CPU seconds per wall second of the forward: at most the machine's cores (+ noise)
        assert 0 < case["bare_forward_cores_busy"] <= (os.cpu_count() or 1) + 0.5
    # the large run mined twice the images, every one of them (worst case: areas everywhere)
    assert m["images"] == {"small": 16, "large": 32}
    assert m["mined"]["small"]["n_mined"] == 16 and m["mined"]["large"]["n_mined"] == 32
    _check_memory(m)
    assert m["peak_rss_mib"]["small"] > 100  # a real process with torch loaded, in MiB
    # the steady rate: the 16 extra images of the large run over its extra seconds
    # (NaN when the noise of a tiny run made the large one no slower: no rate to give)
    extra = m["mined"]["large"]["seconds"] - m["mined"]["small"]["seconds"]
    if extra > 0:
        assert m["marginal_images_per_s"] == pytest.approx(16 / extra)
        assert m["marginal_over_bare"] == pytest.approx(
            m["marginal_images_per_s"] / t["bare_forward_images_per_s"]
        )
    else:
        assert math.isnan(m["marginal_images_per_s"]) and math.isnan(m["marginal_over_bare"])
    # the default segmenter at 128 x 128: about 0.16 GFLOPs per image
    assert 1e8 < lim["flops_per_image"] < 1e9
    assert 0 < lim["bare_forward_fraction_of_peak"] <= 1.5
    e = r["evaluation_memory"]
    assert e["new_eval_images"] == {"small": 16, "large": 32} and e["original_eval_images"] == 2
    _check_memory(e)
    assert all(0 <= run["new_map"] <= 1 for run in e["runs"].values())
    assert set(r["pass"]) == {"throughput", "memory", "evaluation_memory", "throughput_trained"}
    # the realistic case: the given model on the same 16 images, at the params' own threshold
    tt = r["throughput_trained"]
    assert tt["model"] == str(model) and tt["threshold"] == 0.5
    assert set(tt["stage_images_per_s"]) == {"0", "2"}
    for w, v in tt["stage_images_per_s"].items():
        assert tt["stage_over_bare"][w] == pytest.approx(v / tt["bare_forward_images_per_s"])
    # a prior of 0.001 detects far fewer areas than the worst case's 0.3 (about 25 an image)
    assert tt["areas_per_image"] == pytest.approx(tt["n_areas"] / 16)
    assert tt["n_areas"] < m["mined"]["small"]["n_areas"]


def test_mining_benchmark_names_a_missing_model(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks/mining.py"), "--model", str(tmp_path / "no.pt")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "no.pt: no such file" in proc.stderr


def test_mining_benchmark_refuses_zero_memory_runs() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks/mining.py"), "--mem-reps", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "--mem-reps 0" in proc.stderr
