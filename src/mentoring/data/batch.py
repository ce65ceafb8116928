"""Training batches and the sources that draw them, with explicit annotation masks.

A :class:`Batch` mixes fully-labelled original images (``annotated`` all True, ``domain`` 0) and
mentored new images (``annotated`` from operator feedback, ``domain`` 1). Sources draw one epoch
of batches from a seeded generator, augmenting images, targets and masks alike.

Under a process group (``torchrun``, see :mod:`mentoring.training.distributed`) every rank draws the
same global epoch (order and augmentations) and keeps its share of each global batch: the batches
of all ranks together are the single-process batches.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from mentoring.data.sampler import BalancedBatchSampler
from mentoring.data.store import StoredImages
from mentoring.training import distributed


@dataclass(frozen=True)
class Batch:
    """One training batch.

    Attributes:
        images: (N, C_in, H, W) float32 in [0, 1].
        targets: (N, C, h, w) float32 in {0, 1}; meaningful only where ``annotated``.
        annotated: (N, C, h, w) bool; False entries are never backpropagated.
        domain: (N,) int64, 0 = original (fully labelled), 1 = new (mentored).
        global_size: images of the global batch this rank's share belongs to (every rank's
            together); None when the batch is whole (one process).
    """

    images: torch.Tensor
    targets: torch.Tensor
    annotated: torch.Tensor
    domain: torch.Tensor
    global_size: int | None = None

    def to(self, device: str, channels_last: bool = False) -> Batch:
        """On ``device``; from pinned memory to a GPU without blocking the host."""
        cuda = device.startswith("cuda")
        parts = [self.images, self.targets, self.annotated, self.domain]
        if cuda:
            parts = [t.pin_memory() for t in parts]
        images, targets, annotated, domain = (t.to(device, non_blocking=cuda) for t in parts)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return Batch(images, targets, annotated, domain, self.global_size)


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """Apply the k-th of the 8 flips/rotations of the square to (..., H, W) tensors."""
    if k >= 4:
        x = x.flip(-1)
    return torch.rot90(x, k % 4, dims=(-2, -1))


def _draw(gen: torch.Generator, n: int) -> torch.Tensor:
    return torch.randint(0, 8, (n,), generator=gen)


def _transform(ks: torch.Tensor, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    outs = [t.clone() for t in tensors]
    for k in ks.unique().tolist():
        sel = ks == k
        for src, dst in zip(tensors, outs, strict=True):
            dst[sel] = dihedral(src[sel], k)
    return tuple(outs)


def augment(gen: torch.Generator, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """One random dihedral transform per sample, the same for every tensor (image, target...)."""
    return _transform(_draw(gen, tensors[0].shape[0]), *tensors)


def _make(
    images: torch.Tensor,
    targets: torch.Tensor,
    annotated: torch.Tensor,
    domain: torch.Tensor,
    gen: torch.Generator,
    aug: bool,
    rows: torch.Tensor | None = None,
    n_global: int = 0,
) -> Batch:
    """The batch of these (uint8) rows; ``rows``: which rows of a global batch of ``n_global``
    they are (None: the whole batch). The augmentations are drawn for the whole global batch,
    so a rank's rows get exactly the transforms that one process would give them."""
    if aug:
        ks = _draw(gen, images.shape[0] if rows is None else n_global)
        images, targets, annotated = _transform(
            ks if rows is None else ks[rows], images, targets, annotated
        )
    return Batch(
        images.float() / 255.0,
        targets.float(),
        annotated,
        domain,
        None if rows is None else n_global,
    )


class SingleSource:
    """Shuffled batches of one fully-labelled set (uint8 images and targets)."""

    def __init__(
        self,
        images: torch.Tensor | StoredImages,
        targets: torch.Tensor,
        batch_size: int,
        augment: bool = True,
    ) -> None:
        self.images, self.targets = images, targets
        self.batch_size, self.augment = batch_size, augment
        distributed.check_batch_split(batch_size)
        last = len(images) % batch_size
        if 0 < last < distributed.world_size():
            raise ValueError(
                f"the last batch of an epoch holds {last} of the {len(images)} images, fewer "
                f"than the {distributed.world_size()} processes: change train_baseline.batch_size"
            )

    def steps(self) -> int:
        return (len(self.images) + self.batch_size - 1) // self.batch_size

    def epoch(self, gen: torch.Generator) -> Iterator[Batch]:
        order = torch.randperm(len(self.images), generator=gen)
        for b in range(self.steps()):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            rows = distributed.shard_batch(len(idx))  # the last batch may be short: any split
            mine = idx if rows is None else idx[rows]
            y = self.targets[mine]
            yield _make(
                self.images[mine],
                y,
                torch.ones_like(y, dtype=torch.bool),
                torch.zeros(len(mine), dtype=torch.long),
                gen,
                self.augment,
                rows,
                len(idx),
            )


class BalancedSource:
    """Batches mixing original and mentored images at a fixed ratio (1:1 by default).

    The paper balances batches because mentored images carry a higher loss (their annotated
    areas are defects or false positives, rarely background): a varying share of them would make
    the gradient strength jump from batch to batch. An epoch holds as many images as the
    original set (so it costs what a baseline epoch costs): with a 1:1 ratio, half of the
    original images and as many mentored ones, each drawn from successive shuffles.
    """

    def __init__(
        self,
        orig_images: torch.Tensor | StoredImages,
        orig_targets: torch.Tensor,
        new_images: torch.Tensor | StoredImages,
        new_targets: torch.Tensor,
        new_annotated: torch.Tensor,
        batch_size: int,
        new_fraction: float = 0.5,
        augment: bool = True,
    ) -> None:
        self.oi, self.ot = orig_images, orig_targets
        self.ni, self.nt, self.na = new_images, new_targets, new_annotated
        self.sampler = BalancedBatchSampler(
            len(orig_images), len(new_images), batch_size, new_fraction
        )
        self.augment = augment
        # each rank keeps its share of both parts: every rank's batch has the exact ratio too
        self.parts = (self.sampler.per_a, self.sampler.per_b)
        distributed.check_batch_split(batch_size, self.parts)

    def steps(self) -> int:
        return len(self.sampler)

    def epoch(self, gen: torch.Generator) -> Iterator[Batch]:
        rows = distributed.shard_batch(self.sampler.batch_size, self.parts)
        for ia, ib in self.sampler.epoch(gen):
            if rows is not None:  # rows of the batch [ia, ib] -> indices into ia and ib
                n_a = len(ia)
                ia, ib = ia[rows[rows < n_a]], ib[rows[rows >= n_a] - n_a]
            yo = self.ot[ia]
            images = torch.cat([self.oi[ia], self.ni[ib]])
            targets = torch.cat([yo, self.nt[ib]])
            annotated = torch.cat([torch.ones_like(yo, dtype=torch.bool), self.na[ib]])
            domain = torch.cat(
                [torch.zeros(len(ia), dtype=torch.long), torch.ones(len(ib), dtype=torch.long)]
            )
            yield _make(
                images, targets, annotated, domain, gen, self.augment, rows, self.sampler.batch_size
            )
