"""Mining: find the detected areas of images and pick the images operators should see.

**Area extraction**: the detected areas of an image are the connected groups (8-connectivity) of
cells of one class whose probability is >= the class threshold; each has an id, a class, its
cells, a bounding box in pixels and a score (its highest cell probability).

**Heuristics** are small classes with one ``score(probs) -> scores`` method (style rule 7): they
map (N, C, h, w) probabilities to one (N,) score per image; an image with score <= 0 is not of
interest. ``detections`` is the paper's (any detected area is of interest: defects are rare, and
false positives are what we need to learn from); ``uncertainty`` and ``entropy`` are the more
elaborate alternatives the paper mentions.

Example:
    >>> areas = extract_areas(probs[0], ("scratch", "crack"), 0.5, stride=8, image_id="img-1")
    >>> picked = mine(probs, Detections(0.5), budget=100, seed=0)
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from scipy import ndimage

_EIGHT = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class Area:
    """A detected area: connected cells of one class at or above its threshold.

    Attributes:
        area_id: ``<image_id>/<class>/<k>``, unique within the image; for mining tasks
            ``<image_id>/<class>/<digest>``, derived from the area's content
            (:func:`content_area_id`).
        cls: class name.
        cells: (row, col) of each cell of the area, row-major order.
        bbox: (x0, y0, x1, y1) in pixels, x1/y1 exclusive.
        score: the highest probability of the class over the area's cells.
    """

    area_id: str
    cls: str
    cells: tuple[tuple[int, int], ...]
    bbox: tuple[int, int, int, int]
    score: float


def _thresholds(thresholds: float | Sequence[float], n: int) -> np.ndarray:
    t = np.broadcast_to(np.asarray(thresholds, dtype=np.float32), (n,))
    return t.astype(np.float32)


def extract_areas(
    probs: np.ndarray,
    classes: Sequence[str],
    thresholds: float | Sequence[float],
    stride: int,
    image_id: str,
) -> list[Area]:
    """Detected areas of one image from its (C, h, w) probabilities."""
    return extract_areas_batch(probs[None], classes, thresholds, stride, [image_id])[0]


#: 8-connectivity within each (image, class) plane of an (N, C, h, w) array, none across planes
_PLANES = np.zeros((3, 3, 3, 3), dtype=bool)
_PLANES[1, 1] = _EIGHT


@dataclass(frozen=True)
class AreaArrays:
    """The detected areas of one image as a few numpy arrays (compact to keep or spill: no
    Python object per area or cell); :meth:`areas` makes the :class:`Area` objects.

    Attributes:
        cls: (n,) class index of each area.
        k: (n,) index of each area within its class (the ``<k>`` of its id).
        bbox: (n, 4) x0, y0, x1, y1 in pixels, x1/y1 exclusive.
        score: (n,) highest probability of the class over each area's cells.
        ends: (n,) end of each area's run of cells in ``rows``/``cols``.
        rows, cols: every area's cells, area by area, row-major within an area.
    """

    cls: np.ndarray
    k: np.ndarray
    bbox: np.ndarray
    score: np.ndarray
    ends: np.ndarray
    rows: np.ndarray
    cols: np.ndarray

    def areas(
        self, classes: Sequence[str], image_id: str, image_sha256: str | None = None
    ) -> list[Area]:
        """The areas as :class:`Area` objects, ids ``<image_id>/<class>/<k>``, or derived from
        their content (:func:`content_area_id`) when ``image_sha256`` is given."""
        rows_l, cols_l = self.rows.tolist(), self.cols.tolist()
        out: list[Area] = []
        begin = 0
        for ci, kk, end, score, box in zip(
            self.cls.tolist(),
            self.k.tolist(),
            self.ends.tolist(),
            self.score.tolist(),
            self.bbox.tolist(),
            strict=True,
        ):
            cells = tuple(zip(rows_l[begin:end], cols_l[begin:end], strict=True))
            out.append(
                Area(
                    f"{image_id}/{classes[ci]}/{kk}"
                    if image_sha256 is None
                    else content_area_id(image_id, image_sha256, classes[ci], cells),
                    classes[ci],
                    cells,
                    (box[0], box[1], box[2], box[3]),
                    float(score),
                )
            )
            begin = end
        return out


def content_area_id(
    image_id: str, image_sha256: str, cls: str, cells: Sequence[tuple[int, int]]
) -> str:
    """``<image_id>/<class>/<digest>``: the id of an area by what it is, not where it is listed.

    The digest is the first 12 hex digits of the sha256 of the image's bytes' sha256, the class
    and the sorted cells. The same image, class and cells always give the same id, whichever
    mining run found them and in whatever order; any other area (another model's, a re-taken
    image's) gets another one. So a verdict can only ever land on the cells it was given for:
    feedback for an area that is not in the tasks is refused by its id, where positional ids
    (``<k>``, the k-th area of its class) let a newer mining's area take an older verdict.
    """
    text = ";".join(f"{r},{c}" for r, c in sorted(cells))
    digest = hashlib.sha256(f"{image_sha256}\0{cls}\0{text}".encode()).hexdigest()[:12]
    return f"{image_id}/{cls}/{digest}"


_NONE = np.zeros(0, np.int64)
_EMPTY = AreaArrays(
    _NONE, _NONE, np.zeros((0, 4), np.int64), np.zeros(0, np.float32), _NONE, _NONE, _NONE
)


def extract_area_arrays(
    probs: np.ndarray, thresholds: float | Sequence[float], stride: int
) -> list[AreaArrays]:
    """Detected areas of each image of an (N, C, h, w) batch of probabilities, as arrays, in
    one labelling of the batch (8-connected within each image-class plane, none across)."""
    n, c, h, w = probs.shape
    t = _thresholds(thresholds, c).reshape(1, c, 1, 1)
    labels, count = ndimage.label(probs >= t, structure=_PLANES)
    if count == 0:
        return [_EMPTY] * n
    # every area in one pass over the detected cells: flat indices sorted by label (stable, so
    # each area's cells stay in row-major order), split per area. Labels are numbered in raster
    # order, so a plane's labels are consecutive and its k-th area is label - its first label.
    flat = labels.ravel()
    cells_at = np.flatnonzero(flat)
    cells_at = cells_at[np.argsort(flat[cells_at], kind="stable")]
    plane_of_cell, in_plane = np.divmod(cells_at, h * w)
    rows, cols = np.divmod(in_plane, w)
    ends = np.cumsum(np.bincount(flat[cells_at], minlength=count + 1)[1:])
    starts = np.concatenate(([0], ends[:-1]))
    maxima = np.maximum.reduceat(probs.ravel()[cells_at], starts)
    plane = plane_of_cell[starts]  # non-decreasing
    k = np.arange(count) - np.searchsorted(plane, plane, side="left")
    bbox = np.stack(
        [
            np.minimum.reduceat(cols, starts) * stride,
            np.minimum.reduceat(rows, starts) * stride,
            (np.maximum.reduceat(cols, starts) + 1) * stride,
            (np.maximum.reduceat(rows, starts) + 1) * stride,
        ],
        axis=1,
    )
    image, cls = np.divmod(plane, c)
    # each image's run of areas, then of cells
    area_bounds = np.searchsorted(image, np.arange(n + 1), side="left")
    out: list[AreaArrays] = []
    for i in range(n):
        a0, a1 = int(area_bounds[i]), int(area_bounds[i + 1])
        if a0 == a1:
            out.append(_EMPTY)
            continue
        c0 = int(starts[a0])
        c1 = int(ends[a1 - 1])
        out.append(
            AreaArrays(
                cls[a0:a1].copy(),
                k[a0:a1].copy(),
                bbox[a0:a1].copy(),
                maxima[a0:a1].copy(),
                ends[a0:a1] - c0,
                rows[c0:c1].astype(np.int16),
                cols[c0:c1].astype(np.int16),
            )
        )
    return out


def extract_areas_batch(
    probs: np.ndarray,
    classes: Sequence[str],
    thresholds: float | Sequence[float],
    stride: int,
    image_ids: Sequence[str],
) -> list[list[Area]]:
    """Detected areas of each image of an (N, C, h, w) batch of probabilities: the same areas,
    in the same order, as :func:`extract_areas` on each image, in one labelling of the batch."""
    return [
        a.areas(classes, image_id)
        for a, image_id in zip(
            extract_area_arrays(probs, thresholds, stride), image_ids, strict=True
        )
    ]


class Heuristic(Protocol):
    """Scores images for mining: (N, C, h, w) probabilities -> (N,) scores, > 0 = of interest."""

    name: str

    def score(self, probs: np.ndarray) -> np.ndarray: ...


class Detections:
    """The paper's heuristic: an image is of interest when it has a detected area.

    Score: the highest probability over entries at or above the threshold, 0 without any.
    """

    name = "detections"

    def __init__(self, threshold: float | Sequence[float] = 0.5) -> None:
        self.threshold = threshold

    def score(self, probs: np.ndarray) -> np.ndarray:
        t = _thresholds(self.threshold, probs.shape[1]).reshape(1, -1, 1, 1)
        detected = np.where(probs >= t, probs, 0.0)  # (N, C, h, w)
        return detected.reshape(len(probs), -1).max(axis=1)


class Uncertainty:
    """Images with entries close to the decision boundary: |p - t| <= margin.

    Score: the number of such (area, class) entries (more undecided cells, more to learn).
    """

    name = "uncertainty"

    def __init__(self, threshold: float | Sequence[float] = 0.5, margin: float = 0.2) -> None:
        self.threshold, self.margin = threshold, margin

    def score(self, probs: np.ndarray) -> np.ndarray:
        t = _thresholds(self.threshold, probs.shape[1]).reshape(1, -1, 1, 1)
        close = np.abs(probs - t) <= self.margin  # (N, C, h, w)
        return close.reshape(len(probs), -1).sum(axis=1).astype(np.float64)


class Entropy:
    """Images whose predictions carry the most binary entropy (summed over entries).

    Healthy background at p ~ 0 contributes ~0, so the sum is dominated by undecided entries.
    """

    name = "entropy"

    def __init__(self, floor: float = 0.05) -> None:
        self.floor = floor  # entries below this entropy (in bits) count as decided

    def score(self, probs: np.ndarray) -> np.ndarray:
        p = np.clip(probs.astype(np.float64), 1e-7, 1 - 1e-7)
        h = -(p * np.log2(p) + (1 - p) * np.log2(1 - p))  # (N, C, h, w)
        h = np.where(h >= self.floor, h, 0.0)
        return h.reshape(len(probs), -1).sum(axis=1)


class Random:
    """Every image is of interest with the same score: the ranking's seeded tie-break alone
    orders them, so a budget picks a uniform random sample (the active-learning baseline)."""

    name = "random"

    def score(self, probs: np.ndarray) -> np.ndarray:
        return np.ones(len(probs), np.float64)


def make_heuristic(name: str, threshold: float | Sequence[float], margin: float) -> Heuristic:
    """The heuristic called ``name`` (``detections``, ``uncertainty``, ``entropy``, ``random``)."""
    if name == "detections":
        return Detections(threshold)
    if name == "uncertainty":
        return Uncertainty(threshold, margin)
    if name == "entropy":
        return Entropy()
    if name == "random":
        return Random()
    raise ValueError(f"unknown mining heuristic {name!r}: detections, uncertainty, entropy, random")


def _tiebreak(ids: Sequence[str], seed: int) -> np.ndarray:
    """A seeded pseudo-random key per image id (the same id always gets the same key)."""
    return np.array(
        [int.from_bytes(hashlib.sha256(f"{seed}/{i}".encode()).digest()[:8], "big") for i in ids],
        dtype=np.uint64,
    )


def mine(
    probs: np.ndarray,
    heuristic: Heuristic,
    budget: int | None = None,
    seed: int = 0,
    ids: Sequence[str] | None = None,
) -> np.ndarray:
    """Indices of the images of interest, best score first, at most ``budget`` of them.

    Ties are broken by a seeded hash of each image id (of its position when ``ids`` is not
    given): with ids, the choice does not depend on the order images came in; it is always
    reproducible.
    """
    return rank(heuristic.score(probs), budget, seed, ids)


def rank(
    scores: np.ndarray, budget: int | None = None, seed: int = 0, ids: Sequence[str] | None = None
) -> np.ndarray:
    """:func:`mine` on (N,) scores already computed: indices with score > 0, best first."""
    keys = ids if ids is not None else [str(i) for i in range(len(scores))]
    tiebreak = _tiebreak(keys, seed)
    order = np.lexsort((tiebreak, -scores))  # sort by -score, then tiebreak
    picked = order[scores[order] > 0]
    return picked if budget is None else picked[:budget]
