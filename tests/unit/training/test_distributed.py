"""Data-parallel plumbing (src/mentoring/training/distributed.py): batch sharding, the split
checks, and, in a real two-process gloo group, gradients equal to one process's."""

from __future__ import annotations

from itertools import accumulate
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from mentoring.config import MentoredTrainParams
from mentoring.data.batch import BalancedSource, Batch, SingleSource
from mentoring.losses import supervised_bce
from mentoring.models.segmenter import Segmenter
from mentoring.training import distributed
from mentoring.training.strategies import build_trainee, make_loss

ARCH: dict[str, object] = dict(
    in_channels=1, n_classes=2, width=4, depth=1, stride=8, context_stages=1
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = _gen(seed)
    images = torch.randint(0, 256, (n, 1, 32, 32), generator=g, dtype=torch.uint8)
    targets = torch.randint(0, 2, (n, 2, 4, 4), generator=g, dtype=torch.uint8)
    annotated = torch.rand((n, 2, 4, 4), generator=g) < 0.3
    return images, targets, annotated


def _single(n: int = 15, batch_size: int = 8) -> SingleSource:
    images, targets, _ = _data(n, 0)
    return SingleSource(images, targets, batch_size, augment=True)


def _balanced(batch_size: int = 8, fraction: float = 0.5) -> BalancedSource:
    oi, ot, _ = _data(20, 1)
    ni, nt, na = _data(6, 2)
    return BalancedSource(oi, ot, ni, nt, na, batch_size, fraction, augment=True)


def _as_rank(monkeypatch: pytest.MonkeyPatch, r: int, world: int) -> None:
    monkeypatch.setattr(distributed, "rank", lambda: r)
    monkeypatch.setattr(distributed, "world_size", lambda: world)


# ---------------------------------------------------------------- sharding


@pytest.mark.parametrize(("n", "parts", "world"), [(8, (), 2), (7, (), 2), (12, (6, 6), 3)])
def test_the_shares_of_all_ranks_are_the_batch_in_order(
    n: int, parts: tuple[int, ...], world: int
) -> None:
    shares = [distributed.shard_batch(n, parts, of_rank=r, world=world) for r in range(world)]
    assert all(s is not None for s in shares)
    rows = torch.cat([s for s in shares if s is not None])
    assert sorted(rows.tolist()) == list(range(n))  # every row once
    sizes = [len(s) for s in shares if s is not None]
    assert max(sizes) - min(sizes) <= 1
    sizes_of_parts = parts or (n,)
    for size, start in zip(sizes_of_parts, [0, *accumulate(sizes_of_parts)], strict=False):
        # each part: the ranks' shares, concatenated in rank order, are the part in order
        part = [int(i) for s in shares if s is not None for i in s if start <= i < start + size]
        assert part == list(range(start, start + size))
        if parts:  # every rank keeps the same share of every part: the batch's ratio
            for s in shares:
                assert s is not None
                assert int(((s >= start) & (s < start + size)).sum()) == size // world


def test_one_process_keeps_the_whole_batch() -> None:
    assert distributed.shard_batch(8) is None
    assert distributed.shard_weight(4, 8) == 1.0
    assert distributed.global_mean_factor(3) == 1.0
    assert distributed.all_reduce_sum([1.5, 2.0]) == [1.5, 2.0]
    assert distributed.same_on_all_ranks(3)


@pytest.mark.parametrize("make", [_single, _balanced])
def test_each_rank_gets_its_rows_of_the_single_process_batch(
    make: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same epoch order and the same augmentation draws: rank r's batch is exactly the rows of
    the single-process batch that shard_batch gives it."""
    whole = list(make().epoch(_gen(7)))
    world = 2
    for r in range(world):
        _as_rank(monkeypatch, r, world)
        source = make()
        mine = list(source.epoch(_gen(7)))
        assert len(mine) == len(whole) == source.steps()
        for b, (full, part) in enumerate(zip(whole, mine, strict=True)):
            parts = getattr(source, "parts", ())
            rows = distributed.shard_batch(len(full.images), parts, of_rank=r, world=world)
            assert rows is not None
            assert part.global_size == len(full.images), b
            for name in ("images", "targets", "annotated", "domain"):
                assert torch.equal(getattr(part, name), getattr(full, name)[rows]), (b, name)
    # the single-process source of a 15-image set has a short last batch: 8 + 7 -> 4/4, 4/3
    assert [len(x.images) for x in whole] in ([8, 7], [8, 8, 8])


def test_batch_size_not_divisible_by_nproc_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ValueError, match=r"train\.batch_size.*nproc") as err:
        distributed.check_batch_split(30, world=4)
    assert "30" in str(err.value) and "4 processes" in str(err.value)
    _as_rank(monkeypatch, 0, 4)
    with pytest.raises(ValueError, match=r"train\.batch_size.*nproc"):
        _single(batch_size=6)
    # 8 divides over 4 processes, but not its 6 original + 2 mentored images (fraction 0.25)
    with pytest.raises(ValueError, match=r"train\.batch_size.*nproc.*new_fraction"):
        _balanced(batch_size=8, fraction=0.25)
    with pytest.raises(ValueError, match="last batch"):
        _single(n=17, batch_size=8)  # 8 + 8 + 1: one image for four processes
    _balanced(batch_size=8)  # 4 + 4: fine


# ---------------------------------------------------------------- a real process group

STEPS = ("baseline", "dann")


def _step(kind: str) -> dict[str, torch.Tensor]:
    """One epoch of forward/backward passes (gradients accumulated, no optimizer step) the way
    the loop runs them; returns the epoch's mean loss, the gradients and the batch-norm buffers."""
    modules: nn.Module
    if kind == "baseline":
        torch.manual_seed(0)
        modules = model = Segmenter(**ARCH)  # type: ignore[arg-type]
        source: Any = _single(15, 8)  # 8 + 7 images: uneven shares in the last batch

        def loss_fn(batch: Batch, _p: float) -> tuple[torch.Tensor, dict[str, float]]:
            return supervised_bce(model(batch.images), batch.targets), {}

    else:  # balanced batches, masked loss, the domain head (batch norm, GRL) of DANN
        modules = trainee = build_trainee("scratch+dann", ARCH, None, seed=0)
        source = _balanced(8)
        loss_fn = make_loss(trainee, MentoredTrainParams(batch_size=8))
    total, seen = 0.0, 0.0
    with distributed.data_parallel(modules, loss_fn, "cpu") as step:
        modules.train()
        for b, batch in enumerate(source.epoch(_gen(3))):
            loss, _ = step(batch, 0.5 + 0.1 * b)
            n = batch.images.shape[0]
            (loss * distributed.shard_weight(n, batch.global_size)).backward()
            total += float(loss.detach()) * n
            seen += n
    assert not any(type(m).__name__ == "_SumSyncBatchNorm" for m in modules.modules())
    total, seen = distributed.all_reduce_sum([total, seen])
    out = {"loss": torch.tensor(total / seen, dtype=torch.float64)}
    for name, p in modules.named_parameters():
        assert p.grad is not None, name
        out[f"grad.{name}"] = p.grad.detach().clone()
    for name, buf in modules.named_buffers():
        out[f"buffer.{name}"] = buf.detach().clone()
    return out


def _worker(rank: int, world: int, store: str, out: str) -> None:
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        assert distributed.is_distributed() and distributed.world_size() == world
        assert distributed.all_reduce_sum([rank, 1.0]) == [sum(range(world)), world]
        assert distributed.all_reduce_mean([2.0 * rank]) == [world - 1.0]
        assert distributed.same_on_all_ranks(5) and not distributed.same_on_all_ranks(rank)
        results = {kind: _step(kind) for kind in STEPS}
        if rank == 0:
            torch.save(results, out)
    finally:
        dist.destroy_process_group()


def test_two_processes_compute_the_single_process_gradients(tmp_path: Path) -> None:
    """DDP's averaged gradients, the synchronised batch-norm statistics and the logged loss of
    two gloo processes equal those of one process on the whole batches, up to float rounding
    (the sums run in another order): the equivalence the integration test relies on."""
    out = tmp_path / "ddp.pt"
    mp.spawn(_worker, args=(2, str(tmp_path / "store"), str(out)), nprocs=2, join=True)
    torch.set_num_threads(1)
    ddp = torch.load(out, weights_only=True)
    for kind in STEPS:
        single = _step(kind)
        assert single.keys() == ddp[kind].keys()
        for key, want in single.items():
            got = ddp[kind][key]
            if want.is_floating_point():
                scale = float(want.abs().max()) or 1.0
                assert float((got - want).abs().max()) <= 1e-5 * scale, (kind, key)
            else:
                assert torch.equal(got, want), (kind, key)
