"""Runtime set-up shared by every stage: device, threads, determinism, arrow's allocator."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pyarrow as pa
import torch

from mentoring.config import BaseParams


def setup_torch(base: BaseParams) -> str:
    """Apply ``base`` (threads, deterministic kernels) and return the checked device string.

    Also puts arrow, which holds pandas' strings, on the system allocator for the process: its
    default (mimalloc) keeps the pages of freed arrays resident, so every manifest operation of
    a stage (read, select, sort) left a floor that grew with the manifest's rows (measured:
    `evaluate` of 15,000 images started streaming 50-70 MiB above the same stage on 1,500, none
    of it live data; after the change the two are within the run-to-run noise).

    Raises:
        RuntimeError: a CUDA device is asked for and none is available.
    """
    pa.set_memory_pool(pa.system_memory_pool())
    torch.set_num_threads(base.num_threads)
    if base.device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"base.device is {base.device!r} but no CUDA device is available")
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        # some CUDA kernels have no deterministic variant: warn rather than fail on GPU nodes;
        # shapes are fixed (one image size), so cuDNN may pick its fastest algorithms: GPU runs
        # agree with CPU ones within a tolerance, not bit for bit
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = True
    elif base.compile:
        torch.use_deterministic_algorithms(True)  # also tells inductor (compiled kernels)
    else:
        # the same switch without torch.use_deterministic_algorithms' import of inductor and
        # dynamo (1.5 s of every stage's start-up, for a compiler an eager run never uses)
        set_deterministic = getattr(torch._C, "_set_deterministic_algorithms", None)
        if set_deterministic is None:  # pragma: no cover - a torch without the private switch
            torch.use_deterministic_algorithms(True)
        else:
            set_deterministic(True)
    return base.device


def seed_everything(seed: int) -> None:
    """Seed torch's global generator (model initialisation draws from it)."""
    torch.manual_seed(seed)


@contextmanager
def progress_bar(show: bool, description: str, total: int) -> Iterator[Callable[[int], None]]:
    """A progress bar over ``total`` items (shown when ``show``); yields ``advance(n)``."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn(f"[bold]{description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        disable=not show,
    ) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.update(task, advance=n)


def autocast(device: str, precision: str) -> torch.autocast:
    """The autocast context of ``base.precision`` on ``device`` (disabled for fp32)."""
    device_type = "cuda" if device.startswith("cuda") else "cpu"
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=precision == "bf16")
