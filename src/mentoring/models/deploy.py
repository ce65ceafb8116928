"""The served form of a segmenter: what the registry holds and ``mlflow.pyfunc`` predicts with.

The registry holds it as a TorchScript graph (:func:`trace`): serving it needs torch, not this
package.

Example:
    >>> model = mlflow.pyfunc.load_model("models:/defect-segmenter@champion")  # doctest: +SKIP
    >>> probs = model.predict(images)  # (N, C_in, H, W) uint8 pixels -> (N, C, h, w)
"""

from __future__ import annotations

import torch
from torch import nn

from mentoring.models.segmenter import Segmenter


class DeployedSegmenter(nn.Module):
    """Images (N, C_in, H, W), uint8 pixels as the camera gives them -> per-area class
    probabilities (N, C, h, w).

    The pixels are scaled to [0, 1] inside (``/ 255``, the stages' own scaling), so a client sends
    the raw image: as JSON that is about a fifth of the bytes of floats. ``classes`` names the C
    output channels, in order.
    """

    def __init__(self, segmenter: Segmenter, classes: tuple[str, ...] | list[str]) -> None:
        super().__init__()
        self.segmenter = segmenter
        self.classes = list(classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.segmenter(images.to(torch.float32) / 255.0))


def trace(served: DeployedSegmenter, image_shape: tuple[int, int, int]) -> torch.jit.ScriptModule:
    """A TorchScript graph of ``served``, traced on one image of ``image_shape`` (C, H, W).

    The graph takes any batch size and any image size the segmenter takes (its sizes are read
    from the input, not baked in: checked on another size before it is returned).

    Raises:
        RuntimeError: the traced graph does not reproduce the module.
    """
    served = served.eval()
    c, h, w = image_shape
    with torch.no_grad():
        example = torch.zeros(1, c, h, w, dtype=torch.uint8)
        graph = torch.jit.trace(served, example, check_trace=False)
        gen = torch.Generator().manual_seed(0)
        probe = torch.randint(0, 256, (2, c, 2 * h, w), generator=gen, dtype=torch.uint8)
        if not torch.allclose(graph(probe), served(probe), atol=1e-6):
            raise RuntimeError("the traced segmenter does not reproduce the module")
    assert isinstance(graph, torch.jit.ScriptModule)
    return graph
