"""Benchmark: the pipeline's own overhead: a no-op `dvc repro`, and `make demo` from a clone.

1. **No-op `dvc repro`**: in a fresh clone of this repository (``HEAD``) whose ``params.yaml``
   is set to the ``tiny`` profile (and ``--epochs``), the whole pipeline runs once with
   `dvc repro`; then `dvc repro` with nothing changed is timed ``--reps`` times. Target: the
   median <= 5 s (it checks every stage's dependencies and outputs, and runs none).
   With ``--profile paper`` the first repro is the paper's sizes (21,000 / 3,000 / 12,000 /
   4,000 images, ``--epochs`` cut for a CPU) and its per-stage peak RSS is what to read.
2. **`make demo` from a fresh clone** (``--demo``): install included (a new ``.venv`` from the
   package index or the local wheel cache), on the embedded defaults. Target <= 15 min on
   2 cores.

Both runs time each stage from `dvc repro`'s "Running stage" lines as they stream, and sample
the resident memory of the whole process tree every 0.25 s, so the JSON says where the time
and the memory go. The clone uses this checkout's virtual environment for part 1 (its
``dvc`` and ``mentoring``), and builds its own for part 2. Writes
``benchmarks/results/pipeline.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
STAGE = re.compile(r"Running stage '([^']+)'")


def _clone(dest: Path) -> Path:
    subprocess.run(["git", "clone", "-q", str(REPO), str(dest)], check=True, timeout=300)
    return dest


class _RssSampler(threading.Thread):
    """Samples the resident memory of a process and all its descendants every ``period`` s;
    keeps the highest sum seen per label (the DVC stage running at the time)."""

    def __init__(self, pid: int, period: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.root, self.period = psutil.Process(pid), period
        self.label = ""
        self.peak: dict[str, float] = {}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.period):
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            total = 0
            for p in procs:
                try:
                    total += p.memory_info().rss
                except psutil.NoSuchProcess:
                    continue
            mib = total / 2**20
            if mib > self.peak.get(self.label, 0.0):
                self.peak[self.label] = mib


def timed_run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float) -> dict[str, object]:
    """Run ``cmd``, streaming its output; return its wall time and each DVC stage's, and each
    stage's peak resident memory (its process tree, sampled every 0.25 s)."""
    t0 = time.perf_counter()
    stages: dict[str, float] = {}
    current: tuple[str, float] | None = None
    tail: list[str] = []
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    sampler = _RssSampler(proc.pid)
    sampler.start()
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            tail = [*tail[-40:], line]
            m = STAGE.search(line)
            if m:
                now = time.perf_counter()
                if current is not None:
                    stages[current[0]] = now - current[1]
                current = (m.group(1), now)
                sampler.label = m.group(1)
            if time.perf_counter() - t0 > timeout:
                proc.kill()
                raise TimeoutError(f"{' '.join(cmd)}: still running after {timeout:.0f} s")
        rc = proc.wait()
    finally:
        sampler.done.set()
        sampler.join()
    seconds = time.perf_counter() - t0
    if current is not None:
        stages[current[0]] = time.perf_counter() - current[1]
    if rc != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({rc}):\n{''.join(tail)}")
    peak = {k: v for k, v in sampler.peak.items() if k in stages}
    return {"seconds": seconds, "stages": stages, "peak_rss_mib": peak}


def tiny_params(clone: Path, epochs: int, profile: str = "tiny") -> None:
    """The clone's params.yaml on ``profile``, every training at ``epochs`` epochs."""
    path = clone / "params.yaml"
    p = yaml.safe_load(path.read_text())
    p["base"]["profile"] = profile
    p["train_baseline"]["epochs"] = epochs
    p["train"]["epochs"] = epochs
    # a model of a few epochs detects little at 0.5: mine at 0.01 so that every stage has work
    # (the pipeline's overhead and memory are measured, not the model)
    p["mine"]["threshold"] = 0.01
    path.write_text(yaml.safe_dump(p, sort_keys=False))


def noop_repro(work: Path, epochs: int, reps: int, profile: str = "tiny") -> dict[str, object]:
    clone = _clone(work / "noop")
    tiny_params(clone, epochs, profile)
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    dvc = str(Path(bin_dir) / "dvc")
    first = timed_run([dvc, "repro"], clone, env, 12 * 3600)
    runs = []
    for _ in range(reps):
        r = timed_run([dvc, "repro"], clone, env, 600)
        if r["stages"]:
            raise RuntimeError(f"a repro with nothing changed ran stages: {r['stages']}")
        runs.append(float(r["seconds"]))  # type: ignore[arg-type]
    median = statistics.median(runs)
    return {
        "profile": profile,
        "epochs": epochs,
        "first_repro": first,
        "noop_seconds": runs,
        "noop_median_s": median,
        "target_s": 5.0,
        "pass": median <= 5.0,
    }


def demo(work: Path) -> dict[str, object]:
    clone = _clone(work / "demo")
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "MLFLOW_TRACKING_URI")}
    r = timed_run(["make", "demo"], clone, env, 3 * 3600)
    stages = r["stages"]
    assert isinstance(stages, dict)
    seconds = float(r["seconds"])  # type: ignore[arg-type]
    return {
        "seconds": seconds,
        "install_and_setup_s": seconds - sum(stages.values()),
        "stages": stages,
        "target_s": 900.0,
        "pass": seconds <= 900.0,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=2, help="epochs of every training (tiny run)")
    ap.add_argument("--reps", type=int, default=3, help="timed no-op repros")
    ap.add_argument(
        "--profile",
        default="tiny",
        help="line profile of the first repro (paper: 21k/3k/12k/4k images, its stages' RSS)",
    )
    ap.add_argument("--demo", action="store_true", help="also time `make demo` from a clone")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "pipeline.json")
    args = ap.parse_args(argv)
    from mentoring.io import write_json

    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        result: dict[str, object] = {
            "noop_repro": noop_repro(Path(tmp), args.epochs, args.reps, args.profile)
        }
        if args.demo:
            result["demo"] = demo(Path(tmp))
    result["load_average"] = {"before": load[0], "after": os.getloadavg()[0]}
    result["cores"] = os.cpu_count()
    write_json(args.out, result)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
