"""Stage ``train``: train a new model with one strategy on original + mentored data.

Reads ``base``, ``line``, ``model`` and ``train``; reads the line, the partial labels (not for the
oracle) and the baseline (for ``transfer``, ``omnia``, ``distill`` and ``train.confirm_refine``);
writes the model, ``metrics.json``, ``history.json`` and ``plots/loss.png`` under ``<results>``.
``main()`` is also the entry point of ``torchrun`` (``train.nproc`` > 1,
:mod:`mentoring.training.distributed`), for the baseline (``--strategy baseline``) and the
strategies alike: rank 0 alone writes and logs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from mentoring.config import Params, parse_strategy
from mentoring.data.dataset import rows_by_id
from mentoring.data.manifest import data_root, read_manifest
from mentoring.data.store import StoredImages, digest, labelled_split, open_images
from mentoring.evaluation import predict, stream_predictions
from mentoring.feedback.partial import PartialLabels
from mentoring.models.store import load_model
from mentoring.runtime import setup_torch
from mentoring.tracking import Tracker
from mentoring.training import distributed
from mentoring.training.loop import fingerprint
from mentoring.training.outputs import (
    epoch_callback,
    log_training,
    model_arch,
    start_tracking,
    training_metrics,
    write_outputs,
)
from mentoring.training.strategies import (
    NewData,
    apply_exclusive,
    apply_healthy,
    apply_omnia,
    apply_refine,
    build_trainee,
    strategy_params,
    train_strategy,
)


def new_data(
    params: Params,
    strategy: str,
    manifest: Path,
    labels_path: Path | None,
    baseline: torch.nn.Module | None,
    device: str,
) -> NewData:
    """The new-domain training set of ``strategy``: mentored partial labels, or full truth."""
    flags = parse_strategy(strategy)
    if "oracle" in flags:  # the upper bound: every pool image with its full ground truth
        ids, images, t = labelled_split(params, manifest, "new", "pool", params.train.num_workers)
        return NewData(ids, images, t, torch.ones_like(t, dtype=torch.bool))
    if labels_path is None:
        raise ValueError(f"strategy {strategy!r} needs partial labels (run `mentoring mentor`)")
    labels = PartialLabels.load(labels_path)
    df = rows_by_id(read_manifest(manifest, check_files=False), labels.ids, str(labels_path))
    cfg = params.train
    images = open_images(df, data_root(manifest), params.base.train_cache_mib, cfg.num_workers)
    targets, annotated = labels.targets, labels.annotated
    probs = None
    if "omnia" in flags or cfg.confirm_refine > 0:
        if baseline is None:
            raise ValueError(f"strategy {strategy!r} needs the baseline model")
        probs = _predict_set(params, baseline, images, df, data_root(manifest), device)
    if cfg.confirm_refine > 0 and probs is not None:
        targets, annotated = apply_refine(targets, annotated, probs, cfg.confirm_refine)
    if cfg.confirm_exclusive:
        targets, annotated = apply_exclusive(targets, annotated)
    if "omnia" in flags and probs is not None:
        targets, annotated = apply_omnia(targets, annotated, probs, cfg.omnia_epsilon)
    if "healthy" in flags:
        targets, annotated = apply_healthy(targets, annotated, labels.healthy)
    return NewData(
        labels.ids,
        images,
        torch.from_numpy(np.ascontiguousarray(targets)),
        torch.from_numpy(np.ascontiguousarray(annotated)),
    )


def _predict_set(
    params: Params,
    model: torch.nn.Module,
    images: torch.Tensor | StoredImages,
    df: Any,
    root: Path,
    device: str,
) -> np.ndarray:
    """The model's probabilities on a training set: on the cached tensor, or streamed from the
    store (the same batches of ``evaluate.batch_size``, so the same numbers on CPU)."""
    args = (params.evaluate.batch_size, device)
    gpu = (params.base.precision, params.base.channels_last)
    if isinstance(images, torch.Tensor):
        return predict(model, images, *args, *gpu)
    parts = [
        p for _, p in stream_predictions(model, df, root, *args, params.evaluate.num_workers, *gpu)
    ]
    return np.concatenate(parts)


def run(
    params: Params,
    strategy: str,
    manifest: Path,
    labels_path: Path | None,
    baseline_path: Path | None,
    model_out: Path,
    results_dir: Path,
    checkpoint: Path | None = None,
    show_progress: bool = True,
    track: bool = True,
) -> dict[str, Any]:
    """Train ``strategy``; return its training metrics.

    With ``track``, the run is logged to MLflow (checked before training starts).
    """
    flags = parse_strategy(strategy)
    # under torchrun, rank 0 alone tracks and writes; every rank trains its share of each batch
    is_main = distributed.is_main()
    tracker = Tracker.open(params, manifest) if track and is_main else None
    with distributed.process_group(setup_torch(params.base)) as device:
        line, cfg, seed = params.line, params.train, params.base.seed
        baseline = None
        if flags & {"transfer", "omnia", "distill"} or (
            cfg.confirm_refine > 0 and "oracle" not in flags
        ):
            if baseline_path is None:
                raise ValueError(f"strategy {strategy!r} needs the baseline model (--baseline)")
            baseline, _ = load_model(baseline_path, device)
        _, orig_images, orig_targets = labelled_split(
            params, manifest, "original", "train", cfg.num_workers
        )
        new = new_data(params, strategy, manifest, labels_path, baseline, device)
        arch = model_arch(params)
        trainee = build_trainee(strategy, arch, baseline, seed)
        read = strategy_params(strategy, cfg)  # the train params this strategy reads
        fp = fingerprint(
            strategy,
            arch,
            read,
            seed,
            digest(
                orig_images,
                orig_targets,
                new.images,
                new.targets,
                new.annotated,
            ),
            # the baseline's weights, not its file: torch.save writes a fresh id into every file
            digest(*baseline.state_dict().values()) if baseline is not None else None,
            # bf16 trains other weights; fp32 fingerprints stay those of earlier versions
            *([params.base.precision] if params.base.precision != "fp32" else []),
        )
        logged = {"strategy": strategy, "train": {**read, "nproc": cfg.nproc}}
        run_id = start_tracking(tracker, strategy, params, logged)
        history = train_strategy(
            trainee,
            orig_images,
            orig_targets,
            new,
            cfg,
            seed,
            checkpoint=checkpoint,
            fingerprint_value=fp,
            device=device,
            show_progress=show_progress,
            description=strategy,
            on_epoch=epoch_callback(results_dir, tracker, run_id),
            teacher=baseline if "distill" in flags else None,
            precision=params.base.precision,
            channels_last=params.base.channels_last,
            compile=params.base.compile,
        )
        extra = {
            "strategy": strategy,
            "n_original": len(orig_images),
            "n_new": len(new.ids),
            "new_annotated_fraction": new.annotated_fraction,
        }
        if not is_main:
            return training_metrics(strategy, history, extra)
        metrics = write_outputs(
            strategy,
            trainee.segmenter,
            arch,
            line.classes,
            fp,
            history,
            model_out,
            results_dir,
            extra,
        )
        if tracker is not None and run_id is not None:
            log_training(
                tracker, run_id, params, trainee.segmenter, history, results_dir, metrics, fp
            )
        return metrics


def main() -> None:
    """Command-line entry: the same as `mentoring train` with these arguments."""
    import sys

    from mentoring.cli import app

    app(["train", *sys.argv[1:]])


if __name__ == "__main__":
    main()
