"""Defect-level evaluation: detected areas against ground-truth defects, as a plant counts them.

The cell-level metrics of :mod:`mentoring.evaluation` count every cell; a plant (and the paper's
detection framing, section 3.1) counts **defects**: a detection that covers a real scratch a
little too widely is a found scratch. Definitions, over one domain's evaluation set:

- **defect**: a connected component (8-connectivity) of one class's pixel mask, taken at cell
  resolution (:func:`mask_defects`): a cell belongs to the component that covers most of its
  pixels among the components of that class, when the class covers at least ``min_coverage`` of
  it (the rule of :func:`~mentoring.data.cells.mask_to_cells`, so the union of a class's defects
  is exactly its cell targets). A component that covers no cell that much (a speck) is still a
  defect, of its best-covered cell: a plant would want it found.
- **detection**: a detected area, the same extraction as mining
  (:func:`~mentoring.mining.extract_areas`: connected cells of one class at or above
  ``detect_threshold``), scored by its highest probability.
- **match**: pycocotools' COCOeval (``iouType="segm"`` on cell-resolution masks, one IoU
  threshold ``match_iou``): detections of a class, by decreasing score, each take the
  not-yet-matched defect of that class and image with the highest cell IoU >= ``match_iou``.
  Industrial defects have fuzzy borders, hence a low default (0.1).
- **AP of class c**: COCO's 101-point interpolated average precision of that matching;
  **mAP**: the mean over classes with at least one defect.
- **precision / recall @ threshold**: detections scored >= ``threshold`` that matched, over all
  of them; defects matched by such a detection (found), over all defects.
- **false alarms per image**: detections scored >= ``threshold`` that matched no defect of their
  class (on a healthy image, every detection is one), over the images.

Example:
    >>> m = defect_metrics(probs, masks, classes, stride=8, min_coverage=0.06)  # doctest: +SKIP
    >>> m["map"], m["recall"], m["false_alarms_per_image"]  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from scipy import ndimage

from mentoring.mining import extract_area_arrays

_EIGHT = np.ones((3, 3), bool)  # 8-connectivity, as mining's areas


def mask_defects(
    mask: np.ndarray, n_classes: int, stride: int, min_coverage: float
) -> list[tuple[int, np.ndarray]]:
    """Ground-truth defects of one (H, W) class-index mask (0 = healthy, c + 1 = class c).

    Returns:
        ``(class index, (H/stride, W/stride) bool cells)`` per connected component of each
        class's pixels, in class order then label order.
    """
    h, w = mask.shape
    hc, wc = h // stride, w // stride
    # cell index of every pixel: (H, W) -> row-major index into the (hc, wc) grid
    cell_of = (np.arange(h)[:, None] // stride) * wc + np.arange(w)[None, :] // stride
    out: list[tuple[int, np.ndarray]] = []
    for c in range(n_classes):
        labels, n = ndimage.label(mask == c + 1, structure=_EIGHT)
        if n == 0:
            continue
        # 1. pixels of each component in each cell: (n + 1, hc * wc), row 0 = other pixels
        counts = np.bincount(
            (labels * (hc * wc) + cell_of).ravel(), minlength=(n + 1) * hc * wc
        ).reshape(n + 1, hc * wc)[1:]
        cover = counts / float(stride * stride)  # (n, cells) share of each cell
        # 2. a cell the class covers enough goes to the component covering most of it
        owner = cover.argmax(axis=0)
        enough = cover.sum(axis=0) >= min_coverage
        for k in range(n):
            cells = enough & (owner == k) & (cover[k] > 0)
            if not cells.any():  # 3. a speck: its best-covered cell
                cells = np.zeros(hc * wc, bool)
                cells[int(cover[k].argmax())] = True
            out.append((c, cells.reshape(hc, wc)))
    return out


def _rle(cells: np.ndarray) -> dict[str, Any]:
    rle: dict[str, Any] = mask_utils.encode(np.asfortranarray(cells.astype(np.uint8)))
    return rle


class DefectAccumulator:
    """Defect-level metrics over batches of (probabilities, masks), in bounded memory.

    Keeps the ground-truth defects and detected areas of at most ``chunk_images`` images as
    cell-resolution RLEs (what COCOeval matches); each full chunk is matched by COCOeval and
    reduced to what the AP and the counts need: per detection its score, whether it matched and
    whether it is ignored; per defect whether it is ignored. Memory grows by a few bytes a
    detection, never with the images or their masks. Adding the batches of a set in order gives
    exactly what the whole set in one chunk gives (:func:`defect_metrics`; tested).
    """

    def __init__(
        self,
        classes: Sequence[str],
        stride: int,
        min_coverage: float,
        threshold: float = 0.5,
        detect_threshold: float = 0.5,
        match_iou: float = 0.1,
        chunk_images: int = 512,
    ) -> None:
        if chunk_images < 1:
            raise ValueError(f"chunk_images must be >= 1, got {chunk_images}")
        self.classes = list(classes)
        self.stride, self.min_coverage = stride, min_coverage
        self.threshold, self.detect_threshold, self.match_iou = (
            threshold,
            detect_threshold,
            match_iou,
        )
        self.chunk_images = chunk_images
        self.n = 0
        self.grid: tuple[int, int] | None = None
        # the chunk not yet matched: its images' defects and detections (COCO dicts)
        self.chunk_n = 0
        self.gts: list[dict[str, Any]] = []
        self.dts: list[dict[str, Any]] = []
        # what the matched chunks left, per class: COCOeval's per-image results, merged
        c = len(self.classes)
        self._scores: list[list[np.ndarray]] = [[] for _ in range(c)]
        self._matched: list[list[np.ndarray]] = [[] for _ in range(c)]
        self._dt_ignore: list[list[np.ndarray]] = [[] for _ in range(c)]
        self._gt_ignore: list[list[np.ndarray]] = [[] for _ in range(c)]
        self.n_defects = np.zeros(c, int)
        self.det_tp = np.zeros(c, int)
        self.det_all = np.zeros(c, int)
        self.found = np.zeros(c, int)

    def add(self, probs: np.ndarray, masks: np.ndarray) -> None:
        """One batch: (B, C, h, w) probabilities and (B, H, W) class-index masks."""
        n, c, hc, wc = probs.shape
        if c != len(self.classes):
            raise ValueError(f"{c} output channels but {len(self.classes)} classes")
        stride = self.stride
        if masks.shape != (n, hc * stride, wc * stride):
            raise ValueError(
                f"masks {masks.shape} do not match probs {probs.shape} at stride {stride}"
            )
        if self.grid is None:
            self.grid = (hc, wc)
        elif self.grid != (hc, wc):
            raise ValueError(f"a batch of grid {(hc, wc)} after batches of grid {self.grid}")
        found = extract_area_arrays(probs, self.detect_threshold, 1)
        for j in range(n):
            gts, dts = self.gts, self.dts
            image_id = self.chunk_n + 1  # COCO ids from 1, within the chunk
            for k, cells in mask_defects(masks[j], c, stride, self.min_coverage):
                gts.append(
                    {
                        "id": len(gts) + 1,
                        "image_id": image_id,
                        "category_id": k + 1,
                        "segmentation": _rle(cells),
                        "area": float(cells.sum()),
                        "iscrowd": 0,
                    }
                )
            a = found[j]
            begin = 0
            for cls, end, score in zip(
                a.cls.tolist(), a.ends.tolist(), a.score.tolist(), strict=True
            ):
                cells = np.zeros((hc, wc), bool)
                cells[a.rows[begin:end], a.cols[begin:end]] = True
                begin = end
                dts.append(
                    {
                        "id": len(dts) + 1,
                        "image_id": image_id,
                        "category_id": cls + 1,
                        "segmentation": _rle(cells),
                        "area": float(cells.sum()),
                        "score": float(score),
                    }
                )
            self.chunk_n += 1
            self.n += 1
            if self.chunk_n == self.chunk_images:
                self._match_chunk()

    def _match_chunk(self) -> None:
        """COCOeval's matching of the pending chunk, reduced to scores, matches and ignores."""
        if self.chunk_n == 0:
            return
        hc, wc = self.grid or (0, 0)
        ev = _coco_eval(
            self.classes, self.chunk_n, (hc, wc), self.gts, self.dts, self.match_iou, evaluate=True
        )
        score_of = {d["id"]: d["score"] for d in self.dts}
        for g in self.gts:
            self.n_defects[g["category_id"] - 1] += 1
        # counts at ``threshold`` from the per-image matches (greedy by score, so the
        # detections above the threshold are matched exactly as if the others did not exist)
        c = len(self.classes)
        scores_k: list[list[np.ndarray]] = [[] for _ in range(c)]
        matched_k: list[list[np.ndarray]] = [[] for _ in range(c)]
        dt_ignore_k: list[list[np.ndarray]] = [[] for _ in range(c)]
        gt_ignore_k: list[list[np.ndarray]] = [[] for _ in range(c)]
        for e in ev.evalImgs:  # class by class, image by image: accumulate()'s order
            if e is None:
                continue
            k = e["category_id"] - 1
            scores = np.asarray(e["dtScores"], float)
            matched = np.asarray(e["dtMatches"]) > 0  # (1 IoU threshold, detections)
            keep = scores >= self.threshold
            self.det_all[k] += int(keep.sum())
            self.det_tp[k] += int(matched[0][keep].sum())
            self.found[k] += sum(
                1 for m in e["gtMatches"][0] if m > 0 and score_of[int(m)] >= self.threshold
            )
            scores_k[k].append(scores)
            matched_k[k].append(matched)
            dt_ignore_k[k].append(np.asarray(e["dtIgnore"], bool))
            gt_ignore_k[k].append(np.asarray(e["gtIgnore"], bool))
        # one array per class and chunk, in image order (a few arrays per image and class
        # would cost ~100 bytes of object each: memory growing with the images)
        for k in range(c):
            if scores_k[k]:
                self._scores[k].append(np.concatenate(scores_k[k]))
                self._matched[k].append(np.concatenate(matched_k[k], axis=1))
                self._dt_ignore[k].append(np.concatenate(dt_ignore_k[k], axis=1))
                self._gt_ignore[k].append(np.concatenate(gt_ignore_k[k]))
        self.gts, self.dts, self.chunk_n = [], [], 0

    def result(self) -> dict[str, Any]:
        """The metrics of :func:`defect_metrics`."""
        self._match_chunk()
        return _coco_metrics(self)


def defect_metrics(
    probs: np.ndarray,
    masks: np.ndarray,
    classes: Sequence[str],
    stride: int,
    min_coverage: float,
    threshold: float = 0.5,
    detect_threshold: float = 0.5,
    match_iou: float = 0.1,
) -> dict[str, Any]:
    """Defect-level metrics of (N, C, h, w) probabilities against (N, H, W) class-index masks.

    Returns:
        ``map``, ``precision``, ``recall``, ``f1``, ``false_alarms_per_image``, the counts
        ``n_images``, ``n_defects``, ``n_detections`` (scored >= ``threshold``),
        ``n_defects_found``, ``n_false_alarms``, the settings, and ``per_class`` with each
        class's ``ap`` (None without defects), ``precision``, ``recall`` and ``n_defects``.
    """
    acc = DefectAccumulator(classes, stride, min_coverage, threshold, detect_threshold, match_iou)
    acc.add(probs, masks)
    return acc.result()


def _coco_eval(
    classes: Sequence[str],
    n: int,
    grid: tuple[int, int],
    gts: list[dict[str, Any]],
    dts: list[dict[str, Any]],
    match_iou: float,
    evaluate: bool,
) -> COCOeval:
    """A COCOeval on ``n`` images of ``grid`` cells: one IoU threshold, every area, every
    detection of an image; ``evaluate`` runs the per-image matching."""
    hc, wc = grid
    images = [{"id": i + 1, "height": hc, "width": wc} for i in range(n)]
    categories = [{"id": k + 1, "name": name} for k, name in enumerate(classes)]
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        coco_gt, coco_dt = COCO(), COCO()
        coco_gt.dataset = {"images": images, "categories": categories, "annotations": gts}
        coco_dt.dataset = {"images": images, "categories": categories, "annotations": dts}
        coco_gt.createIndex()
        coco_dt.createIndex()
        ev = COCOeval(coco_gt, coco_dt, iouType="segm")
        ev.params.iouThrs = np.array([match_iou])
        ev.params.areaRng = [[0.0, 1e10]]
        ev.params.areaRngLbl = ["all"]
        # no cut: an image has at most one area per cell and class
        ev.params.maxDets = [max(hc * wc, 1)]
        if evaluate:
            ev.evaluate()
    return ev


def _coco_metrics(acc: DefectAccumulator) -> dict[str, Any]:
    n, c, classes = acc.n, len(acc.classes), acc.classes
    threshold, detect_threshold, match_iou = acc.threshold, acc.detect_threshold, acc.match_iou
    # COCOeval's accumulate() over every chunk's per-image results, merged per class in image
    # order: one pseudo-image per class, which gives accumulate() the same concatenations
    n_dets = sum(len(s) for per in acc._scores for s in per)
    ev = _coco_eval(classes, 1, (1, 1), [], [], match_iou, evaluate=False)
    ev.params.catIds = list(range(1, c + 1))
    ev.params.imgIds = [1]
    ev.params.maxDets = [max(n_dets, 1)]
    ev._paramsEval = copy.deepcopy(ev.params)
    ev.evalImgs = [
        {
            "dtScores": np.concatenate(acc._scores[k]),
            "dtMatches": np.concatenate(acc._matched[k], axis=1),
            "dtIgnore": np.concatenate(acc._dt_ignore[k], axis=1),
            "gtIgnore": np.concatenate(acc._gt_ignore[k]),
        }
        if acc._scores[k]
        else None
        for k in range(c)
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        ev.accumulate()
    # AP per class (precision[T=0, R, K, A=0, M=0]; -1 = no defect of the class)
    precision = ev.eval["precision"][0, :, :, 0, 0]  # (101 recall points, C)
    n_defects, det_tp, det_all, found = acc.n_defects, acc.det_tp, acc.det_all, acc.found
    per_class: dict[str, dict[str, Any]] = {}
    aps = []
    for k, name in enumerate(classes):
        col = precision[:, k]
        ap = float(col.mean()) if n_defects[k] and (col > -1).all() else None
        if ap is not None:
            aps.append(ap)
        per_class[name] = {
            "ap": ap,
            "n_defects": int(n_defects[k]),
            "precision": _ratio(int(det_tp[k]), int(det_all[k])),
            "recall": _ratio(int(found[k]), int(n_defects[k])),
        }
    tp, n_det, n_gt, n_found = (
        int(det_tp.sum()),
        int(det_all.sum()),
        int(n_defects.sum()),
        int(found.sum()),
    )
    return {
        "map": float(np.mean(aps)) if aps else 0.0,
        "precision": _ratio(tp, n_det),
        "recall": _ratio(n_found, n_gt),
        "f1": _ratio(2 * tp, n_det + n_gt),  # matching is one-to-one: tp == n_found
        "false_alarms_per_image": _ratio(n_det - tp, n),
        "n_images": int(n),
        "n_defects": n_gt,
        "n_detections": n_det,
        "n_defects_found": n_found,
        "n_false_alarms": n_det - tp,
        "threshold": threshold,
        "detect_threshold": detect_threshold,
        "match_iou": match_iou,
        "per_class": per_class,
    }


def _ratio(num: int, den: int) -> float:
    return float(num / den) if den else 0.0
