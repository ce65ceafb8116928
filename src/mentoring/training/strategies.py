"""The strategies of a new model (paper sections 3.3-3.4), selectable and combinable.

- ``scratch`` ("w/ new data"): random init, original + mentored data, L = L_S + lambda * L_W;
- ``transfer``: initialised from the baseline's weights, still on both data sets (3.4.1);
- ``omnia``: (area, class) entries of mentored images where the baseline's probability is below
  epsilon become annotated healthy (3.4.2);
- ``healthy``: every entry of images flagged healthy becomes annotated healthy (3.4.3);
- ``dann``: a gradient reversal layer and a fully-convolutional domain segmenter on the
  segmenter's features, per-cell domain BCE, GRL coefficient ramped as in Ganin et al. (3.4.4);
- ``distill``: where no label exists on a mentored image, the baseline's soft predictions (on
  the same augmented batch) are the targets, weight ``train.distill_weight`` (the paper's
  conclusion: distillation on the non-mentored areas);
- ``oracle``: the upper bound, trained with the full ground truth of the new pool
  (``transfer+oracle`` starts from the baseline's weights).

Combinations join with ``+``: ``transfer+omnia``, ``transfer+dann``, ...

Two options change what an operator's confirmation teaches, for every strategy:
``train.confirm_refine`` (:func:`apply_refine`) and ``train.confirm_exclusive``
(:func:`apply_exclusive`); ``train.lw_normalisation`` chooses eq. (4)'s normaliser.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from mentoring.config import MentoredTrainParams, parse_strategy
from mentoring.data.batch import BalancedSource, Batch
from mentoring.data.store import StoredImages
from mentoring.losses import masked_bce, mentoring_loss
from mentoring.models.domain import (
    DomainSegmenter,
    domain_accuracy,
    domain_loss,
    grl_coefficient,
)
from mentoring.models.segmenter import Segmenter
from mentoring.training import distributed
from mentoring.training.loop import EpochStats, LossFn, train


@dataclass(frozen=True)
class NewData:
    """The new-domain training set of a strategy.

    Attributes:
        ids: image ids.
        images: (M, C_in, H, W) uint8, in memory or read per batch from the image store.
        targets: (M, C, h, w) uint8, meaningful where annotated.
        annotated: (M, C, h, w) bool.
    """

    ids: list[str]
    images: torch.Tensor | StoredImages
    targets: torch.Tensor
    annotated: torch.Tensor

    @property
    def annotated_fraction(self) -> float:
        return float(self.annotated.float().mean()) if self.annotated.numel() else 0.0


def apply_omnia(
    targets: np.ndarray, annotated: np.ndarray, baseline_probs: np.ndarray, epsilon: float
) -> tuple[np.ndarray, np.ndarray]:
    """OMNIA-like: entries the baseline finds healthy with confidence (p < epsilon), and that no
    operator annotated, become annotated healthy. Arrays are (M, C, h, w)."""
    add = (baseline_probs < epsilon) & ~annotated
    return np.where(add, 0, targets).astype(np.uint8), annotated | add


def apply_refine(
    targets: np.ndarray, annotated: np.ndarray, deployed_probs: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """Confirmed-area refinement: a confirmed entry (annotated 1) stays defective only where the
    deployed model's probability is >= ``threshold``; below it, the entry is no longer annotated
    (masked, not healthy: the operator said the area holds a defect, not where its border is).
    Arrays are (M, C, h, w); ``threshold`` 0 changes nothing."""
    drop = annotated & (targets == 1) & (deployed_probs < threshold)
    return targets, annotated & ~drop


def apply_exclusive(targets: np.ndarray, annotated: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What a confirmation implies: on a cell confirmed defective for some class, every class
    that no one annotated there becomes annotated healthy (an operator who says "this is a
    crack" says "this is not a dent"). Arrays are (M, C, h, w)."""
    confirmed = (annotated & (targets == 1)).any(axis=1, keepdims=True)
    add = confirmed & ~annotated
    return np.where(add, 0, targets).astype(np.uint8), annotated | add


def apply_healthy(
    targets: np.ndarray, annotated: np.ndarray, healthy: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Healthy knowledge: every entry of an image flagged healthy is annotated; the ones no
    operator annotated become healthy (confirmed areas, if any, are kept)."""
    add = healthy.reshape(-1, 1, 1, 1) & ~annotated
    return np.where(add, 0, targets).astype(np.uint8), annotated | add


class Trainee(nn.Module):
    """What a strategy trains: the segmenter and, for ``dann``, the domain segmenter."""

    def __init__(self, segmenter: Segmenter, domain_head: DomainSegmenter | None) -> None:
        super().__init__()
        self.segmenter = segmenter
        self.domain_head = domain_head


def strategy_params(strategy: str, cfg: MentoredTrainParams) -> dict[str, Any]:
    """The ``train`` params that ``strategy`` reads (what its checkpoint fingerprint covers).

    Leaving out the others (the strategy list, OMNIA's epsilon without ``omnia``, the domain
    loss's weight and ramp without ``dann``) keeps a finished strategy's checkpoint valid when
    they change: ``dvc repro`` after ``train.dann_weight`` changes reruns every ``train@``
    stage (they share one params list), and the strategies without DANN resume at once.
    ``nproc`` is left out too: any number of processes trains the same model (within float
    tolerance), so a run resumes with another one.
    """
    flags = parse_strategy(strategy)
    read = cfg.model_dump(mode="json", exclude={"strategies", "nproc"})
    if "omnia" not in flags:
        del read["omnia_epsilon"]
    if "dann" not in flags:
        del read["dann_weight"], read["dann_gamma"]
    if "distill" not in flags:
        del read["distill_weight"]
    return read


def make_loss(
    trainee: Trainee, cfg: MentoredTrainParams, teacher: Segmenter | None = None
) -> LossFn:
    """L = L_S + lambda * L_W (+ w_d * L_D with a domain head) (+ w_k * L_K with a teacher),
    eqs. (3) and (4).

    Under a process group, L_W is normalised by the annotated entries (or the annotated images,
    with ``lw_normalisation: image``) of the global batch, not of this rank's share, so the
    ranks' average is the L_W of the global batch; L_S and L_D are means over equal shares.

    ``teacher`` (the baseline, ``distill``): on the new images' entries that carry no label,
    the BCE against the teacher's probabilities on the same augmented images (L_K, a mean over
    those entries). The domain head's accuracy (cells whose domain it tells right) is logged
    as ``d_acc``: DANN works when it settles near chance (0.5) while the task loss falls.
    """
    seg, head = trainee.segmenter, trainee.domain_head
    if teacher is not None:
        teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)

    def loss_fn(batch: Batch, progress: float) -> tuple[torch.Tensor, dict[str, float]]:
        feats = seg.features(batch.images)
        logits = seg.head(feats)
        orig = batch.domain == 0
        new = ~orig
        loss, l_s, l_w = mentoring_loss(
            logits[orig],
            batch.targets[orig],
            logits[new],
            batch.targets[new],
            batch.annotated[new],
            cfg.lambda_w,
            cfg.lw_normalisation,
        )
        if distributed.is_distributed():
            ann = batch.annotated[new]
            count = (
                int(ann.sum())
                if cfg.lw_normalisation == "batch"
                else int(ann.flatten(1).any(dim=1).sum())
            )
            factor = distributed.global_mean_factor(count)
            loss, l_w = l_s + cfg.lambda_w * (l_w * factor), l_w * factor
        parts = {"l_s": float(l_s.detach()), "l_w": float(l_w.detach())}
        if teacher is not None and bool(new.any()):
            with torch.no_grad():
                soft = torch.sigmoid(teacher(batch.images[new]))
            l_k = masked_bce(logits[new], soft, ~batch.annotated[new])
            if distributed.is_distributed():
                l_k = l_k * distributed.global_mean_factor(int((~batch.annotated[new]).sum()))
            loss = loss + cfg.distill_weight * l_k
            parts["l_k"] = float(l_k.detach())
        if head is not None:
            head.grl.coeff = grl_coefficient(progress, cfg.dann_gamma)
            probs = head(feats)
            l_d = domain_loss(probs, batch.domain)
            loss = loss + cfg.dann_weight * l_d
            parts["l_d"] = float(l_d.detach())
            parts["grl"] = head.grl.coeff
            parts["d_acc"] = domain_accuracy(probs.detach(), batch.domain)
        return loss, parts

    return loss_fn


def build_trainee(
    strategy: str, arch: dict[str, object], baseline: Segmenter | None, seed: int
) -> Trainee:
    """Initialise the modules of ``strategy`` (random, or the baseline's weights)."""
    flags = parse_strategy(strategy)
    torch.manual_seed(seed)
    seg = Segmenter(**arch)  # type: ignore[arg-type]
    if "transfer" in flags:
        if baseline is None:
            raise ValueError(f"strategy {strategy!r} needs the baseline model")
        seg.load_state_dict(baseline.state_dict())
    head = DomainSegmenter(seg.feature_channels) if "dann" in flags else None
    return Trainee(seg, head)


def train_strategy(
    trainee: Trainee,
    original_images: torch.Tensor | StoredImages,
    original_targets: torch.Tensor,
    new: NewData,
    cfg: MentoredTrainParams,
    seed: int,
    teacher: Segmenter | None = None,
    **loop_kwargs: object,
) -> list[EpochStats]:
    """Train with batches balanced between original and new images (``cfg.new_fraction``);
    ``teacher``: the baseline, for ``distill``."""
    if len(new.ids) == 0:
        raise ValueError("no mentored image to train on (did mining select anything?)")
    source = BalancedSource(
        original_images,
        original_targets,
        new.images,
        new.targets,
        new.annotated,
        cfg.batch_size,
        cfg.new_fraction,
        cfg.augment,
    )
    return train(trainee, source, make_loss(trainee, cfg, teacher), cfg, seed, **loop_kwargs)  # type: ignore[arg-type]
