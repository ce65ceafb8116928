"""Mining, mentoring and a strategy through the real CLI, stage by stage, on a tiny line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.integration.test_baseline_cli import REPO, mentoring

TINY = ["-S", "base.profile=tiny", "-S", "train_baseline.epochs=1", "-S", "train.epochs=1",
        "-S", "train.batch_size=8", "-S", "mine.threshold=0.01"]  # fmt: skip


@pytest.fixture(scope="module")
def mined(tmp_path_factory: pytest.TempPathFactory) -> Path:
    wd = tmp_path_factory.mktemp("mentoring")
    shutil.copy(REPO / "params.yaml", wd / "params.yaml")
    mentoring(wd, "line", "generate", *TINY)
    mentoring(wd, "train", *TINY)
    out = mentoring(wd, "mine", *TINY).stdout
    assert "mined" in out
    return wd


def test_mine_writes_versioned_tasks(mined: Path) -> None:
    tasks = json.loads((mined / "data/mining/tasks.json").read_text())
    assert tasks["schema_version"] == 1
    assert tasks["model"]["name"] == "baseline" and len(tasks["model"]["sha256"]) == 64
    assert tasks["grid"] == [16, 16]
    assert tasks["images"], "a 0.01 threshold must detect areas"
    area = tasks["images"][0]["areas"][0]
    assert area["area_id"].startswith(tasks["images"][0]["image_id"] + "/")
    assert area["class"] in tasks["classes"]


def test_simulate_then_import_is_idempotent(mined: Path) -> None:
    out = mentoring(mined, "mentor", "simulate", *TINY).stdout
    assert "areas confirmed" in out
    labels = mined / "data/mentor/partial_labels.npz"
    first = dict(np.load(labels))
    # the same feedback again, as an operator's file: nothing changes but the duplicate count
    (mined / "data/feedback").mkdir(exist_ok=True)
    shutil.copy(mined / "data/mentor/simulated.json", mined / "data/feedback/copy.json")
    mentoring(mined, "mentor", "simulate", *TINY)
    second = dict(np.load(labels))
    report = json.loads((mined / "results/mentor/metrics.json").read_text())
    assert report["files"] == ["copy.json", "simulated.json"]
    assert report["n_duplicates"] == report["n_records"] // 2 > 0
    # importing only the operator's copy gives the same labels
    mentoring(mined, "mentor", "import", *TINY)
    third = dict(np.load(labels))
    for key in ("ids", "targets", "annotated", "healthy"):
        assert np.array_equal(first[key], second[key]), key
        assert np.array_equal(first[key], third[key]), key
    (mined / "data/feedback/copy.json").unlink()


def test_feedback_with_unknown_ids_is_rejected_listing_them(mined: Path) -> None:
    bad = {
        "schema_version": 1,
        "items": [
            {"image_id": "nope-1", "operator": "op", "timestamp": "2026-01-01T00:00:00Z"},
            {"image_id": "nope-2", "operator": "op", "timestamp": "2026-01-01T00:00:00Z"},
        ],
    }
    path = mined / "data/feedback/bad.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(bad))
    try:
        proc = mentoring(mined, "mentor", "import", *TINY, check=False)
    finally:
        path.unlink()
    assert proc.returncode == 2
    assert "nope-1" in proc.stderr and "nope-2" in proc.stderr and "bad.json" in proc.stderr


def test_train_a_strategy_and_evaluate_it(mined: Path) -> None:
    mentoring(mined, "mentor", "simulate", *TINY)
    out = mentoring(mined, "train", "--strategy", "transfer+omnia+dann", *TINY).stdout
    assert "transfer+omnia+dann: 1 epochs" in out
    hist = json.loads((mined / "results/train/transfer+omnia+dann/history.json").read_text())
    assert set(hist[0]["parts"]) == {"l_s", "l_w", "l_d", "grl", "d_acc"}
    mentoring(
        mined,
        "evaluate",
        "--model",
        "models/transfer+omnia+dann.pt",
        "--name",
        "transfer+omnia+dann",
        *TINY,
    )
    m = json.loads((mined / "results/evaluate/transfer+omnia+dann/metrics.json").read_text())
    assert set(m["domains"]) == {"original", "new"}


def test_unknown_strategy_is_a_clear_error(mined: Path) -> None:
    proc = mentoring(mined, "train", "--strategy", "scratch+magic", *TINY, check=False)
    assert proc.returncode == 2 and "magic" in proc.stderr


def test_rerun_resumes_transfer_even_after_the_baseline_file_is_rewritten(mined: Path) -> None:
    mentoring(mined, "mentor", "simulate", *TINY)
    mentoring(mined, "train", "--strategy", "transfer", *TINY)
    hist = mined / "results/train/transfer/history.json"
    before = json.loads(hist.read_text())
    mentoring(mined, "train", *TINY)  # the baseline resumes and writes its file again
    mentoring(mined, "train", "--strategy", "transfer", *TINY)
    assert json.loads(hist.read_text()) == before  # same timings: resumed, not retrained


@pytest.mark.parametrize("heuristic", ["detections", "entropy", "random"])
def test_streamed_mining_equals_mining_the_pool_in_memory(
    mined: Path, tmp_path: Path, heuristic: str
) -> None:
    """The stage reads the pool batch by batch (and in worker processes): the tasks are those
    of scoring the whole pool as one tensor, byte for byte but the creation time."""
    from mentoring.config import load_params
    from mentoring.data.dataset import load_images
    from mentoring.data.manifest import data_root, read_manifest, select
    from mentoring.evaluation import predict
    from mentoring.mining import content_area_id, extract_areas, make_heuristic, rank
    from mentoring.models.store import load_model
    from mentoring.runtime import setup_torch
    from mentoring.stages import mine

    manifest = mined / "data/manifests/line.parquet"
    overrides = {"base.profile": "tiny", "mine.threshold": 0.01, "mine.heuristic": heuristic}
    p = load_params(mined / "params.yaml", {**overrides, "mine.batch_size": 5, "mine.budget": 20})
    setup_torch(p.base)  # the stage's threads: a convolution's rounding may depend on them
    model, _ = load_model(mined / "models/baseline.pt")
    df = select(read_manifest(manifest), "new", "pool")
    probs = predict(model, load_images(df, data_root(manifest)), 5)
    scores = make_heuristic(heuristic, 0.01, p.mine.margin).score(probs)
    ids = list(df["image_id"])
    shas = list(df["sha256"])
    picked = rank(scores, 20, p.base.seed, ids)
    # the tasks' area ids are derived from each area's content (image sha, class, cells)
    expected = [
        (ids[i], float(scores[i]),
         [content_area_id(ids[i], shas[i], a.cls, a.cells)
          for a in extract_areas(probs[i], p.line.classes, 0.01, 8, ids[i])])
        for i in picked
    ]  # fmt: skip
    outs = []
    for workers in (0, 2):
        streamed = {**overrides, "mine.batch_size": 5, "mine.budget": 20}
        q = load_params(mined / "params.yaml", {**streamed, "mine.num_workers": workers})
        tasks = tmp_path / f"tasks-{workers}.json"
        mine.run(q, manifest, mined / "models/baseline.pt", tasks, tmp_path / f"r{workers}")
        got = json.loads(tasks.read_text())
        assert [(im["image_id"], im["score"], [a["area_id"] for a in im["areas"]])
                for im in got["images"]] == expected  # fmt: skip
        got.pop("created_at")
        outs.append(got)
    assert outs[0] == outs[1]


def test_streamed_evaluation_equals_evaluating_the_sets_in_memory(
    mined: Path, tmp_path: Path
) -> None:
    """The evaluate stage reads each set batch by batch (and in worker processes): its
    metrics are those of the whole set scored as one tensor, exactly."""
    from mentoring.config import load_params
    from mentoring.data.dataset import CellDataset, read_mask
    from mentoring.data.manifest import data_root, read_manifest, select
    from mentoring.detection import defect_metrics
    from mentoring.evaluation import area_metrics, predict
    from mentoring.models.store import load_model
    from mentoring.runtime import setup_torch
    from mentoring.stages import evaluate

    manifest = mined / "data/manifests/line.parquet"
    p = load_params(mined / "params.yaml", {"base.profile": "tiny", "evaluate.n_examples": 4})
    setup_torch(p.base)  # the stage's threads: a convolution's rounding may depend on them
    model, _ = load_model(mined / "models/baseline.pt")

    def in_memory(batch: int) -> dict[str, Any]:
        """The whole set as one tensor, scored in batches of ``batch`` (the same batches as
        the stream: a convolution's float rounding may depend on the batch size)."""
        expected = {}
        for domain in ("original", "new"):
            data = CellDataset.from_manifest(manifest, domain, "eval", p.line.classes, 8, 0.06)
            probs = predict(model, data.split.images, batch)
            m = area_metrics(probs, data.split.targets.numpy(), p.line.classes)
            df = select(read_manifest(manifest), domain, "eval")
            masks = np.stack(
                [read_mask(data_root(manifest) / str(x), (128, 128)) for x in df["mask_path"]]
            )
            m["defect"] = defect_metrics(probs, masks, p.line.classes, 8, 0.06)
            expected[domain] = m
        return expected

    for batch, workers in ((5, 0), (3, 2)):
        q = load_params(
            mined / "params.yaml",
            {"base.profile": "tiny", "evaluate.n_examples": 4, "evaluate.batch_size": batch,
             "evaluate.num_workers": workers},
        )  # fmt: skip
        out = tmp_path / f"eval-{batch}-{workers}"
        got = evaluate.run(q, manifest, mined / "models/baseline.pt", out, "baseline", track=False)
        assert got["domains"] == in_memory(batch), (batch, workers)
        assert (out / "plots/predictions_new.png").stat().st_size > 5_000
        assert (out / "plots/pr_original.png").stat().st_size > 5_000
