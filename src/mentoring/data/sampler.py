"""The balanced batch sampler: every batch holds set A and set B at a fixed ratio."""

from __future__ import annotations

from collections.abc import Iterator

import torch


class BalancedBatchSampler:
    """Index pairs (a_idx, b_idx) per batch, ``round(batch_size * fraction_b)`` from B.

    An epoch holds as many images as set A (so an epoch costs what an epoch of A alone costs):
    ``ceil(n_a / batch_size)`` batches whose A part is drawn from a fresh shuffle of A and whose
    B part from successive shuffles of B, so every item is seen equally often over time
    whatever the sizes of A and B, and every batch has the exact ratio.

    Example:
        >>> s = BalancedBatchSampler(100, 30, batch_size=8, fraction_b=0.5)
        >>> [(len(a), len(b)) for a, b in s.epoch(torch.Generator().manual_seed(0))][:2]
        [(4, 4), (4, 4)]
    """

    def __init__(self, n_a: int, n_b: int, batch_size: int, fraction_b: float = 0.5) -> None:
        if n_a <= 0 or n_b <= 0:
            raise ValueError(f"both sets must be non-empty (got {n_a} and {n_b} items)")
        self.per_b = min(max(1, round(batch_size * fraction_b)), batch_size - 1)
        self.per_a = batch_size - self.per_b
        if self.per_a < 1:
            raise ValueError(f"batch_size {batch_size} too small to hold both sets")
        self.n_a, self.n_b = n_a, n_b

        self.batch_size = batch_size

    def __len__(self) -> int:
        return (self.n_a + self.batch_size - 1) // self.batch_size

    def epoch(self, gen: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order_a = torch.cat(
            [torch.randperm(self.n_a, generator=gen), torch.randperm(self.n_a, generator=gen)]
        )
        if len(order_a) < len(self) * self.per_a:  # a tiny set A: keep cycling
            order_a = order_a.repeat((len(self) * self.per_a) // len(order_a) + 1)
        need = len(self) * self.per_b
        reps = (need + self.n_b - 1) // self.n_b
        order_b = torch.cat([torch.randperm(self.n_b, generator=gen) for _ in range(reps)])
        for s in range(len(self)):
            yield (
                order_a[s * self.per_a : (s + 1) * self.per_a],
                order_b[s * self.per_b : (s + 1) * self.per_b],
            )
