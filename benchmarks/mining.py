"""Benchmark: streamed mining against the bare forward; mining's and evaluation's memory over
10x the images; the limit.

1. **Throughput**: the `mine` stage end to end (read + decode + forward + area extraction + tasks
   written) on ``--pool`` images, in images/s, against the bare forward of the same model on the
   same images already in memory as one tensor, same batch size. Target ratio >= 0.9. Measured
   with 0 and 1 decoding worker processes. The untrained model with ``model.prior`` 0.3 at
   threshold 0.3 is the worst case (about 25 areas on every image); ``--model`` also times a
   trained model (e.g. a demo's ``baseline.pt``) at the params' own threshold on the same
   images, the realistic case (``throughput_trained``, with its areas per image). Beside them,
   the stage's reader alone (decoding, no forward) and the bound it sets: a stage that decodes
   on the cores the forward keeps busy reaches at most ``decode / (decode + bare)`` of the bare
   forward (``decode_bound_over_bare``). On a GPU a
   short run is mostly start-up (CUDA context, model, cuDNN tuning): ``memory`` also gives the
   stage's steady rate from its two runs over N and 10N images (``marginal_images_per_s``).
2. **Memory**: the peak RSS of the `mine` stage (a fresh process each) over ``--pool`` and
   10 x ``--pool`` images, ``--mem-reps`` runs of each size alternating: the ratio of the median
   peaks (every run's peak is in the JSON; one size's peak moves by tens of MiB from one process
   to the next). Target ratio <= 1.1: the pool is streamed. The worst case for what
   mining keeps: every image has detected areas (``model.prior`` 0.3, threshold 0.3). The same
   for the `evaluate` stage over ``--pool`` and 10 x ``--pool`` new-domain evaluation images (the
   original domain's evaluation set is ``--factor`` images in both runs).
3. **The limit**: FLOPs per image of the default segmenter (torch's ``FlopCounterMode``), the
   machine's measured fp32 matmul and convolution throughput, and the fraction of it the bare
   forward and the stage reach.

``--device cuda`` (a GPU node) runs the bare forward and the stage there (``--precision``, NHWC,
pinned non-blocking copies, what ``base.device: cuda`` does); the limit of 3 is then the GPU
benchmark's (``benchmarks/gpu.py``). ``--workers`` names the decoding worker counts to time.

Writes ``benchmarks/results/mining.json``. The weights are untrained: the work is the same.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch.utils.flop_counter import FlopCounterMode

from mentoring.config import load_params
from mentoring.data.dataset import load_images
from mentoring.data.manifest import data_root, read_manifest, select
from mentoring.data.reader import image_batches
from mentoring.evaluation import predict
from mentoring.io import write_json
from mentoring.models.segmenter import Segmenter
from mentoring.models.store import load_model, save_model
from mentoring.stages import line
from mentoring.training.outputs import model_arch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

#: what both children run first: a thread that samples the process's RSS every 10 ms with the
#: number of images the model has scored so far (the stages' forward is evaluation.predict)
SAMPLER = """
import os, threading
import mentoring.evaluation as _ev
_done, _samples, _stop = [0], [], threading.Event()
_page = os.sysconf("SC_PAGE_SIZE") / 2**20
_predict = _ev.predict
def _counted(model, images, *a, **k):
    out = _predict(model, images, *a, **k)
    _done[0] += images.shape[0]
    return out
_ev.predict = _counted
def _sample():
    while not _stop.wait(0.01):
        with open("/proc/self/statm") as f:
            _samples.append((_done[0], int(f.read().split()[1]) * _page))
threading.Thread(target=_sample, daemon=True).start()
def tenths():
    # peak RSS while the model scored each tenth of the images (the last one: and after);
    # None for a tenth no sample fell in (a run of fewer batches than tenths)
    _stop.set()
    n = max(_done[0], 1)
    peaks = [None] * 10
    for done, rss in _samples:
        k = min(done * 10 // n, 9)
        peaks[k] = max(peaks[k] or 0.0, rss)
    return peaks
"""

#: what a child process runs: the mine stage on one manifest, its wall time on stdout
CHILD = (
    SAMPLER
    + """
import json, resource, sys, time
from pathlib import Path
from mentoring.config import load_params
from mentoring.stages import mine
p = load_params(sys.argv[1], json.loads(sys.argv[2]))
t0 = time.perf_counter()
m = mine.run(p, Path(sys.argv[3]), Path(sys.argv[4]), Path(sys.argv[5]), Path(sys.argv[6]))
seconds = time.perf_counter() - t0
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB -> MiB
print(json.dumps({"seconds": seconds, "n_mined": m["n_mined"], "n_areas": m["n_areas"],
                  "peak_rss_mib": rss, "rss_by_tenth_mib": tenths()}))
"""
)

#: the evaluate stage on one manifest (untracked), the same way
EVAL_CHILD = (
    SAMPLER
    + """
import json, resource, sys, time
from pathlib import Path
from mentoring.config import load_params
from mentoring.stages import evaluate
p = load_params(sys.argv[1], json.loads(sys.argv[2]))
t0 = time.perf_counter()
m = evaluate.run(p, Path(sys.argv[3]), Path(sys.argv[4]), Path(sys.argv[5]), track=False)
seconds = time.perf_counter() - t0
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB -> MiB
print(json.dumps({"seconds": seconds, "new_map": m["domains"]["new"]["map"],
                  "peak_rss_mib": rss, "rss_by_tenth_mib": tenths()}))
"""
)


def _child(args: list[str], code: str = CHILD) -> tuple[dict[str, Any], float]:
    """Run ``code`` in a fresh process; return its output and its own peak RSS in MiB."""
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=3600
    )
    if proc.returncode != 0:
        raise RuntimeError(f"stage failed:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return out, float(out["peak_rss_mib"])


def _gflops(fn: object, flops: float, reps: int) -> float:
    fn()  # type: ignore[operator]
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()  # type: ignore[operator]
    return flops * reps / (time.perf_counter() - t0) / 1e9


#: the overrides that make an untrained model the worst case (areas on every image)
UNTRAINED = ("model.prior", "mine.threshold")


def _throughput(
    model: torch.nn.Module,
    model_path: Path,
    overrides: dict[str, object],
    tag: str,
    *,
    images: torch.Tensor,
    rows: pd.DataFrame,
    manifest: Path,
    params_file: Path,
    batch_size: int,
    reps: int,
    workers: list[int],
    tmp: Path,
    device: str,
    precision: str,
    cuda: bool,
) -> tuple[float, float, dict[str, float], dict[str, Any]]:
    """The bare forward of ``model`` on ``images`` (in memory) against the `mine` stage on the
    same images, the rows ``rows`` of ``manifest``, per decoding worker count: (bare images/s,
    decoding alone in images/s (the stage's reader without the forward, in the main process),
    stage images/s per worker count, the last stage run's counts)."""
    n = len(images)
    bare = []
    decode = []
    busy = []  # the bare forward's CPU seconds per wall second: how many cores it keeps busy
    for _ in range(reps):  # the two side by side, so that both see the machine's same moods
        c0, t0 = _cpu_seconds(), time.perf_counter()
        with torch.no_grad():
            predict(model, images, batch_size, device, precision, channels_last=cuda)
        bare.append(time.perf_counter() - t0)
        busy.append((_cpu_seconds() - c0) / bare[-1])
        t0 = time.perf_counter()
        for _ in image_batches(rows, data_root(manifest), batch_size, 0):
            pass
        decode.append(time.perf_counter() - t0)
    stage: dict[str, float] = {}
    out: dict[str, Any] = {}
    for w in workers:
        runs = []
        for r in range(reps):
            out, _ = _child(
                [
                    str(params_file),
                    json.dumps({**overrides, "mine.num_workers": w}),
                    str(manifest),
                    str(model_path),
                    str(tmp / f"tasks-{tag}-{w}-{r}.json"),
                    str(tmp / f"mine-{tag}-{w}-{r}"),
                ]
            )
            runs.append(out["seconds"])
        stage[str(w)] = n / min(runs)
    out = {**out, "bare_forward_cores_busy": statistics.median(busy)}
    return n / min(bare), n / min(decode), stage, out


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process (every thread)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def decode_bound(bare_ips: float, decode_ips: float) -> float:
    """The stage-over-bare ratio a stage reaches at most when it decodes on the forward's own
    cores (the forward already keeps them busy): decoding and forward one after the other,
    nothing else, i.e. ``decode / (decode + bare)`` in images/s."""
    return decode_ips / (decode_ips + bare_ips)


def marginal(
    runs: dict[str, dict[str, Any]], small: int, large: int, bare_ips: float
) -> dict[str, float]:
    """The stage's steady rate from its two memory runs: the extra images over the extra
    seconds, which leaves out what a run pays once whatever its size (imports excluded, the
    model's load, a CUDA context, cuDNN's autotuning). On a GPU that once-only cost dominates a
    small pool's images/s."""
    extra = runs["large"]["seconds"] - runs["small"]["seconds"]
    ips = (large - small) / extra if extra > 0 else float("nan")
    return {"marginal_images_per_s": ips, "marginal_over_bare": ips / bare_ips}


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median wall time among repeated runs of one size (its counts and RSS)."""
    return sorted(runs, key=lambda r: r["seconds"])[(len(runs) - 1) // 2]


def memory_summary(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Peak RSS of the small and large runs: every run's, the median per size, and the ratio of
    the medians (``large_over_small``), which the target is checked on: one process's peak is
    the maximum of a noisy allocation pattern, so single runs of the same size differ.

    Within each large run, free of that noise: the peak RSS while the model scored each tenth of
    its images (the first tenth is the small run's size; None where no sample fell), and
    ``large_within_run``, the median over the large runs of the highest later tenth over the
    first (1.0: no growth)."""
    peaks = {k: [float(r["peak_rss_mib"]) for r in v] for k, v in runs.items()}
    med = {k: float(statistics.median(v)) for k, v in peaks.items()}
    by_tenth = [r["rss_by_tenth_mib"] for r in runs["large"]]
    growth = [
        max(later) / t[0]
        for t in by_tenth
        if t[0] and (later := [v for v in t[1:] if v is not None])
    ]
    return {
        "peak_rss_mib": med,
        "peak_rss_mib_runs": peaks,
        "spread_mib": {k: max(v) - min(v) for k, v in peaks.items()},
        "large_over_small": med["large"] / med["small"],
        "large_rss_by_tenth_mib": by_tenth,
        "large_within_run": float(statistics.median(growth)) if growth else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pool", type=int, default=1500, help="pool images of the small run")
    ap.add_argument("--factor", type=int, default=10, help="the large run has factor x pool")
    ap.add_argument("--reps", type=int, default=3, help="repetitions of the throughput runs")
    ap.add_argument(
        "--mem-reps",
        type=int,
        default=3,
        help="runs of each size for the memory ratios (the median peak of each size is used)",
    )
    ap.add_argument("--device", default="cpu", help="torch device of the forward (cpu, cuda)")
    ap.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    ap.add_argument("--workers", default="0,1", help="decoding worker counts of the stage runs")
    ap.add_argument(
        "--model",
        type=Path,
        help="also time the stage with this trained model (e.g. a demo's baseline.pt) at the "
        "params' own threshold: the realistic case beside the worst case",
    )
    ap.add_argument("--out", type=Path, default=HERE / "results" / "mining.json")
    args = ap.parse_args()
    if args.model is not None and not args.model.is_file():
        ap.error(f"--model {args.model}: no such file")
    if args.mem_reps < 1:
        ap.error(f"--mem-reps {args.mem_reps}: needs at least 1 run of each size")
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA device visible to torch")
    worker_counts = [int(w) for w in args.workers.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        big = args.pool * args.factor
        overrides = {
            "base.profile": "bench",
            "line.profiles.bench": {
                "original_train": 0,
                "original_eval": args.factor,
                "new_pool": big,
                "new_eval": big,
            },
            "model.prior": 0.3,
            "mine.threshold": 0.3,
            "evaluate.n_examples": 4,
            "base.device": args.device,
            "base.precision": args.precision,
            "base.channels_last": cuda,
        }
        params_file = REPO / "params.yaml"
        p = load_params(params_file, overrides)
        torch.set_num_threads(p.base.num_threads)
        line.run(p, tmp_path / "data", tmp_path / "results/line")
        manifest = tmp_path / "data/manifests/line.parquet"
        full = read_manifest(manifest)
        pool = select(full, "new", "pool")
        # the small run: a manifest with the first ``pool`` images of the pool
        small = tmp_path / "data/manifests/small.parquet"
        small_rows = pool.head(args.pool)
        small_rows.to_parquet(small)
        # evaluation: the first ``pool`` new-domain evaluation images (+ the constant original set)
        small_eval = tmp_path / "data/manifests/small-eval.parquet"
        orig_eval = select(full, "original", "eval")
        new_eval = select(full, "new", "eval")
        pd.concat([orig_eval, new_eval.head(args.pool)]).to_parquet(small_eval)
        torch.manual_seed(0)
        model = Segmenter(**model_arch(p)).eval()
        model_path = tmp_path / "model.pt"
        save_model(model_path, model, model_arch(p), p.line.classes)

        # 1. throughput, same images: the bare forward on a tensor against the stage
        images = load_images(small_rows, data_root(manifest))
        case = dict(
            images=images, rows=small_rows, manifest=small, params_file=params_file,
            batch_size=p.mine.batch_size, reps=args.reps,
            workers=worker_counts, tmp=tmp_path, device=args.device,
            precision=args.precision, cuda=cuda,
        )  # fmt: skip
        bare_ips, decode_ips, stage, untrained = _throughput(
            model, model_path, overrides, "untrained", **case
        )
        trained = None
        if args.model is not None:
            real, _ = load_model(args.model, "cpu")
            real_overrides = {k: v for k, v in overrides.items() if k not in UNTRAINED}
            t_bare, t_decode, t_stage, t_mined = _throughput(
                real.eval(), args.model, real_overrides, "trained", **case
            )
            trained = {
                "model": str(args.model),
                "threshold": load_params(params_file, real_overrides).mine.threshold,
                "bare_forward_images_per_s": t_bare,
                "bare_forward_cores_busy": t_mined["bare_forward_cores_busy"],
                "decode_images_per_s": t_decode,
                "decode_bound_over_bare": decode_bound(t_bare, t_decode),
                "stage_images_per_s": t_stage,
                "stage_over_bare": {w: v / t_bare for w, v in t_stage.items()},
                "n_mined": t_mined["n_mined"],
                "n_areas": t_mined["n_areas"],
                "areas_per_image": t_mined["n_areas"] / args.pool,
                "target": 0.9,
            }
        del images

        # 2. memory: each stage over pool and factor x pool images, a fresh process each,
        # ``mem_reps`` times alternating (one size's peak moves by tens of MiB between runs)
        mine_runs: dict[str, list[dict[str, Any]]] = {"small": [], "large": []}
        eval_runs: dict[str, list[dict[str, Any]]] = {"small": [], "large": []}
        stage_args = [str(params_file), json.dumps(overrides)]  # then manifest, model, outputs
        for r in range(args.mem_reps):
            for name, man in (("small", small), ("large", manifest)):
                tasks, results = tmp_path / f"tasks-{name}-{r}.json", tmp_path / f"mine-{name}-{r}"
                out, _ = _child([*stage_args, str(man), str(model_path), str(tasks), str(results)])
                mine_runs[name].append(out)
            for name, man in (("small", small_eval), ("large", manifest)):
                results = tmp_path / f"eval-{name}-{r}"
                out, _ = _child([*stage_args, str(man), str(model_path), str(results)], EVAL_CHILD)
                eval_runs[name].append(out)
    mine_median = {k: median_run(v) for k, v in mine_runs.items()}
    # 3. the limit (of the CPU; a GPU's is benchmarks/gpu.py's)
    model = model.cpu().to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    size = p.line.image_size
    x = torch.rand(1, p.line.channels, size, size)
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model(x)
    flops_per_image = float(fc.get_total_flops())
    a = torch.rand(1024, 1024)
    matmul = _gflops(lambda: a @ a, 2 * 1024**3, 20)
    conv = torch.nn.Conv2d(64, 64, 3, padding=1).eval()
    xc = torch.rand(16, 64, 64, 64)
    conv_flops = 2 * 64 * 64 * 9 * 16 * 64 * 64
    with torch.no_grad():
        conv_gflops = _gflops(lambda: conv(xc), conv_flops, 10)
    peak = max(matmul, conv_gflops)
    result = {
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "precision": args.precision,
        "pool": args.pool,
        "factor": args.factor,
        "batch_size": p.mine.batch_size,
        "torch_threads": torch.get_num_threads(),
        "throughput": {
            "bare_forward_images_per_s": bare_ips,
            "bare_forward_cores_busy": untrained["bare_forward_cores_busy"],
            "decode_images_per_s": decode_ips,
            "decode_bound_over_bare": decode_bound(bare_ips, decode_ips),
            "stage_images_per_s": stage,
            "stage_over_bare": {w: v / bare_ips for w, v in stage.items()},
            "target": 0.9,
        },
        "throughput_trained": trained,
        "memory": {
            **memory_summary(mine_runs),
            "images": {"small": args.pool, "large": big},
            "mined": mine_median,
            "target": 1.1,
            **marginal(mine_median, args.pool, big, bare_ips),
        },
        "evaluation_memory": {
            **memory_summary(eval_runs),
            "new_eval_images": {"small": args.pool, "large": big},
            "original_eval_images": args.factor,
            "runs": {k: median_run(v) for k, v in eval_runs.items()},
            "target": 1.1,
        },
        "limit": {
            "flops_per_image": flops_per_image,
            "matmul_gflops": matmul,
            "conv_gflops": conv_gflops,
            # of the CPU's peak: meaningless for a GPU forward (benchmarks/gpu.py has its own)
            "bare_forward_fraction_of_peak": None
            if cuda
            else bare_ips * flops_per_image / 1e9 / peak,
            "stage_fraction_of_peak": None
            if cuda
            else max(stage.values()) * flops_per_image / 1e9 / peak,
        },
    }
    result["pass"] = {
        "throughput": max(result["throughput"]["stage_over_bare"].values()) >= 0.9,
        "memory": result["memory"]["large_over_small"] <= 1.1,
        "evaluation_memory": result["evaluation_memory"]["large_over_small"] <= 1.1,
    }
    if trained is not None:
        result["pass"]["throughput_trained"] = max(trained["stage_over_bare"].values()) >= 0.9
    write_json(args.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
