"""The Table 1 experiment end to end through the real CLI, on a tiny line (one epoch each)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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
    (tmp_path / "extra.yaml").write_text(
        "rows:\n"
        "  - name: transfer+oracle\n"
        "  - name: transfer+distill\n"
        "    label: distilled\n"
        "  - name: transfer-drawn\n"
        "    strategy: transfer\n"
        "    set: {mentor.draw_missed_rate: 1.0}\n"
    )
    proc = subprocess.run(
        [CLI, "experiment", "table1", "--seeds", "2", "--rows", "extra.yaml", *FAST],
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
        "transfer+oracle",
        "transfer+distill",
        "transfer-drawn",
    }
    # the only combination among the strategies: extra rows are never the best combination
    assert table["best_combination"] == "transfer+dann"
    assert variants["transfer+distill"]["label"] == "distilled"
    assert variants["transfer-drawn"]["label"] == "+ transfer learning [transfer-drawn]"
    work = tmp_path / "results/table1/work/seed_0"
    # the drawing row had its own operator (drawing boxes) and mining
    drawn_runs = [json.loads(p.read_text()) for p in work.glob("mentor-*/metrics.json")]
    assert len(drawn_runs) == 1 and drawn_runs[0]["n_drawn"] >= 1
    assert json.loads((work / "mentor/metrics.json").read_text())["n_drawn"] == 0
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


def test_experiment_rows_tiny(tmp_path: Path) -> None:
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "rows.yaml").write_text(
        "rows:\n"
        "  - name: scratch\n"
        "  - name: scratch-exclusive\n"
        "    strategy: scratch\n"
        "    set: {train.confirm_exclusive: true, train.lw_normalisation: image}\n"
        "  - name: scratch+dann\n"
    )
    args = [CLI, "experiment", "rows", "rows.yaml", "--seeds", "1", "--title", "Tiny", *FAST]
    proc = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = tmp_path / "results/experiments/rows"
    result = json.loads((out / "rows.json").read_text())
    assert set(result["variants"]) == {"baseline", "scratch", "scratch-exclusive", "scratch+dann"}
    assert result["reference"] == "scratch"
    noise = result["label_noise"]
    assert set(noise) == {"scratch", "scratch-exclusive", "scratch+dann"}
    # the exclusive option adds healthy entries of the other classes on confirmed cells
    assert noise["scratch-exclusive"]["n_healthy"]["mean"] >= noise["scratch"]["n_healthy"]["mean"]
    acc = result["domain_accuracy"]["scratch+dann"]["last"]["mean"]
    assert 0.0 <= acc <= 1.0
    md = (out / "rows.md").read_text()
    assert md.startswith("# Tiny") and "reference" in md and "Label noise" in md
    assert (out / "plots/domain_accuracy.png").stat().st_size > 5_000
    # a second run resumes every checkpoint: the same numbers
    again = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stdout + again.stderr
    second = json.loads((out / "rows.json").read_text())
    assert second["variants"] == result["variants"]


def _run(tmp_path: Path, *args: str, seeds: int = 2) -> str:
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    proc = subprocess.run(
        [CLI, "experiment", *args, "--seeds", str(seeds), *FAST],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def test_experiment_rounds_tiny(tmp_path: Path) -> None:
    # a gate that always promotes: every round mines with the previous round's model; a budget
    # of 4 images per round leaves images for round 2 (seed 0: its round-1 model still detects;
    # a model that detects nothing ends the rounds early, which the report handles)
    _run(tmp_path, "rounds", "--rounds", "2", "--strategy", "transfer", "-S", "mine.budget=4",
         "-S", "promotion.min_gain=0", "-S", "promotion.max_original_drop=1", seeds=1)  # fmt: skip
    out = tmp_path / "results/experiments/rounds"
    result = json.loads((out / "rounds.json").read_text())
    curve = result["curves"]["defect new mAP"]
    assert len(curve["mean"]) == 3  # round 0 (the baseline), 1 and 2
    assert curve["std"] == [0.0, 0.0, 0.0]  # one seed
    assert curve["verdicts"][0] == 0 and curve["verdicts"][2] > curve["verdicts"][1] > 0
    seed0 = result["per_seed"]["0"]["points"]
    assert seed0[2]["promoted"] in (True, False) and seed0[1]["promoted"] is True
    assert [p.get("mined_by") for p in seed0] == [None, "baseline", "round-1"]
    # round 2 left out what round 1's operator had answered, and trained on both rounds
    round2 = tmp_path / "results/experiments/work/seed_0/rounds/transfer/round_2"
    assert seed0[2]["n_images_mentored"] > seed0[1]["n_images_mentored"]
    assert json.loads((round2 / "mining/tasks.json").read_text())["model"]["name"] == "round-1"
    assert "round" in (out / "rounds.md").read_text()
    assert (out / "plots/rounds.png").stat().st_size > 5_000


def test_a_refused_round_lets_its_candidate_mine_in_shadow(tmp_path: Path) -> None:
    # a gate that always refuses, every image of interest mined (mine.budget null): round 1
    # takes all the baseline's areas, so round 2 is mined by round 1's refused candidate
    out = _run(tmp_path, "rounds", "--rounds", "2", "--strategy", "transfer",
               "-S", "promotion.min_gain=1", seeds=1)  # fmt: skip
    assert "the refused round-1 mines in shadow mode" in " ".join(out.split())
    result = json.loads((tmp_path / "results/experiments/rounds/rounds.json").read_text())
    points = result["per_seed"]["0"]["points"]
    assert points[1]["mined_by"] == "baseline" and points[1]["promoted"] is False
    round2 = tmp_path / "results/experiments/work/seed_0/rounds/transfer/round_2"
    shadow = json.loads((round2 / "mining/all_tasks.json").read_text())
    assert shadow["model"]["name"] == "round-1"
    # a one-epoch candidate detects only what round 1's operator already answered here: the
    # rounds stop; otherwise round 2 is recorded as mined by it
    if len(points) == 3:
        assert points[2]["mined_by"] == "round-1"
    else:
        assert "nothing left to mentor; stopping" in " ".join(out.split())


@pytest.mark.slow  # about 2 minutes: run by .ci/run after `make test`
def test_experiment_efficiency_and_budget_tiny(tmp_path: Path) -> None:
    _run(tmp_path, "efficiency", "--heuristics", "detections,random", "--budgets", "4,8",
         "--strategy", "transfer")  # fmt: skip
    out = tmp_path / "results/experiments/efficiency"
    rows = json.loads((out / "efficiency.json").read_text())["rows"]
    assert set(rows) == {"detections-4", "detections-8", "random-4", "random-8"}
    # a bigger budget never gives fewer verdicts for the same heuristic
    assert rows["detections-8"]["verdicts"]["mean"] >= rows["detections-4"]["verdicts"]["mean"]
    assert rows["random-8"]["verdicts"]["mean"] >= rows["random-4"]["verdicts"]["mean"]
    assert (out / "plots/efficiency.png").stat().st_size > 5_000
    _run(tmp_path, "budget", "--strategy", "transfer", "--epochs", "1,2")
    out = tmp_path / "results/experiments/budget"
    budget = json.loads((out / "budget.json").read_text())
    assert budget["epochs"] == [1, 2] and len(budget["curves"]["cell new mAP"]["mean"]) == 2
    # the baseline's figures, the reference each budget is read against (dashed in the plot)
    assert set(budget["baseline"]) == set(budget["curves"])
    assert "| baseline |" in (out / "budget.md").read_text()
    assert (out / "plots/budget.png").stat().st_size > 5_000


@pytest.mark.slow  # about 1.5 minutes: run by .ci/run after `make test`
def test_table1_round2_row_tiny(tmp_path: Path) -> None:
    _run(tmp_path, "table1", "--round2", "transfer", "-S", "mine.budget=4",
         "-S", "promotion.min_gain=0", "-S", "promotion.max_original_drop=1", seeds=1)  # fmt: skip
    table = json.loads((tmp_path / "results/table1/table1.json").read_text())
    assert "transfer-round2" in table["variants"]
    assert "round 2" in table["variants"]["transfer-round2"]["label"]
    assert table["best_combination"] == "transfer+dann"  # round 2 is a row, never a candidate
    md = (tmp_path / "results/table1/table1.md").read_text()
    assert "round 2 (mined by round 1's champion" in md
