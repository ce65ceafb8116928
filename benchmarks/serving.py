"""Benchmark: the champion served by `mlflow models serve` against the in-process forward.

Logs the default segmenter (demo image size) the way training does (a self-contained TorchScript
graph, `mentoring.tracking.Tracker.log_model`), starts `mlflow models serve --env-manager local`
on loopback and posts batches of 1 and 32 images (JSON ``{"inputs": ...}``, what a line's client
sends). For each batch size: images/s and p50/p95 latency over ``--requests`` sequential requests,
and the in-process forward of the same graph on the same batch (median over as many runs); the
ratio served / in-process images/s is what serving costs. The weights are untrained: the work is
the same. Writes ``benchmarks/results/serving.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import torch

from mentoring.config import Params
from mentoring.io import write_json
from mentoring.models.deploy import DeployedSegmenter, trace
from mentoring.models.segmenter import Segmenter
from mentoring.tracking import Tracker
from mentoring.training.outputs import model_arch

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(url: str, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow models serve exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/ping", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"mlflow models serve did not answer {url}/ping in {timeout_s:.0f} s")


def _percentile(xs: list[float], q: float) -> float:
    return float(np.percentile(np.array(xs), q))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=40, help="requests per batch size")
    ap.add_argument("--batches", default="1,32", help="batch sizes, comma-separated")
    ap.add_argument("--image-size", type=int, default=0, help="0 = line.image_size (128)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "serving.json")
    args = ap.parse_args()
    params = Params()
    torch.set_num_threads(params.base.num_threads)
    size = args.image_size or params.line.image_size
    torch.manual_seed(0)
    seg = Segmenter(**model_arch(params)).eval()
    graph = trace(DeployedSegmenter(seg, params.line.classes), (1, size, size))
    batches = [int(b) for b in args.batches.split(",")]
    result: dict[str, object] = {
        "image_size": size,
        "requests": args.requests,
        "torch_threads": torch.get_num_threads(),
        "server": "mlflow models serve --env-manager local --workers 1",
        "batches": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        p = params.model_copy(update={"tracking": params.tracking.model_copy(update={"uri": uri})})
        manifest = tmp_path / "manifest.parquet"
        manifest.write_bytes(b"stand-in manifest: only its hash is read")
        tracker = Tracker.open(p, manifest)
        logged = tracker.log_model(
            tracker.variant_run("bench"), seg, params.line.classes, (1, size, size)
        )
        port = _port()
        url = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            "MLFLOW_TRACKING_URI": uri,
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        log = open(tmp_path / "server.log", "wb")  # closed in the finally below
        cmd = [str(BIN / "mlflow"), "models", "serve", "-m", logged["model_uri"]]
        cmd += ["--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)]
        proc = subprocess.Popen(
            [*cmd, "--workers", "1"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        try:
            _wait(url, proc, 120)
            rng = np.random.default_rng(0)
            for b in batches:
                images = rng.integers(0, 256, (b, 1, size, size), dtype=np.uint8)
                body = json.dumps({"inputs": images.tolist()}).encode()
                request = urllib.request.Request(
                    url + "/invocations", body, {"Content-Type": "application/json"}
                )
                with urllib.request.urlopen(request, timeout=120) as r:  # warm-up, checked
                    got = np.asarray(json.loads(r.read())["predictions"], np.float32)
                with torch.no_grad():
                    want = graph(torch.from_numpy(images)).numpy()
                max_diff = float(np.abs(got - want).max())
                latencies = []
                for _ in range(args.requests):
                    t0 = time.perf_counter()
                    with urllib.request.urlopen(request, timeout=120) as r:
                        r.read()
                    latencies.append(time.perf_counter() - t0)
                forward = []
                x = torch.from_numpy(images)
                with torch.no_grad():
                    for _ in range(args.requests):
                        t0 = time.perf_counter()
                        graph(x)
                        forward.append(time.perf_counter() - t0)
                served_ips = b / statistics.median(latencies)
                local_ips = b / statistics.median(forward)
                result["batches"][str(b)] = {  # type: ignore[index]
                    "served_images_per_s": served_ips,
                    "served_p50_ms": 1000 * _percentile(latencies, 50),
                    "served_p95_ms": 1000 * _percentile(latencies, 95),
                    "in_process_images_per_s": local_ips,
                    "in_process_p50_ms": 1000 * _percentile(forward, 50),
                    "served_over_in_process": served_ips / local_ips,
                    "request_bytes": len(body),
                    "max_abs_diff_vs_in_process": max_diff,
                }
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
            log.close()
    write_json(args.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
