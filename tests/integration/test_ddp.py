"""``train.nproc`` > 1: ``mentoring train`` re-executes itself under torchrun (two gloo processes
on CPU) and trains the model one process trains, within float tolerance.

Tolerances: the two runs compute the same gradients up to the order of float sums (checked to
~1e-6 by tests/unit/training/test_distributed.py), but Adam's first steps divide by sqrt(v) and
so amplify the rounding of near-zero gradients: the same single-process run on 1 vs 2 CPU threads
already ends 2 epochs with weights 3.5e-3 apart. So the first epoch's loss (one update in) must
agree to 1e-5, the final loss to 5e-3 (relative), and the weights to 2e-2 (max abs, weights of
order 0.05 to 1) and 1e-2 (relative L2 norm).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import torch

from mentoring.config import load_params
from mentoring.stages import line, train_baseline
from tests.integration.test_baseline_cli import CLI, REPO

EPOCHS = 2
SETS = {"base.profile": "tiny", "base.num_threads": 1, "train_baseline.epochs": EPOCHS}
CLI_SETS = [a for k, v in SETS.items() for a in ("-S", f"{k}={v}")]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    wd = tmp_path_factory.mktemp("ddp")
    (wd / "params.yaml").write_text((REPO / "params.yaml").read_text())
    line.run(load_params(wd / "params.yaml", SETS), wd / "data", wd / "results/line")
    return wd


def _ddp(wd: Path, *extra: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """``mentoring train`` with nproc=2 (it launches torchrun itself), its own MLflow store."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{wd / 'ddp-mlflow.db'}"}
    env.pop("WORLD_SIZE", None)
    args = [CLI, "train", *CLI_SETS, "-S", "train_baseline.nproc=2"]
    paths = ["--model", "models/two.pt", "--results", "results/two", "--checkpoint", "ck.pt"]
    t0 = time.perf_counter()
    proc = subprocess.run(
        [*args, *paths, *extra], cwd=wd, env=env, capture_output=True, text=True, timeout=300
    )
    seconds = time.perf_counter() - t0
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    return proc, seconds


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


def _history(wd: Path, name: str) -> list[dict[str, float]]:
    return json.loads((wd / "results" / name / "history.json").read_text())


def _tracked(wd: Path) -> tuple[int, list[int]]:
    """(variant runs of the baseline, steps of its train.loss history) in the DDP runs' store."""
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{wd / 'ddp-mlflow.db'}")
    exps = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(exps, "tags.variant = 'baseline'")
    steps = [m.step for r in runs for m in client.get_metric_history(r.info.run_id, "train.loss")]
    return len(runs), sorted(steps)


def test_two_processes_train_the_single_process_model(workdir: Path) -> None:
    wd = workdir
    # one process, in this process: the reference (and a checkpoint the DDP run must not resume)
    t0 = time.perf_counter()
    train_baseline.run(
        load_params(wd / "params.yaml", SETS),
        wd / "data/manifests/line.parquet",
        wd / "models/one.pt",
        wd / "results/one",
        wd / "ck.pt",
        show_progress=False,
        track=False,
    )
    one_s = time.perf_counter() - t0

    # two processes, through the CLI; --no-resume: rank 0 removes the finished checkpoint that
    # every rank would otherwise resume (nproc is not part of its fingerprint)
    proc, two_s = _ddp(wd, "--no-resume")
    assert proc.stdout.count(f"baseline: {EPOCHS} epochs") == 1, proc.stdout  # rank 0 only
    one, two = _history(wd, "one"), _history(wd, "two")
    assert [h["epoch"] for h in two] == list(range(1, EPOCHS + 1))
    assert [h["seconds"] for h in two] != [h["seconds"] for h in one]  # trained, not resumed
    # Not bit-exact, and by how much depends on the processor: the first epoch's loss is the
    # mean of 2 steps (tiny: 48 images, batch 32). Step 1 starts from the same weights, but its
    # loss is a float32 mean over B*C*h*w = 32*6*16*16 = 49152 terms, summed per rank (16
    # images each, with the convolution blocking oneDNN picks for that shape and CPU) and then
    # across ranks, instead of in one sum: the rounding of a sum of n terms is at most n*u
    # (u = 2**-24 = 6e-8, float32's unit roundoff) = 3e-3 relative, typically sqrt(n)*u =
    # 1.3e-5, the difference one x86-64 machine showed (0.0151503 vs 0.0151505). Step 2 starts
    # from weights updated by the all-reduced gradient (another summation order), and Adam's
    # first update g/(|g|+eps) amplifies relative changes of the small gradient entries. So
    # 1e-3: 75x the typical rounding, under the worst-case bound, and far below what a DDP bug
    # gives (a rank's shard missing or counted twice changes the data of the mean: > 1e-2).
    assert two[0]["loss"] == pytest.approx(one[0]["loss"], rel=1e-3)
    # after EPOCHS epochs those differences have gone through every later step
    assert two[-1]["loss"] == pytest.approx(one[-1]["loss"], rel=5e-3)
    metrics = json.loads((wd / "results/two/metrics.json").read_text())
    assert metrics["epochs"] == EPOCHS and metrics["final_loss"] == two[-1]["loss"]
    a, b = _weights(wd / "models/one.pt"), _weights(wd / "models/two.pt")
    assert a.keys() == b.keys()
    assert not all(torch.equal(a[k], b[k]) for k in a)  # really another run
    floats = [k for k in a if a[k].is_floating_point()]
    max_abs = max(float((a[k] - b[k]).abs().max()) for k in floats)
    rel_l2 = float(
        torch.cat([(a[k] - b[k]).flatten() for k in floats]).norm()
        / torch.cat([a[k].flatten() for k in floats]).norm()
    )
    assert max_abs < 2e-2 and rel_l2 < 1e-2, (max_abs, rel_l2)
    # one writer: one model, history and metrics (no stray temporary file), one MLflow run
    # holding each epoch once
    written = sorted(p.name for p in (wd / "results/two").iterdir())
    assert written == ["history.json", "metrics.json", "mlflow.json", "plots"], written
    assert _tracked(wd) == (1, list(range(1, EPOCHS + 1)))

    # a finished DDP run resumes at once on every rank: same weights, nothing logged twice
    _, resume_s = _ddp(wd)
    assert _history(wd, "two") == two
    again = _weights(wd / "models/two.pt")
    assert all(torch.equal(again[k], b[k]) for k in b)
    assert _tracked(wd) == (1, list(range(1, EPOCHS + 1)))
    print(
        f"\nnproc=1: {one_s:.1f} s in-process ({sum(h['seconds'] for h in one):.1f} s training); "
        f"nproc=2: {two_s:.1f} s with the launch ({sum(h['seconds'] for h in two):.1f} s "
        f"training); resume: {resume_s:.1f} s; weights max abs diff {max_abs:.2e}, "
        f"rel L2 {rel_l2:.2e}; final loss {one[-1]['loss']:.6f} vs {two[-1]['loss']:.6f}"
    )


def test_batch_size_not_divisible_by_nproc_is_named_before_launch(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from mentoring.cli import app

    monkeypatch.chdir(workdir)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    result = CliRunner().invoke(app, ["train", *CLI_SETS, "-S", "train_baseline.nproc=3"])
    assert result.exit_code == 2
    assert "train.batch_size" in result.output and "nproc" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
