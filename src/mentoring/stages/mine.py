"""Stage ``mine``: the deployed model picks the new-domain images operators should see.

Reads ``base``, ``line.classes``, ``model.stride`` and ``mine``; reads the pool images (not their
masks) and the model; writes ``tasks.json`` (schema: :mod:`mentoring.feedback.schema`) and
``<results>/metrics.json``.
"""

from __future__ import annotations

import pickle
import tempfile
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import numpy as np

from mentoring.config import Params
from mentoring.data.images import Mapping
from mentoring.data.manifest import data_root, read_manifest, select
from mentoring.evaluation import stream_predictions
from mentoring.feedback.schema import MiningTasks, TaskArea, TaskImage, write_tasks
from mentoring.io import write_json
from mentoring.mining import AreaArrays, extract_area_arrays, make_heuristic, rank
from mentoring.registry import open_model
from mentoring.runtime import progress_bar, setup_torch


def run(
    params: Params,
    manifest: Path,
    model_path: Path | str,
    tasks_out: Path,
    results_dir: Path,
    domain: str = "new",
    split: str = "pool",
    model_name: str = "baseline",
    show_progress: bool = False,
) -> dict[str, Any]:
    """Score the pool with the model, pick the images of interest, write their detected areas.

    The pool is read in batches of ``mine.batch_size`` (decoded in ``mine.num_workers``
    processes); the areas of the images of interest are spilled to a temporary file beside
    ``tasks_out`` and the tasks are written image by image, so memory does not grow with the pool
    beyond a score and a file offset per image (and the manifest's rows).
    """
    device = setup_torch(params.base)
    cfg = params.mine
    model, classes, ref = open_model(params, model_path, device, model_name)
    df = select(read_manifest(manifest, check_files=False), domain, split)
    if df.empty:
        raise ValueError(f"{manifest}: no images of domain {domain!r}, split {split!r} to mine")
    heuristic = make_heuristic(cfg.heuristic, cfg.threshold, cfg.margin)
    ids = list(df["image_id"])
    # stream the pool: per batch, keep each image's score; the areas of the images of interest
    # (score > 0) go to a spill file beside the tasks, never the images nor the probabilities
    scores = np.zeros(len(ids), np.float64)
    tasks_out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=tasks_out.parent, prefix=".mine-areas.") as spill_file:
        spill = _AreaSpill(spill_file, len(ids))
        batches = stream_predictions(
            model,
            df,
            data_root(manifest),
            cfg.batch_size,
            device,
            cfg.num_workers,
            params.base.precision,
            params.base.channels_last,
        )
        grid = (0, 0)
        with progress_bar(show_progress, "mine", len(ids)) as advance:
            for start, probs in batches:
                s = heuristic.score(probs)  # once: for the ranking and the tasks' scores
                scores[start : start + len(s)] = s
                kept = np.flatnonzero(s > 0)
                found = extract_area_arrays(probs[kept], cfg.threshold, params.model.stride)
                for j, areas in zip(kept.tolist(), found, strict=True):
                    spill.put(start + j, areas)
                grid = (int(probs.shape[2]), int(probs.shape[3]))
                advance(len(s))
        picked = rank(scores, cfg.budget, params.base.seed, ids)
        header = MiningTasks(
            model=ref,
            heuristic=cfg.heuristic,
            threshold=cfg.threshold,
            stride=params.model.stride,
            grid=grid,
            classes=list(classes),
            created_at=datetime.now(UTC).replace(microsecond=0),
            images=[],
        )
        per_class = dict.fromkeys(classes, 0)
        # the picked images are serialised one by one, their areas read back from the spill
        write_tasks(tasks_out, header, _task_images(df, picked, scores, spill, classes, per_class))
    n_areas = sum(per_class.values())
    metrics = {
        "n_pool": len(ids),
        "n_mined": len(picked),
        "n_areas": n_areas,
        "mined_fraction": len(picked) / len(ids),
        "areas_per_class": per_class,
        "heuristic": cfg.heuristic,
    }
    write_json(results_dir / "metrics.json", metrics)
    return metrics


class _AreaSpill:
    """The detected areas of the images of interest, pickled to a temporary file as they come
    (a few numpy arrays an image): memory keeps one file offset per pool image, whatever the
    number of areas."""

    def __init__(self, file: IO[bytes], n: int) -> None:
        self.file = file
        self.offset = np.full(n, -1, np.int64)

    def put(self, i: int, areas: AreaArrays) -> None:
        self.file.seek(0, 2)
        self.offset[i] = self.file.tell()
        pickle.dump(areas, self.file, protocol=pickle.HIGHEST_PROTOCOL)

    def get(self, i: int) -> AreaArrays:
        self.file.seek(int(self.offset[i]))
        areas: AreaArrays = pickle.load(self.file)  # our own spill file of this run
        return areas


def _task_images(
    df: Any,
    picked: np.ndarray,
    scores: np.ndarray,
    spill: _AreaSpill,
    classes: Sequence[str],
    per_class: dict[str, int],
) -> Iterator[TaskImage]:
    """The task of each picked image in rank order; counts its areas per class on the way."""
    # the columns as Python lists once (a pandas row lookup per image cost more than the rest)
    keys = ("image_id", "path", "mapping", "width", "height", "source_uri", "sha256")
    cols = {k: df[k].tolist() for k in keys}
    for i in picked:
        row = {k: cols[k][int(i)] for k in keys}
        # ids from the area's content (image sha256, class, cells): stable across minings
        areas = spill.get(int(i)).areas(classes, str(row["image_id"]), str(row["sha256"]))
        mapping = Mapping.from_json(str(row["mapping"]), int(row["width"]), int(row["height"]))
        ingested = bool(row["mapping"])
        for a in areas:
            per_class[a.cls] += 1
        yield TaskImage(
            image_id=str(row["image_id"]),
            path=str(row["path"]),
            score=float(scores[i]),
            areas=[
                TaskArea(
                    area_id=a.area_id,
                    cls=a.cls,
                    cells=list(a.cells),
                    bbox=a.bbox,
                    score=a.score,
                    orig_bbox=mapping.to_original(a.bbox) if ingested else None,
                )
                for a in areas
            ],
            orig_size=(mapping.orig_width, mapping.orig_height) if ingested else None,
            source_uri=str(row["source_uri"]),
        )


def main() -> None:
    """Command-line entry: the same as `mentoring mine` with these arguments."""
    import sys

    from mentoring.cli import app

    app(["mine", *sys.argv[1:]])


if __name__ == "__main__":
    main()
