"""Tests of the mentored-training strategies (src/mentoring/training/strategies.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mentoring.config import MentoredTrainParams, parse_strategy
from mentoring.data.batch import Batch
from mentoring.losses import mentoring_loss
from mentoring.models.domain import DomainSegmenter, domain_loss, grl_coefficient
from mentoring.models.segmenter import Segmenter
from mentoring.training.strategies import (
    apply_exclusive,
    apply_healthy,
    apply_omnia,
    apply_refine,
    build_trainee,
    make_loss,
)

ARCH: dict[str, object] = dict(
    in_channels=1, n_classes=2, width=4, depth=1, stride=8, context_stages=1
)


# ---------------------------------------------------------------- OMNIA-like and healthy


def test_apply_omnia() -> None:
    # one image, one class, 2 x 3 cells
    targets = np.array([[[[1, 0, 0], [0, 1, 0]]]], np.uint8)
    annotated = np.array([[[[True, True, False], [False, False, False]]]])
    probs = np.array([[[[0.001, 0.002, 0.005], [0.5, 0.003, 0.01]]]], np.float32)
    t, a = apply_omnia(targets, annotated, probs, epsilon=0.01)
    # (0,0): confirmed 1 where p < eps: kept 1; (0,1): annotated 0, kept;
    # (0,2): p < eps, unannotated -> annotated 0; (1,0): p >= eps -> stays unannotated;
    # (1,1): p < eps -> annotated 0 (its unannotated target 1 is overwritten);
    # (1,2): p == eps is not < eps -> stays unannotated
    assert a.tolist() == [[[[True, True, True], [False, True, False]]]]
    assert t[a].tolist() == [1, 0, 0, 0]
    assert t[0, 0, 0, 0] == 1
    assert t.dtype == np.uint8
    assert annotated.tolist() == [[[[True, True, False], [False, False, False]]]]  # not in place


def test_apply_omnia_per_class() -> None:
    targets = np.zeros((1, 2, 1, 2), np.uint8)
    annotated = np.zeros((1, 2, 1, 2), bool)
    probs = np.array([[[[0.001, 0.9]], [[0.9, 0.001]]]], np.float32)
    _, a = apply_omnia(targets, annotated, probs, 0.01)
    assert a.tolist() == [[[[True, False]], [[False, True]]]]


def test_apply_healthy() -> None:
    targets = np.zeros((3, 2, 2, 2), np.uint8)
    annotated = np.zeros((3, 2, 2, 2), bool)
    targets[0, 1, 0, 0] = 1  # confirmed defect on image 0 (flagged)
    annotated[0, 1, 0, 0] = True
    targets[1, 0, 1, 1] = 1  # confirmed defect on image 1 (not flagged)
    annotated[1, 0, 1, 1] = True
    targets[2, 0, 0, 1] = 1  # a stray unannotated target on image 2 (flagged)
    healthy = np.array([True, False, True])
    t, a = apply_healthy(targets, annotated, healthy)
    assert a[0].all() and a[2].all()
    assert np.array_equal(a[1], annotated[1])  # unflagged image untouched
    assert np.array_equal(t[1], targets[1])
    assert t[0, 1, 0, 0] == 1  # confirmed area kept
    assert t[0].sum() == 1
    assert t[2].sum() == 0  # unannotated entries become healthy
    assert t.dtype == np.uint8


def test_apply_refine_masks_confirmed_cells_the_deployed_model_doubts() -> None:
    # one image, two classes, 1 x 4 cells
    targets = np.array([[[[1, 1, 0, 1]], [[0, 0, 0, 0]]]], np.uint8)
    annotated = np.array([[[[True, True, True, False]], [[True, False, False, False]]]])
    probs = np.array([[[[0.95, 0.6, 0.1, 0.2]], [[0.1, 0.9, 0.9, 0.9]]]], np.float32)
    t, a = apply_refine(targets, annotated, probs, threshold=0.8)
    # (c0, x0): confirmed, p 0.95 >= 0.8: kept; (c0, x1): confirmed, p 0.6: masked (not healthy);
    # (c0, x2): annotated healthy: kept whatever p; (c0, x3): unannotated: stays so
    assert a.tolist() == [[[[True, False, True, False]], [[True, False, False, False]]]]
    assert np.array_equal(t, targets)
    t0, a0 = apply_refine(targets, annotated, probs, threshold=0.0)
    assert np.array_equal(a0, annotated) and np.array_equal(t0, targets)


def test_apply_exclusive_annotates_the_other_classes_healthy() -> None:
    # one image, three classes, 1 x 3 cells
    targets = np.zeros((1, 3, 1, 3), np.uint8)
    annotated = np.zeros((1, 3, 1, 3), bool)
    targets[0, 0, 0, 0] = 1  # class 0 confirmed on cell 0
    annotated[0, 0, 0, 0] = True
    targets[0, 1, 0, 1] = 1  # classes 1 and 2 both confirmed on cell 1
    targets[0, 2, 0, 1] = 1
    annotated[0, 1:, 0, 1] = True
    annotated[0, :, 0, 2] = True  # cell 2 infirmed: all healthy
    t, a = apply_exclusive(targets, annotated)
    assert a[0, :, 0, 0].all() and t[0, :, 0, 0].tolist() == [1, 0, 0]
    # the doubly-confirmed cell keeps both defects; class 0 becomes healthy there
    assert a[0, :, 0, 1].all() and t[0, :, 0, 1].tolist() == [0, 1, 1]
    assert np.array_equal(a[0, :, 0, 2], annotated[0, :, 0, 2])
    assert t.dtype == np.uint8
    assert annotated.sum() == 6  # not in place


# ---------------------------------------------------------------- strategy names


def test_parse_strategy_accepts_combinations() -> None:
    assert parse_strategy("transfer+omnia") == frozenset({"transfer", "omnia"})
    assert parse_strategy(" scratch + dann ") == frozenset({"scratch", "dann"})
    assert parse_strategy("transfer+omnia+healthy") == {"transfer", "omnia", "healthy"}


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("scratch+transfer", "exclude"),
        ("transfer+magic", "magic"),
        ("", "unknown"),
        ("+", "unknown"),
        ("oracle+omnia", "oracle"),
        ("oracle+distill", "oracle"),
    ],
)
def test_parse_strategy_rejects(name: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_strategy(name)


def test_mentored_params_check_strategies() -> None:
    with pytest.raises(ValueError, match="magic"):
        MentoredTrainParams(strategies=("scratch", "magic"))


# ---------------------------------------------------------------- trainees


@pytest.fixture
def baseline() -> Segmenter:
    torch.manual_seed(123)
    seg = Segmenter(**ARCH)  # type: ignore[arg-type]
    with torch.no_grad():
        for p in seg.parameters():
            p.add_(torch.randn_like(p))
        for m in seg.modules():
            if isinstance(m, torch.nn.BatchNorm2d) and m.running_mean is not None:
                m.running_mean.uniform_(-1, 1)
    return seg


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_transfer_copies_the_baseline_weights(baseline: Segmenter) -> None:
    trainee = build_trainee("transfer", ARCH, baseline, seed=0)
    assert _same_weights(trainee.segmenter, baseline)
    assert trainee.domain_head is None
    with torch.no_grad():  # a copy: training the trainee leaves the baseline alone
        next(trainee.segmenter.parameters()).add_(1.0)
    assert not _same_weights(trainee.segmenter, baseline)


def test_scratch_does_not_copy_and_is_seeded(baseline: Segmenter) -> None:
    a = build_trainee("scratch", ARCH, baseline, seed=0)
    b = build_trainee("scratch", ARCH, None, seed=0)
    c = build_trainee("scratch", ARCH, None, seed=1)
    assert not _same_weights(a.segmenter, baseline)
    assert _same_weights(a.segmenter, b.segmenter)
    assert not _same_weights(a.segmenter, c.segmenter)


def test_dann_adds_a_domain_segmenter(baseline: Segmenter) -> None:
    trainee = build_trainee("transfer+dann", ARCH, baseline, seed=0)
    assert isinstance(trainee.domain_head, DomainSegmenter)
    conv = trainee.domain_head.net[0]
    assert conv.in_channels == trainee.segmenter.feature_channels
    assert _same_weights(trainee.segmenter, baseline)
    assert build_trainee("scratch+omnia", ARCH, None, seed=0).domain_head is None


def test_transfer_without_baseline_raises() -> None:
    with pytest.raises(ValueError, match="baseline"):
        build_trainee("transfer+omnia", ARCH, None, seed=0)


# ---------------------------------------------------------------- loss


def _batch() -> Batch:
    g = torch.Generator().manual_seed(0)
    n = 4
    return Batch(
        images=torch.rand(n, 1, 32, 32, generator=g),
        targets=(torch.rand(n, 2, 4, 4, generator=g) > 0.7).float(),
        annotated=torch.cat(
            [torch.ones(2, 2, 4, 4, dtype=torch.bool), torch.rand(2, 2, 4, 4, generator=g) > 0.5]
        ),
        domain=torch.tensor([0, 0, 1, 1]),
    )


def test_make_loss_with_dann() -> None:
    cfg = MentoredTrainParams(lambda_w=0.5, dann_weight=0.2, dann_gamma=10.0)
    trainee = build_trainee("scratch+dann", ARCH, None, seed=0)
    assert trainee.domain_head is not None
    loss_fn = make_loss(trainee, cfg)
    batch = _batch()
    loss, parts = loss_fn(batch, 0.3)
    assert set(parts) == {"l_s", "l_w", "l_d", "grl", "d_acc"}
    assert 0.0 <= parts["d_acc"] <= 1.0
    assert parts["grl"] == pytest.approx(grl_coefficient(0.3, 10.0))
    assert trainee.domain_head.grl.coeff == pytest.approx(grl_coefficient(0.3, 10.0))
    assert loss.item() == pytest.approx(
        parts["l_s"] + 0.5 * parts["l_w"] + 0.2 * parts["l_d"], rel=1e-5
    )
    assert all(np.isfinite(v) for v in parts.values())
    # the coefficient follows progress
    _, parts_late = loss_fn(batch, 0.9)
    assert parts_late["grl"] == pytest.approx(grl_coefficient(0.9, 10.0))
    assert parts_late["grl"] > parts["grl"]


def test_make_loss_matches_hand_split_of_the_batch() -> None:
    """l_s on domain-0 rows, l_w on domain-1 rows with their mask; the domain term on features."""
    cfg = MentoredTrainParams(lambda_w=1.0, dann_weight=0.1)
    trainee = build_trainee("scratch+dann", ARCH, None, seed=0).eval()
    batch = _batch()
    loss, parts = make_loss(trainee, cfg)(batch, 0.5)
    with torch.no_grad():
        feats = trainee.segmenter.features(batch.images)
        logits = trainee.segmenter.head(feats)
        _, l_s, l_w = mentoring_loss(
            logits[:2], batch.targets[:2], logits[2:], batch.targets[2:], batch.annotated[2:]
        )
        assert trainee.domain_head is not None
        l_d = domain_loss(trainee.domain_head(feats), batch.domain)
    assert parts["l_s"] == pytest.approx(l_s.item(), rel=1e-5)
    assert parts["l_w"] == pytest.approx(l_w.item(), rel=1e-5)
    assert parts["l_d"] == pytest.approx(l_d.item(), rel=1e-5)
    assert loss.requires_grad


def test_make_loss_without_dann() -> None:
    trainee = build_trainee("scratch", ARCH, None, seed=0)
    loss, parts = make_loss(trainee, MentoredTrainParams())(_batch(), 0.1)
    assert set(parts) == {"l_s", "l_w"}
    assert loss.item() == pytest.approx(parts["l_s"] + parts["l_w"], rel=1e-5)


def test_make_loss_with_a_teacher_distils_on_unannotated_new_entries() -> None:
    cfg = MentoredTrainParams(lambda_w=1.0, distill_weight=0.5)
    baseline = build_trainee("scratch", ARCH, None, seed=5).segmenter.eval()  # p not saturated
    trainee = build_trainee("transfer+distill", ARCH, baseline, seed=0).eval()
    batch = _batch()
    loss, parts = make_loss(trainee, cfg, teacher=baseline)(batch, 0.5)
    assert set(parts) == {"l_s", "l_w", "l_k"}
    # the trainee starts as the teacher's copy: L_K is the entropy of the teacher's own soft
    # targets, > 0; a teacher-free loss lacks exactly 0.5 * L_K
    with torch.no_grad():
        p = torch.sigmoid(baseline(batch.images[2:]))
        free = ~batch.annotated[2:]
        entropy = -(p * p.log() + (1 - p) * (1 - p).log())
        expected = float((entropy * free).sum() / free.sum())
    assert parts["l_k"] == pytest.approx(expected, rel=1e-4)
    plain, _ = make_loss(trainee, cfg)(batch, 0.5)
    assert loss.item() == pytest.approx(plain.item() + 0.5 * parts["l_k"], rel=1e-5)
    assert not any(p.requires_grad for p in baseline.parameters())  # the teacher stays frozen
    loss.backward()
    assert all(p.grad is None for p in baseline.parameters())


def test_make_loss_image_normalisation_changes_only_l_w() -> None:
    trainee = build_trainee("scratch", ARCH, None, seed=0).eval()
    batch = _batch()
    _, per_batch = make_loss(trainee, MentoredTrainParams())(batch, 0.1)
    _, per_image = make_loss(trainee, MentoredTrainParams(lw_normalisation="image"))(batch, 0.1)
    assert per_batch["l_s"] == per_image["l_s"]
    assert per_batch["l_w"] != pytest.approx(per_image["l_w"])


def test_strategy_params_cover_only_what_the_strategy_reads() -> None:
    from mentoring.config import MentoredTrainParams
    from mentoring.training.strategies import strategy_params

    cfg = MentoredTrainParams()
    changed = cfg.model_copy(
        update={"dann_weight": 0.5, "omnia_epsilon": 0.05, "distill_weight": 0.3}
    )
    assert strategy_params("scratch", cfg) == strategy_params("scratch", changed)
    assert "strategies" not in strategy_params("scratch", cfg)
    assert strategy_params("scratch+dann", cfg) != strategy_params("scratch+dann", changed)
    assert strategy_params("transfer+omnia", cfg) != strategy_params("transfer+omnia", changed)
    assert strategy_params("transfer+omnia", cfg)["lambda_w"] == cfg.lambda_w
    assert strategy_params("transfer+distill", cfg) != strategy_params("transfer+distill", changed)
    for option in (
        {"confirm_exclusive": True},
        {"confirm_refine": 0.8},
        {"lw_normalisation": "image"},
    ):
        assert strategy_params("scratch", cfg) != strategy_params(
            "scratch", cfg.model_copy(update=option)
        )
