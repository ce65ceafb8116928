"""Benchmark: the GPU path: training at bf16 and fp32, mining, the fraction of the GPU's peak.

Measures, on the default segmenter at the default image size, on ``--device`` (default
``cuda``):

1. **Training** images/s at fp32 and at bf16 (autocast, fp32 weights), channels_last, the
   masked loss of eq. (4) on a 1:1 batch of ``train.batch_size`` images, Adam: the step the
   ``train`` stage runs, on batches already on the device (the data path has its own benchmark).
2. **Mining** images/s: the forward + sigmoid at bf16 on batches of ``mine.batch_size``.
3. **The limit**: FLOPs per image (torch's ``FlopCounterMode``: forward, and forward + backward
   for training), the device's measured bf16 and fp32 matmul throughput (8192^2 matmuls), and
   the fraction of the measured bf16 peak each of 1 and 2 reaches.
4. **Variants** (each measured in the same run, so the ratios hold on a noisy machine):
   ``--fused`` times the training step with Adam's fused kernel (``fused=True``) beside the
   default (foreach) one; ``--compile`` times training and mining again with the segmenter
   compiled (``Module.compile``, what ``base.compile`` does), after untimed compiling steps.
5. **The paper's retraining, projected**: 33,000 images (21k original + 12k mentored) x 200
   epochs at the measured bf16 training speed, in hours.

Times are taken after ``--warmup`` steps, between ``torch.cuda.synchronize()`` calls. Without
CUDA it writes nothing and exits 2 with the reason (``--device cpu`` runs it on the CPU, for its
tiny test). Writes ``benchmarks/results/gpu.json`` with the device's name.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from mentoring.config import ConfigError, load_params, parse_overrides
from mentoring.io import write_json
from mentoring.losses import mentoring_loss
from mentoring.models.segmenter import Segmenter
from mentoring.runtime import autocast
from mentoring.training.outputs import model_arch

HERE = Path(__file__).resolve().parent
PAPER_IMAGES, PAPER_EPOCHS = 33_000, 200


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], object], device: str, warmup: int, steps: int) -> float:
    """Seconds per call of ``fn`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    _sync(device)
    return (time.perf_counter() - t0) / steps


def matmul_tflops(device: str, dtype: torch.dtype, n: int, reps: int) -> float:
    """Measured dense matmul throughput of ``dtype`` n x n matrices, in TFLOP/s."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    seconds = _timed(lambda: a @ b, device, 2, reps)
    return 2 * n**3 / seconds / 1e12


def flops(model: torch.nn.Module, x: torch.Tensor, train: bool) -> float:
    """FLOPs of one forward (and backward, with ``train``) of ``x``, per image."""
    with FlopCounterMode(display=False) as fc:
        if train:
            model(x).sum().backward()
        else:
            with torch.no_grad():
                model(x)
    model.zero_grad(set_to_none=True)
    return float(fc.get_total_flops()) / x.shape[0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="torch device (cpu only for the tiny test)")
    ap.add_argument("--steps", type=int, default=50, help="timed steps per measurement")
    ap.add_argument("--warmup", type=int, default=10, help="untimed steps first (cuDNN autotune)")
    ap.add_argument("--matmul", type=int, default=8192, help="side of the peak-throughput matmul")
    ap.add_argument("--batch", type=int, default=None, help="training batch (train.batch_size)")
    ap.add_argument("--fused", action="store_true", help="also time Adam's fused kernel")
    ap.add_argument("--compile", action="store_true", help="also time the compiled segmenter")
    ap.add_argument("--params", type=Path, default=HERE.parent / "params.yaml", help="params file")
    ap.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a parameter, e.g. -S model.width=64 (repeat)")  # fmt: skip
    ap.add_argument("--out", type=Path, default=HERE / "results" / "gpu.json")
    args = ap.parse_args(argv)
    try:
        overrides = parse_overrides(args.set, example="model.width=64")
    except ConfigError as exc:
        ap.error(str(exc))
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        print("gpu.py: no CUDA device visible to torch; nothing measured", file=sys.stderr)
        return 2
    if cuda:
        torch.backends.cudnn.benchmark = True  # fixed shapes, as the stages set it
    params = load_params(args.params, overrides)
    arch = model_arch(params)
    size, c, stride = params.line.image_size, len(params.line.classes), params.model.stride
    bs = args.batch or params.train.batch_size
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(bs, params.line.channels, size, size, generator=gen)
    targets = (torch.rand(bs, c, size // stride, size // stride, generator=gen) < 0.02).float()
    annotated = torch.ones_like(targets, dtype=torch.bool)
    annotated[bs // 2 :] = torch.rand(bs - bs // 2, c, *targets.shape[2:], generator=gen) < 0.05

    torch.manual_seed(0)
    model = Segmenter(**arch)
    per_image = {
        "forward": flops(model, x[:2], train=False),
        "train_step": flops(model, x[:2], train=True),
    }
    dev = args.device
    model = model.to(dev).to(memory_format=torch.channels_last)
    x, targets, annotated = (t.to(dev) for t in (x, targets, annotated))
    x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def train_step(precision: str, fused: bool = False) -> Callable[[], None]:
        # the state of the default optimiser carries over; a fused one starts its own
        o = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True) if fused else opt

        def step() -> None:
            with autocast(dev, precision):
                logits = model(x)
            logits = logits.float()
            h = bs // 2  # 1:1: original images first, then mentored ones
            loss, _, _ = mentoring_loss(
                logits[:h], targets[:h], logits[h:], targets[h:], annotated[h:]
            )
            o.zero_grad(set_to_none=True)
            loss.backward()
            o.step()

        return step

    training = {}
    model.train()
    for precision in ("fp32", "bf16"):
        seconds = _timed(train_step(precision), dev, args.warmup, args.steps)
        training[precision] = bs / seconds
    variants: dict[str, float] = {}
    if args.fused:
        for precision in ("fp32", "bf16"):
            seconds = _timed(train_step(precision, fused=True), dev, args.warmup, args.steps)
            variants[f"training_fused_adam_{precision}"] = bs / seconds

    mbs = params.mine.batch_size
    xm = torch.rand(mbs, params.line.channels, size, size, generator=gen).to(dev)
    xm = xm.contiguous(memory_format=torch.channels_last)
    model.eval()

    def mine_step() -> None:
        with torch.no_grad(), autocast(dev, "bf16"):
            torch.sigmoid(model(xm)).float()

    mining = mbs / _timed(mine_step, dev, args.warmup, args.steps)
    if args.compile:
        model.compile()  # in place: the same parameters, what base.compile does
        model.train()
        for precision in ("fp32", "bf16"):
            seconds = _timed(train_step(precision), dev, args.warmup + 3, args.steps)
            variants[f"training_compiled_{precision}"] = bs / seconds
        model.eval()
        variants["mining_compiled_bf16"] = mbs / _timed(mine_step, dev, args.warmup + 3, args.steps)

    peak = {
        "bf16": matmul_tflops(dev, torch.bfloat16, args.matmul, 10),
        "fp32": matmul_tflops(dev, torch.float32, args.matmul, 10),
    }

    def fraction(ips: float, kind: str, of: str = "bf16") -> float:
        return ips * per_image[kind] / 1e12 / peak[of]

    result = {
        "device": torch.cuda.get_device_name(dev) if cuda else platform.processor() or "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "overrides": overrides,
        "model": arch,
        "image_size": size,
        "train_batch": bs,
        "mine_batch": mbs,
        "flops_per_image": per_image,
        "training_images_per_s": training,
        "bf16_over_fp32": training["bf16"] / training["fp32"],
        "mining_images_per_s_bf16": mining,
        "matmul_tflops": peak,
        "fraction_of_bf16_peak": {
            "training_bf16": fraction(training["bf16"], "train_step"),
            "mining_bf16": fraction(mining, "forward"),
        },
        "variants_images_per_s": variants,
        "variants_over_default": {
            k: v / (mining if k.startswith("mining") else training[k.rsplit("_", 1)[1]])
            for k, v in variants.items()
        },
        "paper_retraining": {
            "images": PAPER_IMAGES,
            "epochs": PAPER_EPOCHS,
            "hours_bf16": PAPER_IMAGES * PAPER_EPOCHS / training["bf16"] / 3600,
            "hours_fp32": PAPER_IMAGES * PAPER_EPOCHS / training["fp32"] / 3600,
        },
        "steps": args.steps,
        "warmup": args.warmup,
    }
    write_json(args.out, result)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
