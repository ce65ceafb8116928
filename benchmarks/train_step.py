"""Benchmark: the cost of the masked loss, of DANN, and of the real data path.

Measures, on the default segmenter and a batch of the default size (CPU, this machine):

- a training step with the masked loss of eq. (4) (``mentoring_loss``, 1:1 batch) against a step
  with plain BCE on the same batch: target ratio <= 1.05;
- a DANN step (domain head + gradient reversal) against the plain step: target <= 1.3;
- the training loop fed by the real batch source (``BalancedSource``: uint8 indexing, augmentation,
  conversion) against the same loop on batches already in memory as float tensors: target
  images/s ratio >= 0.9;
- the same source reading its images from PNG files per batch (``StoredImages``: a set larger
  than ``base.train_cache_mib``), with 0 and 2 decoding threads, against the in-memory loop;
- the per-epoch time of the ``paper`` profile extrapolated from the measured images/s (an epoch
  holds as many images as the original training set: 21,000).

Variants are interleaved (A B C A B C ...) and the median of the repetitions is kept, so machine
noise hits all of them alike. Writes ``benchmarks/results/train_step.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from PIL import Image

from mentoring.config import MentoredTrainParams, Params
from mentoring.data.batch import BalancedSource, Batch
from mentoring.data.store import StoredImages
from mentoring.io import write_json
from mentoring.losses import mentoring_loss, supervised_bce
from mentoring.models.domain import DomainSegmenter
from mentoring.models.segmenter import Segmenter
from mentoring.training.outputs import model_arch
from mentoring.training.strategies import Trainee, make_loss

HERE = Path(__file__).resolve().parent
PAPER_ORIGINAL_TRAIN = 21_000  # images of an epoch of the paper profile


def _data(n: int, size: int, classes: int, stride: int, gen: torch.Generator) -> tuple:
    images = torch.randint(0, 256, (n, 1, size, size), generator=gen, dtype=torch.uint8)
    targets = torch.rand(n, classes, size // stride, size // stride, generator=gen) < 0.01
    annotated = torch.rand(n, classes, size // stride, size // stride, generator=gen) < 0.05
    return images, targets.to(torch.uint8), annotated


def _stored(
    orig: torch.Tensor, new: torch.Tensor, root: Path, workers: int
) -> tuple[StoredImages, StoredImages]:
    """``orig`` and ``new`` written as PNG files under ``root`` (once), read back per batch."""
    out = []
    for name, images in (("orig", orig), ("new", new)):
        rows = []
        for i, im in enumerate(images.numpy()):
            rel = f"{name}/{i:05d}.png"
            if not (root / rel).exists():
                (root / name).mkdir(parents=True, exist_ok=True)
                Image.fromarray(im[0]).save(root / rel)
            rows.append({"path": rel, "height": im.shape[1], "width": im.shape[2], "channels": 1})
        out.append(StoredImages(pd.DataFrame(rows), root, workers))
    return out[0], out[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=7, help="interleaved repetitions")
    ap.add_argument("--steps", type=int, default=8, help="steps per repetition")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "train_step.json")
    args = ap.parse_args()
    params = Params()
    torch.set_num_threads(params.base.num_threads)
    cfg: MentoredTrainParams = params.train
    arch = model_arch(params)
    gen = torch.Generator().manual_seed(0)
    size, c, s = params.line.image_size, len(params.line.classes), params.model.stride
    oi, ot, _ = _data(256, size, c, s, gen)
    ni, nt, na = _data(256, size, c, s, gen)
    source = BalancedSource(oi, ot, ni, nt, na, cfg.batch_size, cfg.new_fraction, augment=True)
    batch = next(source.epoch(torch.Generator().manual_seed(1)))
    # the same images as PNG files, read per batch from the store
    store_dir = Path(tempfile.mkdtemp(prefix="bench-store-"))
    stores = {w: _stored(oi, ni, store_dir, w) for w in (0, 2)}
    stored_sources = {
        w: BalancedSource(o, ot, n, nt, na, cfg.batch_size, cfg.new_fraction, augment=True)
        for w, (o, n) in stores.items()
    }

    torch.manual_seed(0)
    seg = Segmenter(**arch)
    dann = Trainee(seg, DomainSegmenter(seg.feature_channels))
    plain_opt = torch.optim.Adam(seg.parameters(), lr=1e-4)
    dann_opt = torch.optim.Adam(dann.parameters(), lr=1e-4)
    dann_loss = make_loss(dann, cfg)

    def plain_step() -> None:
        loss = supervised_bce(seg(batch.images), batch.targets)
        plain_opt.zero_grad()
        loss.backward()
        plain_opt.step()

    def masked_step() -> None:
        logits = seg(batch.images)
        o = batch.domain == 0
        loss, _, _ = mentoring_loss(
            logits[o],
            batch.targets[o],
            logits[~o],
            batch.targets[~o],
            batch.annotated[~o],
            cfg.lambda_w,
        )
        plain_opt.zero_grad()
        loss.backward()
        plain_opt.step()

    def dann_step() -> None:
        loss, _ = dann_loss(batch, 0.5)
        dann_opt.zero_grad()
        loss.backward()
        dann_opt.step()

    # the training loop: real source vs the same batches pre-built in memory
    prebuilt: list[Batch] = list(source.epoch(torch.Generator().manual_seed(2)))
    loop_loss = make_loss(Trainee(seg, None), cfg)

    def loop(batches: object) -> float:
        t0, n = time.perf_counter(), 0
        for b in batches:  # type: ignore[attr-defined]
            loss, _ = loop_loss(b, 0.5)
            plain_opt.zero_grad()
            loss.backward()
            plain_opt.step()
            n += b.images.shape[0]
        return n / (time.perf_counter() - t0)

    def timed(fn: object) -> float:
        t0 = time.perf_counter()
        for _ in range(args.steps):
            fn()  # type: ignore[operator]
        return (time.perf_counter() - t0) / args.steps

    for fn in (plain_step, masked_step, dann_step):  # warm-up
        fn()
    times: dict[str, list[float]] = {"plain": [], "masked": [], "dann": []}
    ips: dict[str, list[float]] = {
        "real_source": [],
        "in_memory": [],
        "store_0_threads": [],
        "store_2_threads": [],
    }
    for rep in range(args.reps):
        times["plain"].append(timed(plain_step))
        times["masked"].append(timed(masked_step))
        times["dann"].append(timed(dann_step))
        ips["real_source"].append(loop(source.epoch(torch.Generator().manual_seed(2 + rep))))
        ips["in_memory"].append(loop(prebuilt))
        for w, src in stored_sources.items():
            ips[f"store_{w}_threads"].append(
                loop(src.epoch(torch.Generator().manual_seed(2 + rep)))
            )
    shutil.rmtree(store_dir)
    med = {k: statistics.median(v) for k, v in times.items()}
    med_ips = {k: statistics.median(v) for k, v in ips.items()}
    ratios = {
        "masked_over_plain": med["masked"] / med["plain"],
        "dann_over_plain": med["dann"] / med["plain"],
        "loader_over_in_memory": med_ips["real_source"] / med_ips["in_memory"],
        "store_over_in_memory": max(med_ips["store_0_threads"], med_ips["store_2_threads"])
        / med_ips["in_memory"],
    }
    paper_epoch = {k: PAPER_ORIGINAL_TRAIN / v for k, v in med_ips.items()}
    targets = {
        "masked_le_1.05": ratios["masked_over_plain"] <= 1.05,
        "dann_le_1.3": ratios["dann_over_plain"] <= 1.3,
        "loader_ge_0.9": ratios["loader_over_in_memory"] >= 0.9,
        "store_ge_0.9": ratios["store_over_in_memory"] >= 0.9,
    }
    result = {
        "benchmark": "train_step",
        "batch_size": cfg.batch_size,
        "image_size": size,
        "arch": arch,
        "threads": params.base.num_threads,
        "reps": args.reps,
        "steps_per_rep": args.steps,
        "seconds_per_step_median": med,
        "images_per_s_median": med_ips,
        "ratios": ratios,
        "paper_epoch_seconds": paper_epoch,
        "targets": targets,
        "all_targets_met": all(targets.values()),
    }
    write_json(args.out, result)
    print(json.dumps({"ratios": ratios, "targets": targets}, indent=2))
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
