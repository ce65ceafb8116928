"""Evaluation per domain: area AP / mAP, precision and recall at a threshold, image-level rates.

Definitions (over one domain's evaluation set):

- **AP of class c**: average precision over every area (cell) of every image, score = predicted
  probability of c, label = the area ground truth of c (scikit-learn's
  ``average_precision_score``). **mAP**: the mean over classes with at least one positive area.
- **precision / recall @ t**: over every (area, class) entry, predicted positive when p >= t.
- **false-reject rate**: healthy parts (no defective area) with any p >= t, over healthy parts.
- **escape rate**: defective parts (>= 1 defective area) with no p >= t, over defective parts.

These are the **cell level**. Beside them, each domain's metrics hold a ``defect`` block: the
**defect level** of :mod:`mentoring.detection` (detected areas matched to connected defects,
COCO AP), what a plant counts. :data:`LEVELS` names both; :func:`level` reads either.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from mentoring.data.manifest import data_root, read_manifest, select
from mentoring.detection import DefectAccumulator
from mentoring.io import write_with
from mentoring.line.preview import CLASS_COLORS

if TYPE_CHECKING:
    from mentoring.config import Params


@torch.no_grad()
def predict(
    model: torch.nn.Module,
    images: torch.Tensor,
    batch_size: int = 64,
    device: str = "cpu",
    precision: str = "fp32",
    channels_last: bool = False,
) -> np.ndarray:
    """(N, C_in, H, W) uint8 images -> (N, C, h, w) float32 probabilities.

    ``precision`` ``bf16`` runs the forward under autocast; ``channels_last`` uses NHWC."""
    from mentoring.runtime import autocast

    model.eval().to(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    if channels_last:
        model.to(memory_format=fmt)  # type: ignore[call-overload]
    cuda = device.startswith("cuda")
    out = []
    for i in range(0, images.shape[0], batch_size):
        chunk = images[i : i + batch_size]
        if cuda:
            chunk = chunk.pin_memory()
        x = chunk.to(device, non_blocking=cuda).to(torch.float32) / 255.0
        with autocast(device, precision):
            logits = model(x.contiguous(memory_format=fmt))
        if not bool(torch.isfinite(logits).all()):  # NaN probabilities would score as numbers
            raise ValueError(
                f"the model's outputs hold NaN or infinite values on images {i}..{i + len(chunk)}"
                " (diverged weights or an overflow): no metric or decision can use them"
            )
        out.append(torch.sigmoid(logits.float()).cpu())
    return torch.cat(out).numpy()


def stream_predictions(
    model: torch.nn.Module,
    df: pd.DataFrame,
    root: Path,
    batch_size: int = 64,
    device: str = "cpu",
    workers: int = 0,
    precision: str = "fp32",
    channels_last: bool = False,
) -> Iterator[tuple[int, np.ndarray]]:
    """:func:`predict` over manifest rows read batch by batch (:mod:`mentoring.data.reader`):
    ``(start, probs)`` per batch, probs (B, C, h, w) float32 of rows ``start``.. in order. The
    same batches as :func:`predict` on the whole tensor, so the same numbers on CPU."""
    from mentoring.data.reader import image_batches

    for start, images in image_batches(df, root, batch_size, workers):
        yield start, predict(model, images, batch_size, device, precision, channels_last)


def _ratio(num: int, den: int) -> float:
    return float(num / den) if den else 0.0


class CellAccumulator:
    """Cell-level metrics over batches of (probabilities, targets), in memory flat in the set.

    The exact AP of a class needs, at each distinct score of a positive entry, how many entries
    of each label score at least that much. So the accumulator keeps the scores (float32) of the
    class's positive entries in memory (defects are rare: a few % of the cells) and appends those
    of its negative entries to a temporary file (4 bytes per negative cell and class, deleted
    with the accumulator), read back in chunks once to count them against the positive scores.
    The rest are counts. Adding the batches of a set in order gives exactly what the whole set
    gives (:func:`area_metrics`); the AP is scikit-learn's ``average_precision_score`` (tested
    against it), without holding every score.
    """

    #: negative scores read back per chunk: 4 MiB of float32, 8 MiB of their ranks (a larger
    #: chunk is a peak that only large sets reach)
    chunk_entries = 1 << 20

    def __init__(self, classes: tuple[str, ...], threshold: float = 0.5) -> None:
        self.classes, self.threshold = tuple(classes), threshold
        c = len(self.classes)
        self._positives: list[list[np.ndarray]] = [[] for _ in range(c)]
        self._negatives: list[IO[bytes] | None] = [None] * c
        self._curves: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self.tp, self.n_pred, self.n_pos = (np.zeros(c, np.int64) for _ in range(3))
        self.n_images = self.n_defective = self.n_flagged_healthy = self.n_escaped = 0

    def add(self, probs: np.ndarray, targets: np.ndarray) -> None:
        """One batch: (B, C, h, w) probabilities and {0, 1} targets."""
        if probs.shape != targets.shape:
            raise ValueError(f"probs {probs.shape} and targets {targets.shape} differ in shape")
        n, c = probs.shape[:2]
        if c != len(self.classes):
            raise ValueError(f"{c} output channels but {len(self.classes)} classes")
        p = probs.transpose(1, 0, 2, 3).reshape(c, -1).astype(np.float32, copy=False)
        t = targets.transpose(1, 0, 2, 3).reshape(c, -1).astype(bool)
        pred = p >= self.threshold
        self._curves.clear()
        for k in range(c):
            self._positives[k].append(p[k][t[k]])
            neg = p[k][~t[k]]
            if neg.size:
                f = self._negatives[k]
                if f is None:
                    f = self._negatives[k] = tempfile.TemporaryFile(prefix="mentoring-cells-")
                f.write(np.ascontiguousarray(neg).tobytes())
        self.tp += (pred & t).sum(axis=1)
        self.n_pred += pred.sum(axis=1)
        self.n_pos += t.sum(axis=1)
        flagged = (probs >= self.threshold).reshape(n, -1).any(axis=1)
        defective = targets.reshape(n, -1).any(axis=1)
        self.n_images += int(n)
        self.n_defective += int(defective.sum())
        self.n_flagged_healthy += int((flagged & ~defective).sum())
        self.n_escaped += int((~flagged & defective).sum())

    def _negative_chunks(self, k: int) -> Iterator[np.ndarray]:
        f = self._negatives[k]
        if f is None:
            return
        f.flush()
        f.seek(0)
        while True:
            chunk = np.fromfile(f, dtype=np.float32, count=self.chunk_entries)
            if not chunk.size:
                break
            yield chunk
        f.seek(0, 2)  # later batches append

    def curve(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Class ``k``'s counts at each distinct score of its positive entries.

        Returns:
            ``(scores, tp, fp)``: the distinct positive scores, descending, and for each the
            positive and negative entries scoring at least that much (empty without positives).
        """
        if k in self._curves:
            return self._curves[k]
        pos = np.concatenate(self._positives[k]) if self._positives[k] else np.zeros(0, np.float32)
        scores, counts = np.unique(pos, return_counts=True)  # ascending
        at_or_above = np.zeros(scores.size + 1, np.int64)
        # without positives there is no curve: the negatives are not read back
        for chunk in self._negative_chunks(k) if scores.size else ():
            # a negative scoring x counts for every positive score <= x: the first `i` ones
            at_or_above += np.bincount(
                np.searchsorted(scores, chunk, side="right"), minlength=scores.size + 1
            )
        fp = np.cumsum(at_or_above[::-1])[::-1][1:]  # negatives >= scores[j]
        tp = np.cumsum(counts[::-1])[::-1]
        self._curves[k] = (scores[::-1], tp[::-1], fp[::-1])
        return self._curves[k]

    def average_precision(self, k: int) -> float | None:
        """Class ``k``'s AP (scikit-learn's definition: sum of recall steps x precision), None
        without positives. Only the distinct positive scores step the recall."""
        scores, tp, fp = self.curve(k)
        if not scores.size:
            return None
        steps = np.diff(tp, prepend=0) / tp[-1]
        # scikit-learn's sum of precision steps can land a rounding error above 1
        return min(float(np.sum(steps * (tp / (tp + fp)))), 1.0)

    def result(self) -> dict[str, Any]:
        """The metrics of :func:`area_metrics`."""
        per_class: dict[str, dict[str, Any]] = {}
        aps = []
        for k, name in enumerate(self.classes):
            n_pos = int(self.n_pos[k])
            ap = self.average_precision(k)
            if ap is not None:
                aps.append(ap)
            tp_k = int(self.tp[k])
            per_class[name] = {
                "ap": ap,
                "n_positive": n_pos,
                "precision": _ratio(tp_k, int(self.n_pred[k])),
                "recall": _ratio(tp_k, n_pos),
            }
        tp, n_pred, n_pos_all = int(self.tp.sum()), int(self.n_pred.sum()), int(self.n_pos.sum())
        n_healthy = self.n_images - self.n_defective
        return {
            "map": float(np.mean(aps)) if aps else 0.0,
            "precision": _ratio(tp, n_pred),
            "recall": _ratio(tp, n_pos_all),
            "f1": _ratio(int(2 * tp), n_pred + n_pos_all),
            "false_reject_rate": _ratio(self.n_flagged_healthy, n_healthy),
            "escape_rate": _ratio(self.n_escaped, self.n_defective),
            "n_images": int(self.n_images),
            "n_defective_images": int(self.n_defective),
            "n_positive_areas": n_pos_all,
            "n_predicted_areas": n_pred,
            "threshold": self.threshold,
            "per_class": per_class,
        }


def area_metrics(
    probs: np.ndarray, targets: np.ndarray, classes: tuple[str, ...], threshold: float = 0.5
) -> dict[str, Any]:
    """Metrics of (N, C, h, w) probabilities against (N, C, h, w) {0,1} area targets.

    Returns:
        ``map``, ``precision``, ``recall``, ``f1``, ``false_reject_rate``, ``escape_rate``,
        counts, and ``per_class`` with each class's ``ap`` (None without positives),
        ``precision``, ``recall`` and ``n_positive``.
    """
    acc = CellAccumulator(classes, threshold)
    acc.add(probs, targets)
    return acc.result()


def plot_pr_curves(
    probs: np.ndarray, targets: np.ndarray, classes: tuple[str, ...], title: str, path: str | Path
) -> Path:
    """One precision-recall curve per class with positives, AP in the legend."""
    acc = CellAccumulator(classes)
    acc.add(probs, targets)
    return plot_pr_curves_of(acc, title, path)


def plot_pr_curves_of(acc: CellAccumulator, title: str, path: str | Path) -> Path:
    """:func:`plot_pr_curves` from the entries an accumulator kept."""
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    for k, name in enumerate(acc.classes):
        _, tp, fp = acc.curve(k)
        if not tp.size:
            continue
        # the curve at each positive score, from (recall 0, precision 1) as scikit-learn draws it
        rec = np.concatenate([[0.0], tp / tp[-1]])
        prec = np.concatenate([[1.0], tp / (tp + fp)])
        ap = acc.average_precision(k)
        ax.step(rec, prec, where="pre", color=CLASS_COLORS[k % 7], label=f"{name} (AP {ap:.2f})")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    write_with(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return Path(path)


def plot_levels(domains: dict[str, dict[str, Any]], title: str, path: str | Path) -> Path:
    """Bars of mAP, precision and recall per domain, defect level beside cell level."""
    keys = ("map", "precision", "recall")
    fig, axes = plt.subplots(1, len(domains), figsize=(3.6 * len(domains), 3.4), squeeze=False)
    x = np.arange(len(keys))
    for ax, (domain, m) in zip(axes[0], domains.items(), strict=True):
        for i, name in enumerate(LEVELS):
            if name == "defect" and "defect" not in m:
                continue
            vals = [level(m, name)[k] for k in keys]
            bars = ax.bar(x + (i - 0.5) * 0.38, vals, 0.38, label=f"{name} level")
            ax.bar_label(bars, fmt="%.2f", fontsize=6)
        ax.set_xticks(x, ["mAP", f"precision@{m['threshold']}", f"recall@{m['threshold']}"])
        ax.set(ylim=(0, 1.1), title=f"{domain} domain")
        ax.tick_params(labelsize=7)
        ax.grid(axis="y", alpha=0.3)
    axes[0, 0].legend(fontsize=7, loc="lower left")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    write_with(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return Path(path)


def plot_predictions(
    images: np.ndarray,
    probs: np.ndarray,
    targets: np.ndarray,
    classes: tuple[str, ...],
    ids: list[str],
    threshold: float,
    title: str,
    path: str | Path,
) -> Path:
    """Images with ground-truth areas (dashed) and predicted areas (solid), per class colour."""
    n = len(ids)
    cols = min(4, max(n, 1))
    rows = int(np.ceil(n / cols)) or 1
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.6, rows * 2.8), squeeze=False)
    stride = images.shape[-1] // probs.shape[-1]
    for i in range(rows * cols):
        ax = axes[i // cols, i % cols]
        ax.set_axis_off()
        if i >= n:
            continue
        img = images[i]
        ax.imshow(
            img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0), cmap="gray", vmin=0, vmax=255
        )
        for k in range(len(classes)):
            color = CLASS_COLORS[k % 7]
            for arr, style in ((targets[i, k] > 0, "--"), (probs[i, k] >= threshold, "-")):
                if arr.any():
                    up = np.kron(arr.astype(np.uint8), np.ones((stride, stride), np.uint8))
                    ax.contour(up, levels=[0.5], colors=[color], linestyles=style, linewidths=1)
        ax.set_title(ids[i], fontsize=7)
    handles = [
        plt.Line2D([], [], color=CLASS_COLORS[k % 7], label=name) for k, name in enumerate(classes)
    ]
    handles += [
        plt.Line2D([], [], color="k", ls="--", label="ground truth"),
        plt.Line2D([], [], color="k", ls="-", label=f"predicted (p >= {threshold})"),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    write_with(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)
    return Path(path)


class ExamplePicker:
    """Images worth looking at, chosen while streaming: the first ``max(n // 3, 1)`` false
    alarms (flagged, healthy), then as many escapes (defective, not flagged), then the first
    hits, ``n`` in all. Keeps at most that many images, with their probabilities and targets.
    """

    def __init__(self, n: int, threshold: float) -> None:
        self.n, self.threshold, self.k = n, threshold, max(n // 3, 1)
        self._kept: dict[str, list[tuple[int, Any, np.ndarray, np.ndarray]]] = {
            "fp": [],
            "fn": [],
            "hit": [],
        }

    def add(self, start: int, images: Any, probs: np.ndarray, targets: np.ndarray) -> None:
        """One batch; ``start`` is the index of its first image (``images`` may be None)."""
        if self.n <= 0:
            return
        flagged: list[bool] = np.any(
            probs.reshape(len(probs), -1) >= self.threshold, axis=1
        ).tolist()
        defective: list[bool] = np.any(targets.reshape(len(targets), -1), axis=1).tolist()
        limits = {"fp": self.k, "fn": self.k, "hit": self.n}
        for j in range(len(probs)):
            kind = "hit" if flagged[j] and defective[j] else "fp" if flagged[j] else "fn"
            if not flagged[j] and not defective[j]:
                continue
            if len(self._kept[kind]) < limits[kind]:
                image = None if images is None else images[j].copy()
                self._kept[kind].append((start + j, image, probs[j].copy(), targets[j].copy()))

    def picked(self) -> list[tuple[int, Any, np.ndarray, np.ndarray]]:
        """(index, image, probabilities, targets) of the examples, in their order."""
        order = self._kept["fp"][: self.k] + self._kept["fn"][: self.k] + self._kept["hit"]
        return order[: max(self.n, 0)]


def pick_examples(probs: np.ndarray, targets: np.ndarray, n: int, threshold: float) -> list[int]:
    """Indices of images worth looking at: errors first (FP then FN), then hits."""
    picker = ExamplePicker(n, threshold)
    picker.add(0, None, probs, targets)
    return [i for i, *_ in picker.picked()]


#: the evaluation set of each domain
EVAL_SPLITS: tuple[tuple[str, str], ...] = (("original", "eval"), ("new", "eval"))
#: the two levels of every domain's metrics: ``defect`` (its ``defect`` block), ``cell`` (the rest)
LEVELS: tuple[str, ...] = ("defect", "cell")


def level(domain_metrics: dict[str, Any], name: str) -> dict[str, Any]:
    """One level's metrics of a domain: ``cell`` = the top-level keys, ``defect`` = its block."""
    if name not in LEVELS:
        raise ValueError(f"unknown evaluation level {name!r}; one of {list(LEVELS)}")
    if name == "cell":
        return domain_metrics
    if "defect" not in domain_metrics:
        raise KeyError(
            "these metrics have no defect level (evaluated before it existed): re-run evaluate"
        )
    block: dict[str, Any] = domain_metrics["defect"]
    return block


def summary(domain_metrics: dict[str, Any]) -> dict[str, Any]:
    """A domain's metrics without the per-class detail, at both levels (what MLflow logs)."""
    out = {k: v for k, v in domain_metrics.items() if k not in ("per_class", "defect")}
    if "defect" in domain_metrics:
        out["defect"] = {k: v for k, v in domain_metrics["defect"].items() if k != "per_class"}
    return out


@dataclass
class DomainScores:
    """What evaluating one domain keeps: its metrics (both levels), the cell-level entries (for
    the PR curves) and the example images (index, image, probabilities, targets)."""

    metrics: dict[str, Any]
    cells: CellAccumulator
    examples: list[tuple[int, Any, np.ndarray, np.ndarray]]
    ids: list[str]


def score_domains(
    params: Params,
    manifest: Path,
    model: torch.nn.Module,
    device: str = "cpu",
    n_examples: int = 0,
) -> Iterator[tuple[str, DomainScores]]:
    """Per evaluation domain: (domain, its scores), read and scored batch by batch.

    The metrics are the cell level (:class:`CellAccumulator`, as :func:`area_metrics`) with the
    defect level (:class:`~mentoring.detection.DefectAccumulator`) as their ``defect`` block.
    Memory holds one batch of images, the entries' scores and labels, the defects and
    detections, and ``n_examples`` images: not the evaluation set.
    """
    from mentoring.data.cells import mask_to_cells
    from mentoring.data.reader import labelled_batches

    classes, cfg = params.line.classes, params.evaluate
    stride, coverage = params.model.stride, params.line.cell_min_coverage
    for domain, split in EVAL_SPLITS:
        df = select(read_manifest(manifest), domain, split)
        if df.empty:
            raise ValueError(f"{manifest}: no images of domain {domain!r}, split {split!r}")
        cells = CellAccumulator(classes, cfg.threshold)
        defects = DefectAccumulator(
            classes,
            stride,
            coverage,
            threshold=cfg.threshold,
            detect_threshold=cfg.detect_threshold,
            match_iou=cfg.match_iou,
        )
        picker = ExamplePicker(n_examples, cfg.threshold)
        for start, images, masks in labelled_batches(
            df, data_root(manifest), cfg.batch_size, cfg.num_workers
        ):
            probs = predict(
                model,
                images,
                cfg.batch_size,
                device,
                params.base.precision,
                params.base.channels_last,
            )
            m_np = masks.numpy()
            targets = np.stack([mask_to_cells(m, len(classes), stride, coverage) for m in m_np])
            cells.add(probs, targets)
            defects.add(probs, m_np)
            picker.add(start, images.numpy(), probs, targets)
        metrics = cells.result()
        metrics["defect"] = defects.result()
        yield domain, DomainScores(metrics, cells, picker.picked(), list(df["image_id"]))
