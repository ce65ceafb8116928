"""The served form of a segmenter: what the registry holds and ``mlflow.pyfunc`` predicts with.

Example:
    >>> model = mlflow.pyfunc.load_model("models:/defect-segmenter@champion")  # doctest: +SKIP
    >>> probs = model.predict(images)  # (N, C_in, H, W) float32 in [0, 1] -> (N, C, h, w)
"""

from __future__ import annotations

import torch
from torch import nn

from mentoring.models.segmenter import Segmenter


class DeployedSegmenter(nn.Module):
    """Images (N, C_in, H, W), float32 in [0, 1] -> per-area class probabilities (N, C, h, w).

    ``classes`` names the C output channels, in order.
    """

    def __init__(self, segmenter: Segmenter, classes: tuple[str, ...] | list[str]) -> None:
        super().__init__()
        self.segmenter = segmenter
        self.classes = list(classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.segmenter(images.to(torch.float32)))
