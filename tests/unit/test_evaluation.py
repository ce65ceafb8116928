"""Tests of the evaluation metrics and plots (src/mentoring/evaluation.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, precision_recall_curve

from mentoring.evaluation import (
    CellAccumulator,
    area_metrics,
    pick_examples,
    plot_pr_curves,
    plot_predictions,
    predict,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _hand_ap(scores: list[float], labels: list[int]) -> float:
    """Average precision by hand: mean over positives of the precision at their rank."""
    order = np.argsort(scores)[::-1]
    hits, precisions = 0, []
    for rank, i in enumerate(order, start=1):
        if labels[i]:
            hits += 1
            precisions.append(hits / rank)
    return sum(precisions) / len(precisions)


def _as_nchw(per_class: list[list[float]]) -> np.ndarray:
    """Lay out per-class lists of 4 values as (N=2, C, h=1, w=2): image-major, then cells."""
    arr = np.asarray(per_class, dtype=np.float32)  # (C, 4)
    return arr.reshape(len(per_class), 2, 1, 2).transpose(1, 0, 2, 3).copy()


def test_area_metrics_hand_checked_ap_and_counts() -> None:
    scores0, labels0 = [0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0]
    scores1, labels1 = [0.1, 0.5, 0.2, 0.3], [0, 0, 0, 0]  # no positives; 0.5 == threshold
    expected_ap = _hand_ap(scores0, labels0)
    assert expected_ap == pytest.approx((1 / 1 + 2 / 3) / 2)
    probs = _as_nchw([scores0, scores1])
    targets = _as_nchw([labels0, labels1]).astype(np.uint8)
    assert probs.shape == (2, 2, 1, 2)

    m = area_metrics(probs, targets, ("scratch", "hole"), threshold=0.5)
    scratch, hole = m["per_class"]["scratch"], m["per_class"]["hole"]
    assert scratch["ap"] == pytest.approx(0.8333333, abs=1e-6)
    assert scratch["n_positive"] == 2
    assert hole["ap"] is None
    assert hole["n_positive"] == 0
    # mAP only over classes with positives: the class without positives is left out
    assert m["map"] == pytest.approx(expected_ap)
    # @0.5: scratch predicts all 4 areas (2 right), hole predicts 1 (p == 0.5 counts), wrong
    assert scratch["precision"] == pytest.approx(0.5)
    assert scratch["recall"] == pytest.approx(1.0)
    assert hole["precision"] == 0.0
    assert hole["recall"] == 0.0
    assert m["n_predicted_areas"] == 5
    assert m["n_positive_areas"] == 2
    assert m["precision"] == pytest.approx(2 / 5)
    assert m["recall"] == pytest.approx(1.0)
    assert m["f1"] == pytest.approx(2 * 2 / (5 + 2))
    assert m["n_images"] == 2
    assert m["n_defective_images"] == 2
    assert m["threshold"] == 0.5


def test_map_is_mean_over_classes_with_positives() -> None:
    a_scores, a_labels = [0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0]
    b_scores, b_labels = [0.2, 0.9, 0.4, 0.3], [0, 0, 0, 1]  # positive ranked 3rd: AP = 1/3
    c_scores, c_labels = [0.6, 0.7, 0.8, 0.9], [0, 0, 0, 0]
    probs = _as_nchw([a_scores, b_scores, c_scores])
    targets = _as_nchw([a_labels, b_labels, c_labels]).astype(np.uint8)
    m = area_metrics(probs, targets, ("a", "b", "c"))
    assert m["per_class"]["b"]["ap"] == pytest.approx(1 / 3)
    assert m["per_class"]["c"]["ap"] is None
    assert m["map"] == pytest.approx(((1 + 2 / 3) / 2 + 1 / 3) / 2)


def test_threshold_changes_counts() -> None:
    probs = _as_nchw([[0.9, 0.8, 0.7, 0.6]])
    targets = _as_nchw([[1, 0, 1, 0]]).astype(np.uint8)
    m = area_metrics(probs, targets, ("a",), threshold=0.75)
    assert m["n_predicted_areas"] == 2
    assert m["precision"] == pytest.approx(0.5)
    assert m["recall"] == pytest.approx(0.5)
    m = area_metrics(probs, targets, ("a",), threshold=0.95)
    assert m["n_predicted_areas"] == 0
    assert m["precision"] == 0.0
    assert m["recall"] == 0.0
    assert m["f1"] == 0.0


def test_false_reject_and_escape_rates() -> None:
    # 6 images, 1 class, 2 x 2 areas
    probs = np.zeros((6, 1, 2, 2), np.float32)
    targets = np.zeros((6, 1, 2, 2), np.uint8)
    probs[1, 0, 1, 1] = 0.8  # image 1: healthy, flagged -> false reject
    targets[2, 0, 0, 0] = 1  # image 2: defective, flagged elsewhere -> caught (image level)
    probs[2, 0, 1, 0] = 0.6
    targets[3, 0, 0, 1] = 1  # image 3: defective, below threshold -> escape
    probs[3, 0, 0, 1] = 0.49
    targets[4, 0, 1, 1] = 1  # image 4: defective, flagged on it -> caught
    probs[4, 0, 1, 1] = 0.99
    probs[5] = 0.3  # image 5: healthy, every area below threshold
    m = area_metrics(probs, targets, ("a",), threshold=0.5)
    # healthy: 0, 1, 5 -> 1 false reject; defective: 2, 3, 4 -> 1 escape
    assert m["false_reject_rate"] == pytest.approx(1 / 3)
    assert m["escape_rate"] == pytest.approx(1 / 3)
    assert m["n_defective_images"] == 3
    assert m["n_images"] == 6
    # areas: tp = 1 (image 4), predicted = 3, positives = 3
    assert m["precision"] == pytest.approx(1 / 3)
    assert m["recall"] == pytest.approx(1 / 3)


def test_rates_without_healthy_or_defective_images() -> None:
    probs = np.full((2, 1, 2, 2), 0.9, np.float32)
    m = area_metrics(probs, np.zeros_like(probs, dtype=np.uint8), ("a",))
    assert m["false_reject_rate"] == 1.0
    assert m["escape_rate"] == 0.0  # no defective parts: defined as 0
    assert m["map"] == 0.0  # no class with positives
    assert m["per_class"]["a"]["ap"] is None


def test_shape_mismatch_raises() -> None:
    probs = np.zeros((2, 2, 4, 4), np.float32)
    with pytest.raises(ValueError, match="differ in shape"):
        area_metrics(probs, np.zeros((2, 2, 4, 3), np.uint8), ("a", "b"))
    with pytest.raises(ValueError, match="classes"):
        area_metrics(probs, np.zeros((2, 2, 4, 4), np.uint8), ("a", "b", "c"))


def test_predict_returns_probabilities() -> None:
    class Half(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (x[:, :, ::8, ::8] - 0.5).repeat(1, 2, 1, 1) * 10

    images = torch.zeros(5, 1, 16, 16, dtype=torch.uint8)
    images[2] = 255
    probs = predict(Half(), images, batch_size=2)
    assert probs.shape == (5, 2, 2, 2)
    assert probs.dtype == np.float32
    assert probs[2].min() > 0.99
    assert probs[0].max() < 0.01


def _is_png(path: Path) -> bool:
    data = path.read_bytes()
    return data.startswith(PNG_SIGNATURE) and len(data) > 1000


def test_plot_pr_curves_writes_png(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    targets = (rng.random((4, 3, 4, 4)) < 0.2).astype(np.uint8)
    targets[:, 2] = 0  # a class without positives is skipped, not an error
    probs = np.clip(targets * 0.6 + rng.random(targets.shape) * 0.4, 0, 1).astype(np.float32)
    path = plot_pr_curves(probs, targets, ("a", "b", "c"), "new", tmp_path / "plots" / "pr.png")
    assert path == tmp_path / "plots" / "pr.png"
    assert _is_png(path)


def test_plot_predictions_writes_png(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (5, 1, 32, 32), dtype=np.uint8)
    targets = np.zeros((5, 2, 4, 4), np.uint8)
    targets[0, 0, 1, 1] = 1
    targets[3, 1, 2:4, 0] = 1
    probs = rng.random((5, 2, 4, 4)).astype(np.float32)
    ids = [f"img-{i}" for i in range(5)]
    out = tmp_path / "pred.png"
    path = plot_predictions(images, probs, targets, ("a", "b"), ids, 0.5, "examples", out)
    assert path == out
    assert _is_png(out)
    rgb = rng.integers(0, 256, (2, 3, 32, 32), dtype=np.uint8)
    out_rgb = tmp_path / "pred_rgb.png"
    plot_predictions(rgb, probs[:2], targets[:2], ("a", "b"), ids[:2], 0.5, "rgb", out_rgb)
    assert _is_png(out_rgb)


def test_pick_examples_false_positives_first() -> None:
    # per image: 0 hit, 1 false negative, 2 false positive, 3 true negative, 4 FP, 5 hit
    flagged = [True, False, True, False, True, True]
    defective = [True, True, False, False, False, True]
    probs = np.zeros((6, 1, 2, 2), np.float32)
    targets = np.zeros((6, 1, 2, 2), np.uint8)
    for i, (f, d) in enumerate(zip(flagged, defective, strict=True)):
        probs[i, 0, 0, 0] = 0.9 if f else 0.1
        targets[i, 0, 1, 1] = int(d)
    assert pick_examples(probs, targets, n=6, threshold=0.5) == [2, 4, 1, 0, 5]
    assert pick_examples(probs, targets, n=3, threshold=0.5) == [2, 1, 0]
    picked = pick_examples(probs, targets, n=1, threshold=0.5)
    assert picked == [2]
    assert 3 not in pick_examples(probs, targets, n=10, threshold=0.5)
    assert pick_examples(probs, targets, n=0, threshold=0.5) == []


def test_ap_never_exceeds_one() -> None:
    """scikit-learn sums recall steps: 20 perfectly ranked positives give 1 + 2e-16, which the
    metrics suite (every rate in [0, 1]) would reject."""
    t = np.zeros((1, 1, 5, 5), np.uint8)
    t.reshape(-1)[:20] = 1
    p = np.full((1, 1, 5, 5), 0.1, np.float32)
    p.reshape(-1)[:20] = np.linspace(1.0, 0.6, 20)
    m = area_metrics(p, t, ("scratch",), 0.5)
    assert m["per_class"]["scratch"]["ap"] == 1.0 and m["map"] == 1.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_streamed_ap_is_scikit_learns_over_batches_and_chunks(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Positive scores kept, negative ones spilled to disk and read back in chunks: the AP and
    the curve are scikit-learn's on every entry at once, ties and all."""
    rng = np.random.default_rng(seed)
    n, c, h = 40, 3, 6
    # few distinct values: many ties within and across labels and batches
    probs = rng.integers(0, 50, (n, c, h, h)).astype(np.float32) / 50
    targets = (rng.random((n, c, h, h)) < probs * 0.3).astype(np.float32)
    targets[:, 2] = 0  # a class without positives
    monkeypatch.setattr(CellAccumulator, "chunk_entries", 97)  # many chunks, a ragged last one
    acc = CellAccumulator(("a", "b", "c"))
    for start in range(0, n, 7):
        acc.add(probs[start : start + 7], targets[start : start + 7])
    for k in range(2):
        t = targets[:, k].ravel().astype(bool)
        p = probs[:, k].ravel()
        assert acc.average_precision(k) == pytest.approx(average_precision_score(t, p), abs=1e-12)
        prec, rec, _ = precision_recall_curve(t, p)
        _, tp, fp = acc.curve(k)
        # scikit-learn's curve also has points where only negatives enter (recall unchanged);
        # the highest precision at each recall is what the curve keeps
        best = {r: max(q for q, r2 in zip(prec, rec, strict=True) if r2 == r) for r in set(rec)}
        assert {float(r): float(q) for r, q in zip(tp / tp[-1], tp / (tp + fp), strict=True)} == {
            float(r): pytest.approx(q) for r, q in best.items() if r > 0
        }
    assert acc.average_precision(2) is None
    # adding after a result is read counts the new entries too
    m = acc.result()
    acc.add(probs, targets)
    both = np.concatenate([probs, probs]), np.concatenate([targets, targets])
    assert acc.result() == area_metrics(*both, ("a", "b", "c"))
    assert m == area_metrics(probs, targets, ("a", "b", "c"))


def test_negative_scores_go_to_disk_not_memory() -> None:
    acc = CellAccumulator(("a",))
    probs = np.random.default_rng(0).random((64, 1, 16, 16)).astype(np.float32)
    targets = np.zeros_like(probs)
    targets[:, :, 0, 0] = 1
    acc.add(probs, targets)
    assert sum(a.size for a in acc._positives[0]) == 64
    f = acc._negatives[0]
    assert f is not None and f.seek(0, 2) == 4 * 64 * (16 * 16 - 1)
