"""Domain-adversarial pieces (DANN, Ganin et al. 2016): gradient reversal and a domain head.

The domain head is the paper's fully-convolutional **domain segmenter** (section 3.4.4, after
"FCNs in the Wild"): 1x1 conv (64 filters) -> ReLU -> batch norm -> 1x1 conv (1 filter) ->
sigmoid, classifying the domain of every output cell. Put behind a :class:`GradientReversal`,
it trains to tell the domains apart while the segmenter's features learn to make that impossible.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn


class _ReverseGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, coeff: float) -> torch.Tensor:
        ctx.coeff = coeff
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.coeff * grad, None


class GradientReversal(nn.Module):
    """Identity forward; multiplies the gradient by ``-coeff`` backward."""

    def __init__(self) -> None:
        super().__init__()
        self.coeff = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _ReverseGrad.apply(x, self.coeff)


def grl_coefficient(progress: float, gamma: float = 10.0) -> float:
    """Ganin et al.'s ramp: 2 / (1 + exp(-gamma * p)) - 1, from 0 at p = 0 towards 1."""
    return 2.0 / (1.0 + math.exp(-gamma * progress)) - 1.0


class DomainSegmenter(nn.Module):
    """(N, F, h, w) features -> (N, 1, h, w) probability that each cell is of the new domain."""

    def __init__(self, in_channels: int, hidden: int = 64) -> None:
        super().__init__()
        self.grl = GradientReversal()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 1),
            nn.ReLU(inplace=True),
            nn.BatchNorm2d(hidden),
            nn.Conv2d(hidden, 1, 1),
            nn.Sigmoid(),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(self.grl(features))


def domain_loss(probs: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
    """Per-cell domain BCE, averaged: ``probs`` (N, 1, h, w), ``domain`` (N,) 0 original 1 new."""
    target = domain.to(probs.dtype).view(-1, 1, 1, 1).expand_as(probs)
    return nn.functional.binary_cross_entropy(probs.clamp(1e-6, 1 - 1e-6), target)


def domain_accuracy(probs: torch.Tensor, domain: torch.Tensor) -> float:
    """Share of cells whose domain the head tells right (p >= 0.5 = new): 0.5 is chance."""
    target = domain.view(-1, 1, 1, 1).expand_as(probs).bool()
    return float(((probs >= 0.5) == target).float().mean())
