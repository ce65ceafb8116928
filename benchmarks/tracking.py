"""Benchmark: what MLflow tracking adds to a training stage (embedded sqlite store, CPU).

Measures, on the default segmenter and the demo profile's epoch size:

- opening the tracker (reachability check, experiment, parent run lookup) on an existing store;
- logging one epoch's metrics (the per-epoch callback) against one training epoch of the demo
  baseline, estimated from a timed training step: target ratio <= 0.01;
- logging the model (PyTorch flavour, signature, input example, explicit pip requirements)
  against the demo baseline's training time (from ``benchmarks/results/baseline_demo.json``
  when present, else 20 estimated epochs): target ratio <= 0.02.

Each is the median of ``--reps`` repetitions. Writes ``benchmarks/results/tracking.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from mentoring.config import Params
from mentoring.io import write_json
from mentoring.losses import supervised_bce
from mentoring.models.segmenter import Segmenter
from mentoring.tracking import Tracker
from mentoring.training.outputs import model_arch

HERE = Path(__file__).resolve().parent


def _median(fn: object, reps: int) -> float:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5, help="repetitions per measure")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "tracking.json")
    args = ap.parse_args()
    base = Params()
    torch.set_num_threads(base.base.num_threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        manifest = tmp_path / "manifest.parquet"
        manifest.write_bytes(b"stand-in manifest: only its hash is read")
        params = base.model_copy(
            update={
                "tracking": base.tracking.model_copy(
                    update={"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}
                )
            }
        )
        import os

        os.environ.pop("MLFLOW_TRACKING_URI", None)
        Tracker.open(params, manifest)  # creates the store (one-off, not measured)
        t_open = _median(lambda: Tracker.open(params, manifest), args.reps)
        tracker = Tracker.open(params, manifest)
        run_id = tracker.variant_run("bench")
        hist = [SimpleNamespace(epoch=1, loss=0.1, images_per_s=100.0, seconds=1.0, parts={})]
        log_epoch = tracker.epoch_logger(run_id)
        t_epoch_log = _median(lambda: log_epoch(hist), args.reps)

        # one training step of the default model and batch -> one demo epoch
        model = Segmenter(**model_arch(params))
        opt = torch.optim.Adam(model.parameters())
        bs, size = params.train_baseline.batch_size, params.line.image_size
        images = torch.rand(bs, 1, size, size)
        targets = (torch.rand(bs, 6, size // 8, size // 8) < 0.01).float()

        def step() -> None:
            opt.zero_grad()
            supervised_bce(model(images), targets).backward()
            opt.step()

        step()
        t_step = _median(step, args.reps)
        steps_per_epoch = params.sizes.original_train / bs
        t_epoch = t_step * steps_per_epoch
        t_log_model = _median(
            lambda: tracker.log_model(
                run_id, model, params.line.classes, (1, size, size), tags={"bench": 1}
            ),
            args.reps,
        )
    demo = HERE / "results" / "baseline_demo.json"
    train_s = (
        float(json.loads(demo.read_text())["seconds"]["train"]) if demo.exists() else 0.0
    ) or t_epoch * params.train_baseline.epochs
    result = {
        "tracker_open_s": t_open,
        "epoch_log_s": t_epoch_log,
        "estimated_demo_epoch_s": t_epoch,
        "epoch_log_ratio": t_epoch_log / t_epoch,
        "epoch_log_target": 0.01,
        "log_model_s": t_log_model,
        "demo_baseline_train_s": train_s,
        "log_model_ratio": t_log_model / train_s,
        "log_model_target": 0.02,
        "reps": args.reps,
        "torch_threads": torch.get_num_threads(),
    }
    result["pass"] = bool(
        result["epoch_log_ratio"] <= result["epoch_log_target"]
        and result["log_model_ratio"] <= result["log_model_target"]
    )
    write_json(args.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
