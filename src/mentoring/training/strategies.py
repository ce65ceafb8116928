"""The strategies of a new model (paper sections 3.3-3.4), selectable and combinable.

- ``scratch`` ("w/ new data"): random init, original + mentored data, L = L_S + lambda * L_W;
- ``transfer``: initialised from the baseline's weights, still on both data sets (3.4.1);
- ``omnia``: (area, class) entries of mentored images where the baseline's probability is below
  epsilon become annotated healthy (3.4.2);
- ``healthy``: every entry of images flagged healthy becomes annotated healthy (3.4.3);
- ``dann``: a gradient reversal layer and a fully-convolutional domain segmenter on the
  segmenter's features, per-cell domain BCE, GRL coefficient ramped as in Ganin et al. (3.4.4);
- ``oracle``: the upper bound, trained with the full ground truth of the new pool.

Combinations join with ``+``: ``transfer+omnia``, ``transfer+dann``, ...
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from mentoring.config import MentoredTrainParams, parse_strategy
from mentoring.data.batch import BalancedSource, Batch
from mentoring.losses import mentoring_loss
from mentoring.models.domain import DomainSegmenter, domain_loss, grl_coefficient
from mentoring.models.segmenter import Segmenter
from mentoring.training import distributed
from mentoring.training.loop import EpochStats, LossFn, train


@dataclass(frozen=True)
class NewData:
    """The new-domain training set of a strategy.

    Attributes:
        ids: image ids.
        images: (M, C_in, H, W) uint8.
        targets: (M, C, h, w) uint8, meaningful where annotated.
        annotated: (M, C, h, w) bool.
    """

    ids: list[str]
    images: torch.Tensor
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
    return read


def make_loss(trainee: Trainee, cfg: MentoredTrainParams) -> LossFn:
    """L = L_S + lambda * L_W (+ w_d * L_D with a domain head), eqs. (3) and (4).

    Under a process group, L_W is normalised by the annotated entries of the global batch (not
    of this rank's share, which vary from rank to rank), so the ranks' average is the L_W of
    the global batch; L_S and L_D are means over equal shares already.
    """
    seg, head = trainee.segmenter, trainee.domain_head

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
        )
        if distributed.is_distributed():
            factor = distributed.global_mean_factor(int(batch.annotated[new].sum()))
            loss, l_w = l_s + cfg.lambda_w * (l_w * factor), l_w * factor
        parts = {"l_s": float(l_s.detach()), "l_w": float(l_w.detach())}
        if head is not None:
            head.grl.coeff = grl_coefficient(progress, cfg.dann_gamma)
            l_d = domain_loss(head(feats), batch.domain)
            loss = loss + cfg.dann_weight * l_d
            parts["l_d"] = float(l_d.detach())
            parts["grl"] = head.grl.coeff
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
    original_images: torch.Tensor,
    original_targets: torch.Tensor,
    new: NewData,
    cfg: MentoredTrainParams,
    seed: int,
    **loop_kwargs: object,
) -> list[EpochStats]:
    """Train with batches balanced between original and new images (``cfg.new_fraction``)."""
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
    return train(trainee, source, make_loss(trainee, cfg), cfg, seed, **loop_kwargs)  # type: ignore[arg-type]
