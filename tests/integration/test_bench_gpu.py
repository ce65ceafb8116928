"""benchmarks/gpu.py: without CUDA it refuses with the reason; on the CPU (its tiny run) it
measures training at both precisions, mining, the FLOPs and the projection it reports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
SCRIPT = str(REPO / "benchmarks/gpu.py")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is here: the benchmark would run")
def test_without_cuda_it_says_so_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    proc = subprocess.run(
        [sys.executable, SCRIPT, "--out", str(out)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 2 and "no CUDA device" in proc.stderr
    assert not out.exists()


def _tiny(tmp_path: Path, *extra: str) -> dict:
    out = tmp_path / "gpu.json"
    args = ["--device", "cpu", "--steps", "1", "--warmup", "1", "--matmul", "256",
            "--batch", "4", "--out", str(out), *extra]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, SCRIPT, *args], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(out.read_text())


def test_gpu_benchmark_tiny_on_cpu(tmp_path: Path) -> None:
    r = _tiny(tmp_path, "--fused")
    f = r["flops_per_image"]
    assert 1e8 < f["forward"] < 1e9  # the default segmenter at 128 x 128: ~0.16 GFLOP
    assert 2 * f["forward"] < f["train_step"] < 4 * f["forward"]  # backward ~ 2 forwards
    t = r["training_images_per_s"]
    assert set(t) == {"fp32", "bf16"} and all(v > 0 for v in t.values())
    assert r["bf16_over_fp32"] == pytest.approx(t["bf16"] / t["fp32"])
    peak = r["matmul_tflops"]["bf16"]
    assert r["fraction_of_bf16_peak"]["training_bf16"] == pytest.approx(
        t["bf16"] * f["train_step"] / 1e12 / peak
    )
    paper = r["paper_retraining"]
    assert paper["hours_bf16"] == pytest.approx(33_000 * 200 / t["bf16"] / 3600)
    assert r["mining_images_per_s_bf16"] > 0 and r["train_batch"] == 4
    v, ratio = r["variants_images_per_s"], r["variants_over_default"]
    assert set(v) == {"training_fused_adam_fp32", "training_fused_adam_bf16"}
    assert ratio["training_fused_adam_bf16"] == pytest.approx(
        v["training_fused_adam_bf16"] / t["bf16"]
    )


@pytest.mark.slow
def test_gpu_benchmark_compiled_variant_on_cpu(tmp_path: Path) -> None:
    r = _tiny(tmp_path, "--compile")
    v, ratio = r["variants_images_per_s"], r["variants_over_default"]
    assert set(v) == {"training_compiled_fp32", "training_compiled_bf16", "mining_compiled_bf16"}
    assert all(x > 0 for x in v.values())
    assert ratio["mining_compiled_bf16"] == pytest.approx(
        v["mining_compiled_bf16"] / r["mining_images_per_s_bf16"]
    )


def test_gpu_benchmark_measures_the_model_the_params_name(tmp_path: Path) -> None:
    """-S model.width=8 measures a segmenter half as wide: about a quarter of the FLOPs."""
    r = _tiny(tmp_path, "-S", "model.width=8")
    assert r["model"]["width"] == 8 and r["overrides"] == {"model.width": 8}
    assert 1e7 < r["flops_per_image"]["forward"] < 0.5e8
