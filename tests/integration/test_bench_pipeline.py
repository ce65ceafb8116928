"""benchmarks/pipeline.py: the per-stage timing it reads from `dvc repro`'s output, the tiny
params it runs on, and (slow) the whole no-op measurement on a fresh clone."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks/pipeline.py"


def _bench():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("bench_pipeline", SCRIPT)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_stage_times_come_from_the_running_stage_lines(tmp_path: Path) -> None:
    script = (
        "import time\n"
        "print(\"Running stage 'line':\", flush=True); time.sleep(0.6)\n"
        "print('> mentoring line generate', flush=True)\n"
        "print(\"Running stage 'train@scratch':\", flush=True); time.sleep(0.1)\n"
    )
    r = _bench().timed_run([sys.executable, "-c", script], tmp_path, {}, 60)
    assert list(r["stages"]) == ["line", "train@scratch"]
    assert 0.55 < r["stages"]["line"] < r["seconds"]
    assert sum(r["stages"].values()) <= r["seconds"]
    # a python process's memory was sampled while each stage ran (>= 5 MiB of interpreter)
    assert set(r["peak_rss_mib"]) <= {"line", "train@scratch"} and "line" in r["peak_rss_mib"]
    assert all(v > 5 for v in r["peak_rss_mib"].values())


def test_a_failing_command_is_an_error_with_its_output(tmp_path: Path) -> None:
    script = "import sys; print('the reason'); sys.exit(3)"
    with pytest.raises(RuntimeError, match="the reason"):
        _bench().timed_run([sys.executable, "-c", script], tmp_path, {}, 60)


def test_tiny_params_keep_every_other_key(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    _bench().tiny_params(tmp_path, 1)
    p = yaml.safe_load((tmp_path / "params.yaml").read_text())
    want = yaml.safe_load((REPO / "params.yaml").read_text())
    assert p["base"]["profile"] == "tiny" and p["train"]["epochs"] == 1
    assert p["train"]["strategies"] == want["train"]["strategies"]


@pytest.mark.slow
def test_pipeline_benchmark_noop_repro(tmp_path: Path) -> None:
    out = tmp_path / "pipeline.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--epochs", "1", "--reps", "1", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = json.loads(out.read_text())["noop_repro"]
    first = r["first_repro"]["stages"]
    assert {"line", "train_baseline", "mine", "mentor", "report", "register"} <= set(first)
    assert r["first_repro"]["peak_rss_mib"]["train_baseline"] > 100  # torch is loaded
    assert len(r["noop_seconds"]) == 1 and r["noop_median_s"] == r["noop_seconds"][0]
    assert r["pass"] == (r["noop_median_s"] <= 5.0)
