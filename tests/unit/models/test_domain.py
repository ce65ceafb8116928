"""Tests of the DANN pieces: gradient reversal, GRL ramp, domain segmenter (models/domain.py)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from mentoring.models.domain import DomainSegmenter, GradientReversal, domain_loss, grl_coefficient


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.mark.parametrize("coeff", [1.0, 0.3])
def test_gradient_reversal_identity_forward_negated_scaled_backward(coeff: float) -> None:
    grl = GradientReversal()
    grl.coeff = coeff
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    y = grl(x)
    assert torch.equal(y, x)
    upstream = torch.randn_like(x)
    y.backward(upstream)
    assert x.grad is not None
    assert torch.equal(x.grad, -coeff * upstream)


def test_grl_coefficient_ramp() -> None:
    assert grl_coefficient(0.0) == 0.0
    assert grl_coefficient(1.0) == pytest.approx(2 / (1 + math.exp(-10)) - 1, rel=1e-12)
    values = [grl_coefficient(p / 20) for p in range(21)]
    assert all(b > a for a, b in itertools.pairwise(values))
    assert all(0.0 <= v < 1.0 for v in values)


def test_domain_segmenter_layers_match_the_paper() -> None:
    head = DomainSegmenter(in_channels=12)
    layers = [m for m in head.modules() if not isinstance(m, (DomainSegmenter, nn.Sequential))]
    layers = [m for m in layers if not isinstance(m, GradientReversal)]
    kinds = [type(m) for m in layers]
    assert kinds == [nn.Conv2d, nn.ReLU, nn.BatchNorm2d, nn.Conv2d, nn.Sigmoid]
    c1, _, bn, c2, _ = layers
    assert (c1.in_channels, c1.out_channels, c1.kernel_size) == (12, 64, (1, 1))
    assert bn.num_features == 64
    assert (c2.in_channels, c2.out_channels, c2.kernel_size) == (64, 1, (1, 1))


def test_domain_segmenter_output_shape_and_range() -> None:
    head = DomainSegmenter(in_channels=8)
    out = head(torch.randn(3, 8, 5, 7))
    assert out.shape == (3, 1, 5, 7)
    assert ((out > 0) & (out < 1)).all()


def test_domain_loss_is_per_pixel_bce_against_the_domain() -> None:
    probs = torch.tensor([[0.1, 0.8], [0.3, 0.6], [0.9, 0.2], [0.4, 0.7]]).view(2, 1, 2, 2)
    domain = torch.tensor([0, 1])
    p0, p1 = probs[0].flatten().tolist(), probs[1].flatten().tolist()
    hand = (sum(-math.log(1 - p) for p in p0) + sum(-math.log(p) for p in p1)) / 8
    assert domain_loss(probs, domain).item() == pytest.approx(hand, rel=1e-5)
    # swapping the domains changes the value: the targets follow the domain of each row
    swapped = (sum(-math.log(p) for p in p0) + sum(-math.log(1 - p) for p in p1)) / 8
    assert domain_loss(probs, torch.tensor([1, 0])).item() == pytest.approx(swapped, rel=1e-5)
    assert hand != pytest.approx(swapped)


def test_gradient_to_features_is_reversed_through_the_head() -> None:
    head = DomainSegmenter(in_channels=6).eval()  # eval: batch norm does not depend on the batch
    feats = torch.randn(4, 6, 3, 3)
    domain = torch.tensor([0, 0, 1, 1])

    f_rev = feats.clone().requires_grad_(True)
    domain_loss(head(f_rev), domain).backward()
    f_plain = feats.clone().requires_grad_(True)
    domain_loss(head.net(f_plain), domain).backward()  # the same head without the GRL

    assert f_rev.grad is not None and f_plain.grad is not None
    assert f_plain.grad.abs().sum() > 0
    assert torch.allclose(f_rev.grad, -f_plain.grad)
    nz = f_plain.grad != 0
    assert (torch.sign(f_rev.grad[nz]) == -torch.sign(f_plain.grad[nz])).all()


def test_head_parameters_get_ordinary_gradient() -> None:
    """The reversal only concerns the features: the head itself still descends L_D."""
    head = DomainSegmenter(in_channels=6).eval()
    feats = torch.randn(4, 6, 3, 3)
    domain = torch.tensor([0, 0, 1, 1])
    domain_loss(head(feats), domain).backward()
    g_rev = [p.grad.clone() for p in head.parameters() if p.grad is not None]
    head.zero_grad()
    domain_loss(head.net(feats), domain).backward()
    g_plain = [p.grad for p in head.parameters() if p.grad is not None]
    assert len(g_rev) == len(g_plain) == len(list(head.parameters()))
    assert all(torch.allclose(a, b) for a, b in zip(g_rev, g_plain, strict=True))
