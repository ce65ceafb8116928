"""benchmarks/serving.py at a tiny size: it really serves the logged model and measures it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def test_serving_benchmark_tiny(tmp_path: Path) -> None:
    out = tmp_path / "serving.json"
    args = ["--requests", "2", "--batches", "1,2", "--image-size", "32", "--out", str(out)]
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks/serving.py"), *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    assert result["image_size"] == 32 and set(result["batches"]) == {"1", "2"}
    for b, r in result["batches"].items():
        # the served answer is the in-process graph's
        assert r["max_abs_diff_vs_in_process"] <= 1e-5, b
        assert r["served_p95_ms"] >= r["served_p50_ms"] > 0
        assert r["served_over_in_process"] == pytest.approx(
            r["served_images_per_s"] / r["in_process_images_per_s"]
        )
    assert result["batches"]["2"]["request_bytes"] > result["batches"]["1"]["request_bytes"]


def test_kserve_manifest_serves_the_champion_in_mlflow_format() -> None:
    doc = yaml.safe_load((REPO / "docker/kserve-champion.yaml").read_text())
    assert doc["apiVersion"] == "serving.kserve.io/v1beta1"
    assert doc["kind"] == "InferenceService"
    model = doc["spec"]["predictor"]["model"]
    assert model["modelFormat"]["name"] == "mlflow"
    assert model["protocolVersion"] == "v2"
    assert model["storageUri"].startswith("s3://")
