"""The training loop: seeded, deterministic on CPU, checkpointed every epoch, resumable.

Determinism: the model is initialised from ``seed`` by the caller; the loop draws the order of
each epoch and its augmentations from a generator seeded with ``(seed, epoch)``, so a run resumed
from the checkpoint of epoch k draws exactly what an uninterrupted run draws from epoch k + 1.
With the optimizer state saved too, the final weights are identical.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn

from mentoring.config import TrainParams
from mentoring.io import write_with

#: loss of a batch: (model, images (N, C_in, H, W) float, targets (N, C, h, w) float) -> scalar
LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class EpochStats:
    epoch: int  # 1-based
    loss: float  # mean training loss over the epoch's batches
    seconds: float  # wall time of the epoch
    images_per_s: float  # training throughput


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """Apply the k-th of the 8 flips/rotations of the square to (..., H, W) tensors."""
    if k >= 4:
        x = x.flip(-1)
    return torch.rot90(x, k % 4, dims=(-2, -1))


def augment(
    images: torch.Tensor, targets: torch.Tensor, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random dihedral transform per sample, the same for an image and its cell targets."""
    ks = torch.randint(0, 8, (images.shape[0],), generator=gen)
    out_i, out_t = images.clone(), targets.clone()
    for k in ks.unique().tolist():
        sel = ks == k
        out_i[sel] = dihedral(images[sel], k)
        out_t[sel] = dihedral(targets[sel], k)
    return out_i, out_t


def fingerprint(*parts: Any) -> str:
    """A short stable hash of the configuration a checkpoint belongs to."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _save(path: Path, state: dict[str, Any]) -> None:
    write_with(path, lambda tmp: torch.save(state, tmp))


def train(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    cfg: TrainParams,
    seed: int,
    loss_fn: LossFn,
    checkpoint: Path | None = None,
    fingerprint_value: str = "",
    device: str = "cpu",
    show_progress: bool = True,
    on_epoch: Callable[[list[EpochStats]], None] | None = None,
) -> list[EpochStats]:
    """Train ``model`` in place with Adam on uint8 ``images`` (N, C_in, H, W), ``targets``.

    Args:
        checkpoint: file rewritten atomically after every epoch; if it exists with the same
            ``fingerprint_value``, training resumes after its epoch.
        on_epoch: called with the history so far after each epoch (to write or log metrics).

    Returns:
        The statistics of every epoch, resumed ones included.
    """
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    history: list[EpochStats] = []
    start = 0
    if checkpoint is not None and checkpoint.exists():
        state = torch.load(checkpoint, map_location=device, weights_only=False)
        if state.get("fingerprint") == fingerprint_value:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            history = [EpochStats(**h) for h in state["history"]]
            start = state["epoch"]
    n = images.shape[0]
    steps = (n + cfg.batch_size - 1) // cfg.batch_size
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TimeRemainingColumn(),
        disable=not show_progress,
        transient=False,
    ) as bar:
        task = bar.add_task("train", total=(cfg.epochs - start) * steps, loss=float("nan"))
        for epoch in range(start, cfg.epochs):
            # 1) the epoch's random stream depends only on (seed, epoch): resumable exactly
            gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
            order = torch.randperm(n, generator=gen)
            model.train()
            t0, total, seen = time.perf_counter(), 0.0, 0
            for b in range(steps):
                idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
                x, y = images[idx], targets[idx]
                if cfg.augment:
                    x, y = augment(x, y, gen)
                x = x.to(device, torch.float32) / 255.0
                y = y.to(device, torch.float32)
                # 2) one optimisation step
                loss = loss_fn(model, x, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
                seen += len(idx)
                bar.update(
                    task,
                    advance=1,
                    loss=total / seen,
                    description=f"epoch {epoch + 1}/{cfg.epochs}",
                )
            dt = time.perf_counter() - t0
            stats = EpochStats(epoch + 1, total / seen, dt, seen / dt)
            history.append(stats)
            # 3) checkpoint after every epoch, atomically: a kill loses at most one epoch
            if checkpoint is not None:
                state = {
                    "epoch": epoch + 1,
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "history": [asdict(h) for h in history],
                    "fingerprint": fingerprint_value,
                }
                _save(checkpoint, state)
            if on_epoch:
                on_epoch(history)
    return history
