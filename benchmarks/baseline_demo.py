"""Benchmark: the demo profile's baseline, end to end, against the foundation targets.

Generates the ``demo`` line, trains the baseline and evaluates it, timing each stage, and checks:

- original-domain mAP >= 0.75;
- new-domain mAP at least 0.15 below it;
- new-domain precision@0.5 clearly below the original's (new false positives), and misses on new;
- generation + training + evaluation <= 300 s on this machine.

Writes ``benchmarks/results/baseline_demo.json``. Run: ``make bench`` or
``python benchmarks/baseline_demo.py [--params params.yaml] [--workdir DIR]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from mentoring.config import load_params
from mentoring.io import write_json
from mentoring.stages import evaluate, line, train_baseline

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=Path, default=HERE.parent / "params.yaml")
    ap.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "baseline_demo.json")
    ap.add_argument("--profile", default="demo", help="line profile (tiny: the benchmark's test)")
    args = ap.parse_args()
    params = load_params(args.params, {"base.profile": args.profile})
    with tempfile.TemporaryDirectory() as tmp:
        wd = args.workdir or Path(tmp)
        t0 = time.perf_counter()
        line.run(params, wd / "data", wd / "results/line")
        t1 = time.perf_counter()
        manifest = wd / "data/manifests/line.parquet"
        train_baseline.run(
            params,
            manifest,
            wd / "models/baseline.pt",
            wd / "results/train_baseline",
            checkpoint=None,
            show_progress=False,
        )
        t2 = time.perf_counter()
        m = evaluate.run(
            params,
            manifest,
            wd / "models/baseline.pt",
            wd / "results/evaluate_baseline",
            "baseline",
        )
        t3 = time.perf_counter()
    orig, new = m["domains"]["original"], m["domains"]["new"]
    seconds = {"generate": t1 - t0, "train": t2 - t1, "evaluate": t3 - t2, "total": t3 - t0}
    targets = {
        "original_map_ge_0.75": orig["map"] >= 0.75,
        "new_map_at_least_0.15_lower": orig["map"] - new["map"] >= 0.15,
        "new_precision_clearly_lower": new["precision"] <= 0.75 * orig["precision"],
        "misses_on_new": new["recall"] < 0.9 and new["escape_rate"] > 0,
        "total_le_300s": seconds["total"] <= 300,
    }
    summary = {
        "benchmark": "baseline_demo",
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "threads": params.base.num_threads,
        },
        "profile": params.base.profile,
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
        "metrics": {
            d: {k: v for k, v in mm.items() if k != "per_class"} for d, mm in m["domains"].items()
        },
        "ap_per_class": {
            d: {c: v["ap"] for c, v in mm["per_class"].items()} for d, mm in m["domains"].items()
        },
        "targets": targets,
        "all_targets_met": all(targets.values()),
    }
    write_json(args.out, summary)
    print(json.dumps({"seconds": summary["seconds"], "targets": targets}, indent=2))
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
