"""Tests of the balanced sampler and the training batches (data/sampler.py, data/batch.py)."""

from __future__ import annotations

import math

import pytest
import torch

from mentoring.data.batch import BalancedSource, Batch, augment, dihedral
from mentoring.data.sampler import BalancedBatchSampler


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- sampler


@pytest.mark.parametrize(("fraction", "n_a", "n_b"), [(0.5, 40, 6), (0.25, 37, 5), (0.5, 5, 50)])
def test_every_batch_has_the_exact_ratio(fraction: float, n_a: int, n_b: int) -> None:
    bs = 8
    s = BalancedBatchSampler(n_a, n_b, batch_size=bs, fraction_b=fraction)
    batches = list(s.epoch(_gen()))
    assert len(batches) == len(s) == math.ceil(n_a / bs)
    per_b = round(bs * fraction)
    for a, b in batches:
        assert len(b) == per_b
        assert len(a) == bs - per_b
        assert 0 <= int(a.min()) and int(a.max()) < n_a
        assert 0 <= int(b.min()) and int(b.max()) < n_b


def test_b_items_all_seen_and_evenly() -> None:
    s = BalancedBatchSampler(40, 6, batch_size=8, fraction_b=0.5)  # 5 batches x 4 = 20 B draws
    drawn = torch.cat([b for _, b in s.epoch(_gen(3))])
    counts = torch.bincount(drawn, minlength=6)
    assert (counts > 0).all()
    assert int(counts.max() - counts.min()) <= 1  # successive shuffles: equal use over time


def test_a_items_not_repeated_within_an_epoch() -> None:
    s = BalancedBatchSampler(40, 6, batch_size=8, fraction_b=0.5)
    drawn = torch.cat([a for a, _ in s.epoch(_gen(1))])
    assert len(drawn) == 20
    assert len(drawn.unique()) == len(drawn)


def test_sampler_deterministic_for_a_seed() -> None:
    s = BalancedBatchSampler(30, 7, batch_size=6, fraction_b=0.5)
    one = [(a.tolist(), b.tolist()) for a, b in s.epoch(_gen(5))]
    two = [(a.tolist(), b.tolist()) for a, b in s.epoch(_gen(5))]
    other = [(a.tolist(), b.tolist()) for a, b in s.epoch(_gen(6))]
    assert one == two
    assert one != other


@pytest.mark.parametrize(("n_a", "n_b"), [(0, 5), (5, 0), (0, 0)])
def test_sampler_rejects_empty_sets(n_a: int, n_b: int) -> None:
    with pytest.raises(ValueError, match="non-empty"):
        BalancedBatchSampler(n_a, n_b, batch_size=8)


# ---------------------------------------------------------------- batches

GRID, STRIDE, N_CLASSES = 4, 8, 2


def _patterns(n: int, offset: int, seed: int) -> torch.Tensor:
    """(n, GRID, GRID) uint8 patterns, all values distinct (no symmetry: each transform unique)."""
    g = _gen(seed)
    out = torch.stack([torch.randperm(120, generator=g)[: GRID * GRID] for _ in range(n)])
    return (out + offset).to(torch.uint8).view(n, GRID, GRID)


def _images(p: torch.Tensor) -> torch.Tensor:
    """Each cell of a pattern becomes a STRIDE x STRIDE block of pixels: (n, 1, 32, 32)."""
    return p.repeat_interleave(STRIDE, -2).repeat_interleave(STRIDE, -1).unsqueeze(1)


def _cells(images: torch.Tensor) -> torch.Tensor:
    """Back from images to the (n, GRID, GRID) pattern (top-left pixel of each cell)."""
    return images[:, 0, ::STRIDE, ::STRIDE]


def _targets(p: torch.Tensor) -> torch.Tensor:
    """Targets tied to the pattern: class 0 where the value is odd, class 1 where it is > 60."""
    return torch.stack([p % 2 == 1, p > 60], dim=1).to(torch.uint8)


def _annotated(p: torch.Tensor) -> torch.Tensor:
    return torch.stack([p % 3 == 0, p % 5 == 0], dim=1)


def test_augment_applies_the_same_transform_to_every_tensor() -> None:
    p = _patterns(16, 0, 0)
    images, targets, annotated = _images(p), _targets(p), _annotated(p)
    gi, gt, ga = augment(_gen(2), images, targets, annotated)
    assert gi.shape == images.shape and gt.shape == targets.shape and ga.dtype == torch.bool
    q = _cells(gi.float()).round().to(torch.uint8)
    assert torch.equal(gt, _targets(q))
    assert torch.equal(ga, _annotated(q))
    ks = set()
    for i in range(len(p)):
        match = [k for k in range(8) if torch.equal(dihedral(images[i], k), gi[i])]
        assert len(match) == 1
        ks.add(match[0])
        assert torch.equal(gt[i], dihedral(targets[i], match[0]))
        assert torch.equal(ga[i], dihedral(annotated[i], match[0]))
    assert len(ks) > 1  # per-sample transforms, not one for the whole batch
    assert torch.equal(images, _images(p))  # inputs untouched


def _source(aug: bool, fraction: float = 0.5) -> tuple[BalancedSource, torch.Tensor]:
    po, pn = _patterns(20, 0, 10), _patterns(6, 130, 11)  # new images: values >= 130
    src = BalancedSource(
        _images(po),
        _targets(po),
        _images(pn),
        _targets(pn),
        _annotated(pn),
        batch_size=8,
        new_fraction=fraction,
        augment=aug,
    )
    return src, pn


@pytest.mark.parametrize("aug", [False, True])
@pytest.mark.parametrize("fraction", [0.5, 0.25])
def test_balanced_source_batches(aug: bool, fraction: float) -> None:
    src, pn = _source(aug, fraction)
    batches = list(src.epoch(_gen(4)))
    assert len(batches) == src.steps() == math.ceil(20 / 8)
    n_new = round(8 * fraction)
    new_images = _images(pn)
    for batch in batches:
        assert isinstance(batch, Batch)
        assert batch.images.dtype == torch.float32
        assert float(batch.images.min()) >= 0.0 and float(batch.images.max()) <= 1.0
        assert batch.targets.dtype == torch.float32
        assert batch.annotated.dtype == torch.bool
        assert batch.domain.tolist() == [0] * (8 - n_new) + [1] * n_new
        orig, new = batch.domain == 0, batch.domain == 1
        assert batch.annotated[orig].all()
        raw = (batch.images * 255).round().to(torch.uint8)
        q = _cells(raw)
        assert (q[orig] < 130).all() and (q[new] >= 130).all()  # rows from the right set
        assert torch.equal(batch.targets, _targets(q).float())
        assert torch.equal(batch.annotated[new], _annotated(q[new]))
        assert not batch.annotated[new].all()  # the mask really is partial
        for i in torch.nonzero(new).flatten().tolist():
            srcs = [
                (j, k)
                for j in range(len(pn))
                for k in range(8 if aug else 1)
                if torch.equal(dihedral(new_images[j], k), raw[i])
            ]
            assert len(srcs) == 1
            j, k = srcs[0]
            assert torch.equal(batch.annotated[i], dihedral(_annotated(pn)[j], k))


def test_balanced_source_deterministic() -> None:
    src, _ = _source(True)
    a = [b.images for b in src.epoch(_gen(9))]
    b = [b.images for b in src.epoch(_gen(9))]
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
