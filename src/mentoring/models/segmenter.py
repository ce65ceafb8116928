"""A small fully-convolutional U-Net-like defect segmenter with a cell-grid output.

The network maps images (N, C_in, H, W) to per-area, per-class logits (N, C, H/s, W/s), where s is
the output stride (8 by default): one area (cell) per s x s pixels. It knows nothing of losses,
domains or feedback (style rule 5): training code calls :meth:`Segmenter.features` when it needs
the feature map (the DANN domain head reads it) and :meth:`Segmenter.head` for the logits.

Layout: a stride-2 stem, one encoder stage per further halving down to the output stride, then
``context_stages`` stages below it for context (a scratch and a reflection differ by their
surroundings); a decoder brings the context back up to the output stride through skip connections.

Example:
    >>> net = Segmenter(in_channels=1, n_classes=6)
    >>> net(torch.zeros(2, 1, 128, 128)).shape
    torch.Size([2, 6, 16, 16])
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class Segmenter(nn.Module):
    """Encoder-decoder producing (N, n_classes, H/stride, W/stride) logits.

    Args:
        in_channels: image channels (1 gray, 3 RGB).
        n_classes: defect classes, one output channel (independent sigmoid) each.
        width: channels of the stem; doubled at each halving, capped at ``8 * width``.
        depth: 3x3 convolutions per encoder stage.
        stride: output stride, a power of two >= 2.
        context_stages: stages below the output stride, merged back by the decoder.
        prior: initial probability of every output; defects are rare (about 0.1% of areas per
            class), so starting near it instead of 0.5 avoids a long first phase where the
            network only learns that everything is healthy (Lin et al., focal loss paper).
    """

    def __init__(
        self,
        in_channels: int = 1,
        n_classes: int = 6,
        width: int = 16,
        depth: int = 2,
        stride: int = 8,
        context_stages: int = 1,
        prior: float = 0.01,
    ) -> None:
        super().__init__()
        n_down = int(math.log2(stride)) if stride >= 2 else 0
        if stride < 2 or 2**n_down != stride:
            raise ValueError(f"stride must be a power of two >= 2, got {stride}")
        self.stride, self.n_classes, self.in_channels = stride, n_classes, in_channels
        ch = [min(width * 2**i, 8 * width) for i in range(n_down + context_stages)]
        self.stem = _conv(in_channels, ch[0], stride=2)
        stages: list[nn.Module] = []
        for i, c in enumerate(ch):
            first = nn.Identity() if i == 0 else _conv(ch[i - 1], c, stride=2)
            rest = [_conv(c, c) for _ in range(depth - 1)]
            stages.append(nn.Sequential(first, *rest))
        self.encoder = nn.ModuleList(stages)
        self.out_level = n_down - 1  # index of the encoder stage at the output stride
        self.decoder = nn.ModuleList(
            _conv(ch[i] + ch[i + 1], ch[i]) for i in range(len(ch) - 2, self.out_level - 1, -1)
        )
        self.feature_channels = ch[self.out_level]
        self.classifier = nn.Conv2d(self.feature_channels, n_classes, 1)
        assert self.classifier.bias is not None
        nn.init.constant_(self.classifier.bias, -math.log((1 - prior) / prior))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in, H, W) images in [0, 1] -> (N, feature_channels, H/stride, W/stride)."""
        skips = []
        x = self.stem(x - 0.5)
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        x = skips[-1]
        for block, skip in zip(self.decoder, reversed(skips[self.out_level : -1]), strict=True):
            x = nn.functional.interpolate(x, size=skip.shape[-2:], mode="nearest")
            x = block(torch.cat([skip, x], dim=1))
        return x

    def head(self, features: torch.Tensor) -> torch.Tensor:
        """(N, F, h, w) features -> (N, n_classes, h, w) logits."""
        return self.classifier(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in, H, W) images in [0, 1] -> (N, n_classes, H/stride, W/stride) logits."""
        return self.head(self.features(x))
