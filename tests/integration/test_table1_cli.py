"""The Table 1 experiment end to end through the real CLI, on a tiny line (one epoch each)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).parent / "mentoring")
FAST = [
    "-S", "base.profile=tiny",
    "-S", "train_baseline.epochs=1",
    "-S", "train.epochs=1",
    "-S", "train.batch_size=8",
    "-S", "train.strategies=[scratch, transfer, scratch+omnia, scratch+healthy, scratch+dann, "
          "transfer+dann, oracle]",
    # a barely trained baseline detects little: a low threshold still gives operators areas
    "-S", "mine.threshold=0.01",
]  # fmt: skip


def test_table1_tiny(tmp_path: Path) -> None:
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    proc = subprocess.run(
        [CLI, "experiment", "table1", "--seeds", "2", *FAST],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = tmp_path / "results/table1"
    table = json.loads((out / "table1.json").read_text())
    variants = table["variants"]
    assert set(variants) == {
        "baseline",
        "scratch",
        "transfer",
        "scratch+omnia",
        "scratch+healthy",
        "scratch+dann",
        "transfer+dann",
        "oracle",
    }
    assert table["best_combination"] == "transfer+dann"  # the only combination
    assert table["seeds"] == [0, 1]
    for v, row in variants.items():
        for key in ("map_original", "map_new", "precision_new", "recall_new", "gap_closed"):
            assert set(row[key]) >= {"mean", "std"}, (v, key)
            assert 0.0 <= row["map_original"]["mean"] <= 1.0
    assert variants["baseline"]["gap_closed"]["mean"] == 0.0
    assert variants["oracle"]["gap_closed"]["mean"] == 1.0
    md = (out / "table1.md").read_text()
    assert "w/ new data" in md and "+ OMNIA-like" in md and "Oracle" in md
    assert (out / "plots/variants.png").stat().st_size > 5_000
    assert (out / "plots/tsne.png").stat().st_size > 5_000
    assert set(table["domain_separability"]) == {"scratch", "scratch+dann"}
    # the pipeline's intermediate products are there and well-formed
    seed0 = out / "work/seed_0"
    tasks = json.loads((seed0 / "mining/tasks.json").read_text())
    assert tasks["schema_version"] == 1 and tasks["images"]
    assert (seed0 / "feedback/simulated.json").exists()
    assert (seed0 / "feedback/partial_labels.npz").exists()
