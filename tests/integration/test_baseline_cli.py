"""End to end through the real ``mentoring`` CLI on a tiny generated line.

Generate -> train -> evaluate, read the JSON; a training process killed with SIGKILL after its
first checkpoint resumes to the same final weights as an uninterrupted run; bad params and
missing inputs are clear errors.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).parent / "mentoring")
TINY = ["-S", "base.profile=tiny", "-S", "train_baseline.epochs=2"]


def mentoring(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"mentoring {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    wd = tmp_path_factory.mktemp("line")
    shutil.copy(REPO / "params.yaml", wd / "params.yaml")
    mentoring(wd, "line", "generate", *TINY)
    return wd


def test_generate_train_evaluate(workdir: Path) -> None:
    line = json.loads((workdir / "results/line/metrics.json").read_text())
    assert line["splits"]["original/train"]["n_images"] == 48
    assert (workdir / "results/line/plots/preview.png").stat().st_size > 10_000

    out = mentoring(workdir, "train", *TINY).stdout
    assert "2 epochs" in out
    history = json.loads((workdir / "results/train_baseline/history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    assert (workdir / "models/baseline.pt").exists()

    out = mentoring(workdir, "evaluate", *TINY).stdout
    assert "original" in out and "new" in out
    metrics = json.loads((workdir / "results/evaluate_baseline/metrics.json").read_text())
    for domain in ("original", "new"):
        m = metrics["domains"][domain]
        assert 0.0 <= m["map"] <= 1.0
        assert m["n_images"] == 16
        assert set(m["per_class"]) == {"scratch", "crack", "dent", "stain", "hole", "chip"}
        # both levels: the cell level's keys where they were, the defect level beside them
        d = m["defect"]
        assert 0.0 <= d["map"] <= 1.0 and d["match_iou"] == 0.1 and d["n_images"] == 16
        assert d["n_defects"] > 0 and d["false_alarms_per_image"] >= 0.0
        assert set(d["per_class"]) == set(m["per_class"])
        assert (workdir / f"results/evaluate_baseline/plots/pr_{domain}.png").exists()
        assert (workdir / f"results/evaluate_baseline/plots/predictions_{domain}.png").exists()
    assert (workdir / "results/evaluate_baseline/plots/levels.png").stat().st_size > 5_000
    checks = json.loads((workdir / "results/evaluate_baseline/validation.json").read_text())
    assert checks["success"]


def _state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


def test_killed_training_resumes_to_the_same_weights(workdir: Path) -> None:
    args = [
        "train",
        "-S",
        "base.profile=tiny",
        "-S",
        "train_baseline.epochs=4",
        "-S",
        "line.profiles.tiny.original_train=48",
    ]
    full = mentoring(
        workdir,
        *args,
        "--model",
        "models/full.pt",
        "--checkpoint",
        "models/ck_full.pt",
        "--results",
        "results/full",
    )
    assert full.returncode == 0

    ck = workdir / "models/ck_killed.pt"
    cmd = [
        CLI,
        *args,
        "--model",
        "models/killed.pt",
        "--checkpoint",
        str(ck),
        "--results",
        "results/killed",
    ]
    killed_at = None
    for _attempt in range(3):  # the kill must land between two epochs; retry if it missed
        ck.unlink(missing_ok=True)
        proc = subprocess.Popen(
            cmd, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 120
        while not ck.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        if ck.exists() and proc.returncode == -signal.SIGKILL:
            killed_at = torch.load(ck, weights_only=False)["epoch"]
            if killed_at < 4:
                break
    assert killed_at is not None and killed_at < 4, "could not kill training mid-run"
    assert not (workdir / "models/killed.pt").exists()

    mentoring(workdir, *cmd[1:])
    history = json.loads((workdir / "results/killed/history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    a, b = _state(workdir / "models/full.pt"), _state(workdir / "models/killed.pt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_unknown_param_key_is_named(workdir: Path) -> None:
    proc = mentoring(workdir, "train", "-S", "train_baseline.lrr=0.1", check=False)
    assert proc.returncode == 2
    assert "train_baseline" in proc.stderr and "lrr" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_wrong_type_is_named(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text("train_baseline:\n  epochs: many\n")
    proc = mentoring(tmp_path, "train", check=False)
    assert proc.returncode == 2
    assert "[train_baseline] epochs" in proc.stderr and "many" in proc.stderr


def test_missing_manifest_is_named(tmp_path: Path) -> None:
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    proc = mentoring(tmp_path, "train", "--manifest", "nowhere/line.parquet", check=False)
    assert proc.returncode == 2
    assert "nowhere/line.parquet" in proc.stderr


def test_corrupt_image_is_named(workdir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "data"
    shutil.copytree(workdir / "data", copy)
    victim = sorted((copy / "line/original/eval/images").glob("*.png"))[3]
    victim.write_bytes(b"not a png at all")
    proc = mentoring(
        workdir,
        "evaluate",
        *TINY,
        "--manifest",
        str(copy / "manifests/line.parquet"),
        "--results",
        str(tmp_path / "res"),
        check=False,
    )
    assert proc.returncode == 2
    assert victim.name in proc.stderr


def test_ingest_a_folder_quarantines_bad_files(workdir: Path, tmp_path: Path) -> None:
    src = tmp_path / "plant"
    shutil.copytree(workdir / "data/line", src)
    (src / "new/eval/images/broken.png").write_bytes(b"not a png")
    shutil.copy(workdir / "params.yaml", tmp_path / "params.yaml")
    proc = mentoring(tmp_path, "line", "ingest", str(src), *TINY)
    assert "quarantined:" in proc.stderr and "broken.png" in proc.stderr
    metrics = json.loads((tmp_path / "results/line/metrics.json").read_text())
    assert metrics["source"] == "folder" and metrics["n_quarantined"] == 1
    assert metrics["splits"]["new/eval"]["n_images"] == 16
