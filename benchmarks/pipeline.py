"""Benchmark: the pipeline's own overhead: a no-op `dvc repro`, and `make demo` from a clone.

1. **No-op `dvc repro`**: in a fresh clone of this repository (``HEAD``) whose ``params.yaml``
   is set to the ``tiny`` profile (and ``--epochs``), the whole pipeline runs once with
   `dvc repro`; then `dvc repro` with nothing changed is timed ``--reps`` times. Target: the
   median <= 5 s (it checks every stage's dependencies and outputs, and runs none).
2. **`make demo` from a fresh clone** (``--demo``): install included (a new ``.venv`` from the
   package index or the local wheel cache), on the embedded defaults. Target <= 15 min on
   2 cores.

Both runs time each stage from `dvc repro`'s "Running stage" lines as they stream, so the JSON
says where the time goes. The clone uses this checkout's virtual environment for part 1 (its
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
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
STAGE = re.compile(r"Running stage '([^']+)'")


def _clone(dest: Path) -> Path:
    subprocess.run(["git", "clone", "-q", str(REPO), str(dest)], check=True, timeout=300)
    return dest


def timed_run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float) -> dict[str, object]:
    """Run ``cmd``, streaming its output; return its wall time and each DVC stage's."""
    t0 = time.perf_counter()
    stages: dict[str, float] = {}
    current: tuple[str, float] | None = None
    tail: list[str] = []
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        tail = [*tail[-40:], line]
        m = STAGE.search(line)
        if m:
            now = time.perf_counter()
            if current is not None:
                stages[current[0]] = now - current[1]
            current = (m.group(1), now)
        if time.perf_counter() - t0 > timeout:
            proc.kill()
            raise TimeoutError(f"{' '.join(cmd)}: still running after {timeout:.0f} s")
    rc = proc.wait()
    seconds = time.perf_counter() - t0
    if current is not None:
        stages[current[0]] = time.perf_counter() - current[1]
    if rc != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({rc}):\n{''.join(tail)}")
    return {"seconds": seconds, "stages": stages}


def tiny_params(clone: Path, epochs: int) -> None:
    """The clone's params.yaml on the tiny profile, every training at ``epochs`` epochs."""
    path = clone / "params.yaml"
    p = yaml.safe_load(path.read_text())
    p["base"]["profile"] = "tiny"
    p["train_baseline"]["epochs"] = epochs
    p["train"]["epochs"] = epochs
    # a model of a few epochs on 48 images detects little at 0.5: mine at 0.01 so that every
    # stage has work (the pipeline's overhead is measured, not the model)
    p["mine"]["threshold"] = 0.01
    path.write_text(yaml.safe_dump(p, sort_keys=False))


def noop_repro(work: Path, epochs: int, reps: int) -> dict[str, object]:
    clone = _clone(work / "noop")
    tiny_params(clone, epochs)
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    dvc = str(Path(bin_dir) / "dvc")
    first = timed_run([dvc, "repro"], clone, env, 3600)
    runs = []
    for _ in range(reps):
        r = timed_run([dvc, "repro"], clone, env, 600)
        if r["stages"]:
            raise RuntimeError(f"a repro with nothing changed ran stages: {r['stages']}")
        runs.append(float(r["seconds"]))  # type: ignore[arg-type]
    median = statistics.median(runs)
    return {
        "profile": "tiny",
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
    ap.add_argument("--demo", action="store_true", help="also time `make demo` from a clone")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "pipeline.json")
    args = ap.parse_args(argv)
    from mentoring.io import write_json

    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        result: dict[str, object] = {"noop_repro": noop_repro(Path(tmp), args.epochs, args.reps)}
        if args.demo:
            result["demo"] = demo(Path(tmp))
    result["load_average"] = {"before": load[0], "after": os.getloadavg()[0]}
    result["cores"] = os.cpu_count()
    write_json(args.out, result)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
