"""Tests of the losses of eqs. (3) and (4) (src/mentoring/losses.py)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from mentoring.losses import masked_bce, mentoring_loss, supervised_bce


def _bce(logit: float, target: float) -> float:
    p = 1.0 / (1.0 + math.exp(-logit))
    return -(target * math.log(p) + (1 - target) * math.log(1 - p))


Case = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


@pytest.fixture
def case() -> Case:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 4, 4, generator=gen)
    targets = (torch.rand(2, 3, 4, 4, generator=gen) > 0.5).float()
    annotated = torch.rand(2, 3, 4, 4, generator=gen) > 0.6
    assert annotated.any() and (~annotated).any()
    return logits, targets, annotated


def test_masked_entries_get_exactly_zero_gradient(case: Case) -> None:
    logits, targets, annotated = case
    logits = logits.clone().requires_grad_(True)
    masked_bce(logits, targets, annotated).backward()
    assert logits.grad is not None
    assert torch.equal(logits.grad[~annotated], torch.zeros(int((~annotated).sum())))
    assert (logits.grad[annotated] != 0).all()


def test_equals_plain_bce_when_everything_annotated(case: Case) -> None:
    logits, targets, _ = case
    full = torch.ones_like(targets, dtype=torch.bool)
    assert torch.allclose(masked_bce(logits, targets, full), supervised_bce(logits, targets))
    assert torch.allclose(
        supervised_bce(logits, targets), F.binary_cross_entropy(torch.sigmoid(logits), targets)
    )


def test_normalised_by_number_of_annotated_entries() -> None:
    logits = torch.tensor([0.5, -1.0, 2.0, 3.0, -4.0, 0.0]).view(1, 1, 2, 3)
    targets = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 0.0]).view(1, 1, 2, 3)
    annotated = torch.tensor([True, True, True, False, False, False]).view(1, 1, 2, 3)
    expected = (_bce(0.5, 1) + _bce(-1.0, 0) + _bce(2.0, 0)) / 3  # N_annotated = 3, not N = 6
    assert masked_bce(logits, targets, annotated).item() == pytest.approx(expected, rel=1e-6)


def test_empty_mask_gives_zero_finite_loss_and_zero_gradient(case: Case) -> None:
    logits, targets, _ = case
    logits = logits.clone().requires_grad_(True)
    loss = masked_bce(logits, targets, torch.zeros_like(targets, dtype=torch.bool))
    assert torch.isfinite(loss)
    assert loss.item() == 0.0
    loss.backward()
    assert logits.grad is not None
    assert torch.isfinite(logits.grad).all()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_targets_outside_the_mask_change_nothing(case: Case) -> None:
    logits, targets, annotated = case
    other = torch.where(annotated, targets, 1.0 - targets)
    assert not torch.equal(other, targets)
    a = logits.clone().requires_grad_(True)
    b = logits.clone().requires_grad_(True)
    la, lb = masked_bce(a, targets, annotated), masked_bce(b, other, annotated)
    la.backward()
    lb.backward()
    assert a.grad is not None and b.grad is not None
    assert la.item() == lb.item()
    assert torch.equal(a.grad, b.grad)


@pytest.mark.parametrize("lam", [1.0, 0.5])
def test_mentoring_loss_combines_supervised_and_masked(lam: float) -> None:
    lo = torch.tensor([1.0, -2.0]).view(1, 1, 1, 2)
    to = torch.tensor([1.0, 1.0]).view(1, 1, 1, 2)
    ln = torch.tensor([0.3, -0.7, 1.5]).view(1, 1, 1, 3)
    tn = torch.tensor([0.0, 0.0, 1.0]).view(1, 1, 1, 3)
    an = torch.tensor([True, False, True]).view(1, 1, 1, 3)
    l_s_hand = (_bce(1.0, 1) + _bce(-2.0, 1)) / 2
    l_w_hand = (_bce(0.3, 0) + _bce(1.5, 1)) / 2
    total, l_s, l_w = mentoring_loss(lo, to, ln, tn, an, lambda_w=lam)
    assert l_s.item() == pytest.approx(l_s_hand, rel=1e-6)
    assert l_w.item() == pytest.approx(l_w_hand, rel=1e-6)
    assert total.item() == pytest.approx(l_s_hand + lam * l_w_hand, rel=1e-6)


def test_mentoring_loss_empty_half_contributes_zero() -> None:
    lo = torch.tensor([1.0, -2.0]).view(1, 1, 1, 2)
    to = torch.tensor([1.0, 0.0]).view(1, 1, 1, 2)
    empty = torch.zeros(0, 1, 1, 2)
    total, l_s, l_w = mentoring_loss(lo, to, empty, empty, empty.bool())
    assert l_w.item() == 0.0
    assert total.item() == pytest.approx(l_s.item())
    assert l_s.item() == pytest.approx((_bce(1.0, 1) + _bce(-2.0, 0)) / 2, rel=1e-6)
    total2, l_s2, l_w2 = mentoring_loss(empty, empty, lo, to, torch.ones_like(to).bool())
    assert l_s2.item() == 0.0
    assert torch.isfinite(total2)
    assert total2.item() == pytest.approx(l_w2.item())
    assert l_w2.item() > 0


def test_image_normalisation_weighs_every_annotated_image_alike() -> None:
    logits = torch.tensor([[[[0.0, 2.0, -1.0, 3.0]]], [[[1.0, 0.5, 0.0, 0.0]]]])
    targets = torch.tensor([[[[1.0, 0.0, 0.0, 1.0]]], [[[0.0, 1.0, 0.0, 0.0]]]])
    # image 0: three annotated entries; image 1: one; a third image without any
    annotated = torch.tensor([[[[True, True, True, False]]], [[[True, False, False, False]]]])
    logits3 = torch.cat([logits, torch.zeros(1, 1, 1, 4)])
    targets3 = torch.cat([targets, torch.ones(1, 1, 1, 4)])
    annotated3 = torch.cat([annotated, torch.zeros(1, 1, 1, 4, dtype=torch.bool)])
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    image0 = bce[0, 0, 0, :3].mean()
    image1 = bce[1, 0, 0, 0]
    got = masked_bce(logits3, targets3, annotated3, "image")
    assert got.item() == pytest.approx(((image0 + image1) / 2).item())
    per_batch = masked_bce(logits3, targets3, annotated3, "batch")
    assert per_batch.item() == pytest.approx(((bce[0, 0, 0, :3].sum() + image1) / 4).item())
    # no annotated entry at all: 0, finite
    empty = masked_bce(logits3, targets3, torch.zeros_like(annotated3), "image")
    assert empty.item() == 0.0
    with pytest.raises(ValueError, match="normalisation"):
        masked_bce(logits3, targets3, annotated3, "pixel")
