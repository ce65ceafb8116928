"""The GPU path on a real CUDA device: a tiny training, mining and evaluation, against CPU.

Skipped, with the reason, where torch sees no CUDA device (this repository's CI machines);
`make test-gpu` runs it on a GPU node. CPU runs are bit-exact; GPU runs agree within tolerance
(cuDNN picks its algorithms, bf16 autocast rounds).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mentoring.config import load_params
from mentoring.stages import evaluate, line, mine, train_baseline

REPO = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device visible to torch"),
]

TINY = {"base.profile": "tiny", "train_baseline.epochs": 3, "evaluate.n_examples": 0,
        "mine.threshold": 0.05}  # fmt: skip


@pytest.fixture(scope="module")
def tiny_line(tmp_path_factory: pytest.TempPathFactory) -> Path:
    wd = tmp_path_factory.mktemp("gpu-line")
    line.run(load_params(REPO / "params.yaml", TINY), wd / "data", wd / "results/line")
    return wd


@pytest.mark.parametrize(("precision", "tol"), [("fp32", 0.02), ("bf16", 0.08)])
def test_cuda_trains_mines_and_evaluates_like_cpu(
    tiny_line: Path, tmp_path: Path, precision: str, tol: float
) -> None:
    manifest = tiny_line / "data/manifests/line.parquet"
    out = {}
    for device in ("cpu", "cuda"):
        extra = {"base.device": device}
        if device == "cuda":
            extra |= {"base.precision": precision, "base.channels_last": True}
        p = load_params(REPO / "params.yaml", {**TINY, **extra})
        d = tmp_path / device
        train_baseline.run(p, manifest, d / "model.pt", d / "train", show_progress=False,
                           track=False)  # fmt: skip
        hist = json.loads((d / "train/history.json").read_text())
        ev = evaluate.run(p, manifest, d / "model.pt", d / "eval", "baseline", track=False)
        m = mine.run(p, manifest, d / "model.pt", d / "tasks.json", d / "mine")
        out[device] = (hist[-1]["loss"], ev["domains"], m["n_mined"])
    (cpu_loss, cpu_ev, cpu_mined), (gpu_loss, gpu_ev, gpu_mined) = out["cpu"], out["cuda"]
    assert gpu_loss == pytest.approx(cpu_loss, rel=tol)
    for domain in ("original", "new"):
        assert gpu_ev[domain]["map"] == pytest.approx(cpu_ev[domain]["map"], abs=tol)
    assert abs(gpu_mined - cpu_mined) <= max(2, int(tol * cpu_mined))
