"""Data-parallel training across processes (``torchrun``): the plumbing of the loop.

On a node with 4 GPUs: ``mentoring train --strategy transfer+omnia -S train.nproc=4 -S
base.device=cuda`` (``-S train_baseline.nproc=4`` for the baseline); see docs/distributed.md.

With ``train.nproc`` (``train_baseline.nproc``) above 1, ``mentoring train`` re-executes itself
under ``python -m torch.distributed.run --standalone --nproc-per-node N -m mentoring.stages.train``
(:func:`torchrun`); a multi-node launcher (Kubeflow Trainer's TrainJob) runs ``torchrun ... -m
mentoring.stages.train`` itself. Every process then runs the same stage:

- :func:`process_group` joins the group of the torchrun environment (``RANK``, ``WORLD_SIZE``,
  ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``): gloo on CPU, nccl on CUDA, each rank on
  ``cuda:LOCAL_RANK``; it leaves the group at the end. Without ``WORLD_SIZE`` > 1 it does nothing:
  one plain process, exactly as before.
- The batch sources draw the **same global epoch** from the shared seeded generator on every rank
  and keep their share of every global batch (:func:`shard_batch`), original and mentored parts
  split alike, so a global batch is the single-process batch (1:1 ratio and augmentation draws
  included) and each rank holds ``batch_size / W`` images of it.
- :func:`data_parallel` runs the loss inside ``DistributedDataParallel`` (gradients averaged
  across ranks) with **synchronised batch norm** (statistics of the global batch, as a single
  process computes them; ``torch.nn.SyncBatchNorm`` on CUDA, an all-reduce of the sums on CPU,
  where torch has none). Mean losses over a rank's rows are weighted by the rank's share
  (:func:`shard_weight`) and the masked loss ``L_W`` is normalised by the annotated entries of
  the global batch, so the averaged gradient is the single-process gradient.
- Rank 0 alone opens the tracking store, shows progress, writes the checkpoint (every rank reads
  it on resume), the outputs and the MLflow logs; the logged losses are summed over the ranks
  (:func:`all_reduce_sum`) into the means of the global batches, as one process logs them.

Determinism: on CPU a run repeats exactly for a given number of processes, and its gradients are
those of one process up to the order of float sums (about 1e-6 relative); training amplifies
that rounding as it amplifies a change of thread count, so the weights match one process's
within float tolerance, not bit for bit. On GPU, within tolerance too (nccl's reduction order,
kernels without a deterministic variant).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel

#: the step function of the loop: (batch, progress) -> (loss, named parts)
StepFn = Callable[[Any, float], tuple[torch.Tensor, dict[str, float]]]


def launched() -> bool:
    """True inside a process started by torchrun (or any launcher that sets ``WORLD_SIZE``)."""
    return "WORLD_SIZE" in os.environ


def is_distributed() -> bool:
    """True when this process trains in a process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """Processes training together: the group's size, 1 outside a group."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank: the group's, else ``RANK`` of the torchrun environment, else 0.

    Known before the group is joined, so rank 0 alone opens the tracking store."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    """Rank 0: the process that writes files and logs."""
    return rank() == 0


def init_from_env(device: str) -> str:
    """Join the process group of the torchrun environment; return this rank's device.

    No-op (returns ``device``) unless ``WORLD_SIZE`` > 1 or when the group already exists.
    CUDA: nccl, ``cuda:LOCAL_RANK`` whatever index ``device`` names; CPU: gloo.

    Raises:
        RuntimeError: ``LOCAL_RANK`` names a GPU this node does not have.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return device
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        if local >= torch.cuda.device_count():
            raise RuntimeError(
                f"LOCAL_RANK {local} but this node has {torch.cuda.device_count()} CUDA "
                "device(s): train.nproc (torchrun --nproc-per-node) must not exceed them"
            )
        device = f"cuda:{local}"
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        if device.startswith("cuda"):
            dist.init_process_group("nccl", device_id=torch.device(device))
        else:
            dist.init_process_group("gloo")
    return device


@contextmanager
def process_group(device: str) -> Iterator[str]:
    """:func:`init_from_env` for the block, then leave the group (if this block joined it)."""
    joined = not (dist.is_available() and dist.is_initialized())
    device = init_from_env(device)
    try:
        yield device
    finally:
        if joined and dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op in one process)."""
    if is_distributed():
        dist.barrier()


def _collective_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _all_reduce(values: Sequence[float], op: dist.ReduceOp.RedOpType) -> list[float]:
    if not is_distributed():
        return [float(v) for v in values]
    t = torch.tensor(list(values), dtype=torch.float64, device=_collective_device())
    dist.all_reduce(t, op=op)
    return t.tolist()


def all_reduce_sum(values: Sequence[float]) -> list[float]:
    """Element-wise sums over the ranks (float64); the values themselves in one process."""
    return _all_reduce(values, dist.ReduceOp.SUM)


def all_reduce_mean(values: Sequence[float]) -> list[float]:
    """Element-wise means over the ranks; the values themselves in one process."""
    return [v / world_size() for v in all_reduce_sum(values)]


def same_on_all_ranks(value: float) -> bool:
    """True when every rank holds ``value`` (always in one process)."""
    hi, neg_lo = _all_reduce([value, -value], dist.ReduceOp.MAX)
    return hi == -neg_lo


def check_batch_split(batch_size: int, parts: Sequence[int] = (), world: int | None = None) -> None:
    """Raise unless a batch of ``batch_size`` and each of its ``parts`` split evenly over the
    ranks (``world``, default the group's size).

    Raises:
        ValueError: naming ``train.batch_size`` and ``nproc``.
    """
    world = world_size() if world is None else world
    if all(p % world == 0 for p in (batch_size, *parts)):
        return
    detail = f" (parts of {' + '.join(map(str, parts))} images)" if parts else ""
    raise ValueError(
        f"batch_size {batch_size}{detail} does not split evenly over {world} processes: set "
        f"train.batch_size (train_baseline.batch_size for the baseline) to a multiple of "
        f"nproc x nodes = {world}"
        + (" whose parts (train.new_fraction) are multiples too" if parts else "")
    )


def _bounds(size: int, r: int, world: int) -> tuple[int, int]:
    q, m = divmod(size, world)
    lo = r * q + min(r, m)
    return lo, lo + q + (1 if r < m else 0)


def shard_batch(
    n: int, parts: Sequence[int] = (), of_rank: int | None = None, world: int | None = None
) -> torch.Tensor | None:
    """The rows of a global batch of ``n`` rows that rank ``of_rank`` of ``world`` keeps.

    ``parts``: sizes of consecutive parts of the batch (original, mentored) that each rank
    shares alike, so every rank keeps the batch's ratio; default one part. A part that does not
    split evenly (the last, short batch of an epoch) gives its first ranks one row more.
    Defaults: this process's rank and the group's size. None when ``world`` is 1 (all rows).

    Raises:
        ValueError: a part has fewer rows than there are ranks.

    Example:
        >>> shard_batch(8, (4, 4), of_rank=1, world=2).tolist()
        [2, 3, 6, 7]
    """
    world = world_size() if world is None else world
    if world == 1:
        return None
    r = rank() if of_rank is None else of_rank
    sizes = tuple(parts) or (n,)
    if sum(sizes) != n:
        raise ValueError(f"parts {sizes} do not add up to the batch's {n} rows")
    rows, start = [], 0
    for size in sizes:
        if size < world:
            raise ValueError(
                f"a batch part of {size} image(s) cannot feed {world} processes: make "
                f"train.batch_size (train_baseline.batch_size) larger than nproc x nodes"
            )
        lo, hi = _bounds(size, r, world)
        rows.append(torch.arange(start + lo, start + hi))
        start += size
    return torch.cat(rows)


def shard_weight(rows: int, global_rows: int | None) -> float:
    """The factor of a rank's mean loss over its ``rows`` so that DDP's average over the ranks
    is the mean over the ``global_rows`` of the global batch: ``rows * W / global_rows`` (1.0
    for even shards and in one process)."""
    if global_rows is None or not is_distributed():
        return 1.0
    return rows * world_size() / global_rows


def global_mean_factor(count: int) -> float:
    """The factor of a rank's mean over its own ``count`` entries (``sum / max(count, 1)``)
    that makes DDP's average over the ranks the mean over every rank's entries:
    ``W * max(count, 1) / max(total, 1)``. 1.0 in one process. One all-reduce."""
    if not is_distributed():
        return 1.0
    (total,) = all_reduce_sum([count])
    return world_size() * max(count, 1) / max(total, 1.0)


class _AllReduceSum(torch.autograd.Function):
    """Sum over the ranks whose gradient is the sum of the ranks' gradients."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, group: Any) -> torch.Tensor:
        ctx.group = group
        out = x.clone()
        dist.all_reduce(out, group=group)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        out = grad.clone()
        dist.all_reduce(out, group=ctx.group)
        return out, None


class _SumSyncBatchNorm(nn.BatchNorm2d):
    """Batch norm over the global batch for CPU (gloo), where ``nn.SyncBatchNorm`` refuses:
    the per-channel sums and squared deviations are all-reduced (in float64) before
    normalising, and the running statistics follow the global mean and unbiased variance."""

    group: Any = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not is_distributed():
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1, *[1] * (x.dim() - 2)]
        count = torch.tensor([x.numel() // x.shape[1]], dtype=torch.float64, device=x.device)
        summed = _AllReduceSum.apply(
            torch.cat([x.sum(dims, dtype=torch.float64), count]), self.group
        )
        n = float(summed[-1].detach())
        mean = (summed[:-1] / n).to(x.dtype)
        xc = x - mean.view(shape)
        var = (_AllReduceSum.apply((xc * xc).sum(dims, dtype=torch.float64), self.group) / n).to(
            x.dtype
        )
        y = xc * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats and self.running_mean is not None:
            assert self.running_var is not None and self.num_batches_tracked is not None
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = (
                    1.0 / float(self.num_batches_tracked)
                    if self.momentum is None
                    else self.momentum
                )
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                unbiased = var.detach() * (n / max(n - 1.0, 1.0))
                self.running_var.mul_(1 - m).add_(unbiased, alpha=m)
        return y


def _synced(bn: _BatchNorm, device: str, group: Any) -> nn.Module:
    """A synchronised batch norm sharing ``bn``'s parameters and buffers (same state keys)."""
    cls: type[_BatchNorm] = nn.SyncBatchNorm if device.startswith("cuda") else _SumSyncBatchNorm
    new = cls(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
    if isinstance(new, _SumSyncBatchNorm):
        new.group = group
    new.weight, new.bias = bn.weight, bn.bias
    new.running_mean, new.running_var = bn.running_mean, bn.running_var
    new.num_batches_tracked = bn.num_batches_tracked
    new.train(bn.training)
    return new


class _Step(nn.Module):
    """The loss as a module's forward: DDP averages the gradients of what its forward ran."""

    def __init__(self, inner: nn.Module, loss_fn: StepFn) -> None:
        super().__init__()
        self.inner, self.loss_fn = inner, loss_fn

    def forward(self, batch: Any, progress: float) -> tuple[torch.Tensor, dict[str, float]]:
        return self.loss_fn(batch, progress)


@contextmanager
def data_parallel(modules: nn.Module, loss_fn: StepFn, device: str) -> Iterator[StepFn]:
    """The step function to train ``modules`` with: ``loss_fn`` itself in one process; under a
    process group, ``loss_fn`` run inside ``DistributedDataParallel`` with every batch norm of
    ``modules`` synchronised (put back as plain batch norms, with the trained statistics, on
    exit, so saved and logged models are ordinary modules)."""
    if not is_distributed():
        yield loss_fn
        return
    group = None if device.startswith("cuda") else dist.new_group(backend="gloo")
    swapped: list[tuple[nn.Module, str, nn.Module]] = []
    for parent in list(modules.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, _BatchNorm) and not isinstance(
                child, nn.SyncBatchNorm | _SumSyncBatchNorm
            ):
                swapped.append((parent, name, child))
                setattr(parent, name, _synced(child, device, group))
    try:
        # buffers need no broadcast: synchronised batch norms keep them equal on every rank
        ddp = DistributedDataParallel(_Step(modules, loss_fn), forward_sync_buffers=False)
        yield ddp
    finally:
        for parent, name, child in swapped:
            child.train(getattr(parent, name).training)
            setattr(parent, name, child)
        if group is not None:
            dist.destroy_process_group(group)


def check_launch(nproc: int, batch_size: int, device: str) -> None:
    """Fail before launching ``nproc`` processes that could not train (one node).

    Raises:
        ValueError: ``batch_size`` does not split over ``nproc`` (:func:`check_batch_split`).
        RuntimeError: CUDA asked for, with fewer GPUs than ``nproc`` on this node.
    """
    check_batch_split(batch_size, world=nproc)
    if device.startswith("cuda") and nproc > torch.cuda.device_count():
        raise RuntimeError(
            f"train.nproc is {nproc} but this node has {torch.cuda.device_count()} CUDA "
            "device(s): one process per GPU"
        )


def torchrun(nproc: int, module: str, args: Sequence[str]) -> int:
    """Run ``python -m module args`` as ``nproc`` processes of one node under torchrun
    (``--standalone``: a local rendezvous); return its exit code."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        str(nproc),
        "-m",
        module,
        *args,
    ]
    return subprocess.run(cmd, check=False).returncode
