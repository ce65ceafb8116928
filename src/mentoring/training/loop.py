"""The training loop: seeded, deterministic on CPU, checkpointed every epoch, resumable.

Determinism: the caller initialises the modules from the seed; the loop draws each epoch's order
and augmentations from a generator seeded with ``(seed, epoch)``, so a run resumed from the
checkpoint of epoch k draws exactly what an uninterrupted run draws from epoch k + 1. With the
optimizer state saved too, the final weights are identical.

Under a process group (``torchrun``, ``train.nproc`` > 1; see
:mod:`mentoring.training.distributed`) every rank runs this loop on its share of each global
batch inside ``DistributedDataParallel``; the epoch's losses are summed over the ranks, rank 0
alone shows progress, writes the checkpoint and calls ``on_epoch``, and every rank reads the
checkpoint on resume. The weights match a single process within float tolerance.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn

from mentoring.config import TrainParams
from mentoring.data.batch import Batch
from mentoring.io import write_with
from mentoring.models.store import non_finite
from mentoring.runtime import autocast
from mentoring.training import distributed

#: loss of a batch at training progress p in [0, 1) -> (scalar loss, named parts for logging)
LossFn = Callable[[Batch, float], tuple[torch.Tensor, dict[str, float]]]


class BatchSource(Protocol):
    def steps(self) -> int: ...

    def epoch(self, gen: torch.Generator) -> Iterator[Batch]: ...


@dataclass(frozen=True)
class EpochStats:
    epoch: int  # 1-based
    loss: float  # mean training loss over the epoch's batches
    seconds: float  # wall time of the epoch
    images_per_s: float  # training throughput
    parts: dict[str, float] = field(default_factory=dict)  # mean of each loss part (L_S, L_W...)


def fingerprint(*parts: Any) -> str:
    """A short stable hash of the configuration a checkpoint belongs to."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def compile_in_place(modules: torch.nn.Module) -> list[str]:
    """``torch.compile`` the modules the losses call, in place (``Module.compile``: parameters,
    buffers and state-dict keys stay those of the module). A container without its own
    ``forward`` (a strategy's segmenter + domain head) has each direct child compiled instead.
    Returns the names of what was compiled."""
    if type(modules).forward is not torch.nn.Module.forward:
        modules.compile()
        return [type(modules).__name__]
    names = []
    for name, child in modules.named_children():
        child.compile()
        names.append(name)
    return names


def tensor_digest(*tensors: torch.Tensor) -> str:
    """sha256 of tensors' bytes: ties a checkpoint to the exact training data, not just ids
    (:func:`mentoring.data.store.digest`, which also hashes images read from the store)."""
    from mentoring.data.store import digest

    return digest(*tensors)


def lr_factor(schedule: str, step: int, warmup: int, total: int) -> float:
    """Multiplier of the peak learning rate at optimisation step ``step`` (0-based).

    ``cosine``: linear warm-up over ``warmup`` steps (one epoch), then a cosine decay to 1% of
    the peak at ``total`` steps; it converges much further than a constant rate in the short
    budgets of CPU runs. ``constant``: always 1.
    """
    if schedule == "constant":
        return 1.0
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * progress))


def _save(path: Path, state: dict[str, Any]) -> None:
    write_with(path, lambda tmp: torch.save(state, tmp))


class DivergedError(RuntimeError):
    """The training loss or a weight became NaN or infinite: the stage fails, writing no model."""


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be resumed from: corrupt, truncated, or not plain data."""


def load_checkpoint(path: Path, device: str = "cpu") -> dict[str, Any]:
    """The state a checkpoint holds, read with ``weights_only=True``: tensors, dicts, lists and
    numbers only, so a crafted file on a shared checkpoint volume cannot run code when it is
    unpickled. Everything the loop saves is such data (the epoch streams are re-seeded from
    ``(seed, epoch)``, so no RNG object is saved).

    Raises:
        CheckpointError: naming the file and how to start over.
    """
    start_over = "delete it, or run again with --no-resume, to train from the first epoch"
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # torch raises several types: UnpicklingError, RuntimeError, EOF
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"checkpoint {path}: cannot be read as plain training state (corrupt, truncated, "
            f"or holding objects that could run code: {first}); {start_over}"
        ) from None
    keys = {"epoch", "modules", "optimizer", "scheduler", "history", "fingerprint"}
    if not isinstance(state, dict) or not keys <= set(state):
        raise CheckpointError(
            f"checkpoint {path}: not a training checkpoint (expected the keys {sorted(keys)}); "
            f"{start_over}"
        )
    return state


def train(
    modules: nn.Module,
    source: BatchSource,
    loss_fn: LossFn,
    cfg: TrainParams,
    seed: int,
    checkpoint: Path | None = None,
    fingerprint_value: str = "",
    device: str = "cpu",
    show_progress: bool = True,
    on_epoch: Callable[[list[EpochStats]], None] | None = None,
    description: str = "train",
    precision: str = "fp32",
    channels_last: bool = False,
    compile: bool = False,
) -> list[EpochStats]:
    """Train every parameter of ``modules`` with Adam on the batches of ``source``.

    Args:
        modules: all trained modules (a segmenter, or a ModuleDict with a domain head too).
        source: draws the batches of one epoch from a generator.
        loss_fn: ``loss_fn(batch, progress)`` with progress = fraction of training done.
        checkpoint: file rewritten atomically after every epoch (by rank 0); if it exists with
            the same ``fingerprint_value``, training resumes after its epoch (on every rank).
        on_epoch: called with the history so far after each epoch (to write or log metrics);
            on rank 0 only.
        precision: ``fp32``, or ``bf16`` (forward and loss under autocast, fp32 weights).
        channels_last: NHWC weights and images.
        compile: ``torch.compile`` the forward of each trained module in place (its weights and
            state dict are unchanged); the first steps pay the compilation.

    Returns:
        The statistics of every epoch, resumed ones included.
    """
    modules.to(device)
    if channels_last:
        modules.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    if compile:
        compile_in_place(modules)
    # on CUDA, Adam's fused kernel: 1.14-1.19x the training images/s of the default (foreach)
    # one at batch 256 on an H200, the same at batch 32 (benchmarks/gpu.py --fused); the CPU
    # keeps the default, so CPU runs stay bit-identical to earlier versions
    fused = True if str(device).startswith("cuda") else None
    opt = torch.optim.Adam(
        modules.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused
    )
    steps = source.steps()
    total_steps = cfg.epochs * steps
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: lr_factor(cfg.lr_schedule, step, steps, total_steps)
    )
    history: list[EpochStats] = []
    start = 0
    main = distributed.is_main()
    if checkpoint is not None:
        distributed.barrier()  # rank 0 may be removing it (--no-resume)
        if checkpoint.exists():
            state = load_checkpoint(checkpoint, device)
            if state.get("fingerprint") == fingerprint_value:
                modules.load_state_dict(state["modules"])
                opt.load_state_dict(state["optimizer"])
                sched.load_state_dict(state["scheduler"])
                history = [EpochStats(**h) for h in state["history"]]
                start = state["epoch"]
        if not distributed.same_on_all_ranks(start):
            raise RuntimeError(
                f"checkpoint {checkpoint}: the ranks would resume from different epochs; "
                "every node must see the checkpoint file rank 0 writes (shared storage)"
            )
    with (
        Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}"),
            TimeRemainingColumn(),
            disable=not (show_progress and main),
        ) as bar,
        distributed.data_parallel(modules, loss_fn, device) as step,
    ):
        task = bar.add_task(description, total=(cfg.epochs - start) * steps, loss=float("nan"))
        for epoch in range(start, cfg.epochs):
            # 1) the epoch's random stream depends only on (seed, epoch): resumable exactly
            gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
            modules.train()
            t0, total, seen = time.perf_counter(), 0.0, 0.0
            sums: dict[str, float] = {}
            for b, batch in enumerate(source.epoch(gen)):
                batch = batch.to(device, channels_last)
                # 2) one optimisation step (on this rank's share of the global batch)
                with autocast(device, precision):
                    loss, parts = step(batch, (epoch * steps + b) / total_steps)
                n = batch.images.shape[0]
                value = float(loss.detach())
                if not math.isfinite(value):
                    # before the update: no NaN reaches the weights, the checkpoint or a model
                    raise DivergedError(
                        f"{description}: the training loss is {value} at epoch {epoch + 1}/"
                        f"{cfg.epochs}, step {b + 1}/{steps}: training diverged and no model "
                        f"was written; the usual cause is a learning rate too high for this "
                        f"model (lr {cfg.lr:g}, schedule {cfg.lr_schedule}): lower it"
                    )
                opt.zero_grad(set_to_none=True)
                (loss * distributed.shard_weight(n, batch.global_size)).backward()
                opt.step()
                sched.step()
                total += value * n
                seen += n
                for k, v in parts.items():
                    sums[k] = sums.get(k, 0.0) + v * n
                bar.update(
                    task,
                    advance=1,
                    loss=total / seen,
                    description=f"{description} {epoch + 1}/{cfg.epochs}",
                )
            dt = time.perf_counter() - t0
            # means over the global batches: every rank's sums together
            total, seen, *part_sums = distributed.all_reduce_sum([total, seen, *sums.values()])
            history.append(
                EpochStats(
                    epoch + 1,
                    total / seen,
                    dt,
                    seen / dt,
                    {k: v / seen for k, v in zip(sums, part_sums, strict=True)},
                )
            )
            if not main:
                continue
            # 3) checkpoint after every epoch, atomically: a kill loses at most one epoch
            if checkpoint is not None:
                _save(
                    checkpoint,
                    {
                        "epoch": epoch + 1,
                        "modules": modules.state_dict(),
                        "optimizer": opt.state_dict(),
                        "scheduler": sched.state_dict(),
                        "history": [asdict(h) for h in history],
                        "fingerprint": fingerprint_value,
                    },
                )
            if on_epoch:
                on_epoch(history)
    # a finite loss can still leave an overflowed weight behind (the last step's update)
    bad = non_finite(modules.state_dict())
    if bad:
        raise DivergedError(
            f"{description}: weights {bad[:5]} are not finite after epoch {cfg.epochs}: training "
            f"diverged and no model was written; lower the learning rate (lr {cfg.lr:g})"
        )
    return history
