"""Stage ``mine``: the deployed model picks the new-domain images operators should see.

Reads ``base``, ``line.classes``, ``model.stride`` and ``mine``; reads the pool images (not their
masks) and the model; writes ``tasks.json`` (schema: :mod:`mentoring.feedback.schema`) and
``<results>/metrics.json``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from mentoring.config import Params
from mentoring.data.images import Mapping
from mentoring.data.manifest import data_root, read_manifest, select
from mentoring.evaluation import stream_predictions
from mentoring.feedback.schema import MiningTasks, TaskArea, TaskImage, dump
from mentoring.io import write_bytes, write_json
from mentoring.mining import Area, extract_areas, make_heuristic, rank
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
    processes), so memory does not grow with its size beyond one score per image and the areas
    of the images of interest.
    """
    device = setup_torch(params.base)
    cfg = params.mine
    model, classes, ref = open_model(params, model_path, device, model_name)
    df = select(read_manifest(manifest, check_files=False), domain, split)
    if df.empty:
        raise ValueError(f"{manifest}: no images of domain {domain!r}, split {split!r} to mine")
    heuristic = make_heuristic(cfg.heuristic, cfg.threshold, cfg.margin)
    ids, paths = list(df["image_id"]), list(df["path"])
    # stream the pool: per batch, keep each image's score and the areas of the images of
    # interest (score > 0), never the images nor the probabilities of the whole pool
    scores = np.zeros(len(ids), np.float64)
    areas_of: dict[int, list[Area]] = {}
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
    with progress_bar(show_progress, "mine", len(ids)) as advance:
        for start, probs in batches:
            s = heuristic.score(probs)  # once: for the ranking and the tasks' scores
            scores[start : start + len(s)] = s
            for j in np.flatnonzero(s > 0):
                i = start + int(j)
                areas_of[i] = extract_areas(
                    probs[j], classes, cfg.threshold, params.model.stride, ids[i]
                )
            advance(len(s))
    grid = (int(probs.shape[2]), int(probs.shape[3]))
    picked = rank(scores, cfg.budget, params.base.seed, ids)
    rows = df.reset_index(drop=True)
    task_images = []
    for i in picked:
        areas = areas_of[int(i)]
        row = rows.iloc[i]
        mapping = Mapping.from_json(str(row["mapping"]), int(row["width"]), int(row["height"]))
        ingested = bool(row["mapping"])
        task_images.append(
            TaskImage(
                image_id=ids[i],
                path=paths[i],
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
        )
    tasks = MiningTasks(
        model=ref,
        heuristic=cfg.heuristic,
        threshold=cfg.threshold,
        stride=params.model.stride,
        grid=grid,
        classes=list(classes),
        created_at=datetime.now(UTC).replace(microsecond=0),
        images=task_images,
    )
    write_bytes(tasks_out, dump(tasks).encode())
    n_areas = sum(len(t.areas) for t in task_images)
    per_class = {c: sum(a.cls == c for t in task_images for a in t.areas) for c in classes}
    metrics = {
        "n_pool": len(ids),
        "n_mined": len(task_images),
        "n_areas": n_areas,
        "mined_fraction": len(task_images) / len(ids),
        "areas_per_class": per_class,
        "heuristic": cfg.heuristic,
    }
    write_json(results_dir / "metrics.json", metrics)
    return metrics


def main() -> None:
    """Command-line entry: the same as `mentoring mine` with these arguments."""
    import sys

    from mentoring.cli import app

    app(["mine", *sys.argv[1:]])


if __name__ == "__main__":
    main()
