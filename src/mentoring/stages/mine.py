"""Stage ``mine``: the deployed model picks the new-domain images operators should see.

Reads ``base``, ``line.classes``, ``model.stride`` and ``mine``; reads the pool images (not their
masks) and the model; writes ``tasks.json`` (schema: :mod:`mentoring.feedback.schema`) and
``<results>/metrics.json``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mentoring.config import Params
from mentoring.data.dataset import load_images
from mentoring.data.images import Mapping
from mentoring.data.manifest import data_root, read_manifest, select
from mentoring.evaluation import predict
from mentoring.feedback.schema import MiningTasks, TaskArea, TaskImage, dump
from mentoring.io import write_bytes, write_json
from mentoring.mining import extract_areas, make_heuristic, rank
from mentoring.registry import open_model
from mentoring.runtime import setup_torch


def run(
    params: Params,
    manifest: Path,
    model_path: Path | str,
    tasks_out: Path,
    results_dir: Path,
    domain: str = "new",
    split: str = "pool",
    model_name: str = "baseline",
) -> dict[str, Any]:
    """Score the pool with the model, pick the images of interest, write their detected areas."""
    device = setup_torch(params.base)
    cfg = params.mine
    model, classes, ref = open_model(params, model_path, device, model_name)
    df = select(read_manifest(manifest, check_files=False), domain, split)
    if df.empty:
        raise ValueError(f"{manifest}: no images of domain {domain!r}, split {split!r} to mine")
    images = load_images(df, data_root(manifest))
    probs = predict(model, images, cfg.batch_size, device)
    heuristic = make_heuristic(cfg.heuristic, cfg.threshold, cfg.margin)
    scores = heuristic.score(probs)  # once: for the ranking and the tasks' scores
    picked = rank(scores, cfg.budget, params.base.seed, list(df["image_id"]))
    ids, paths = list(df["image_id"]), list(df["path"])
    rows = df.reset_index(drop=True)
    task_images = []
    for i in picked:
        areas = extract_areas(probs[i], classes, cfg.threshold, params.model.stride, ids[i])
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
        grid=(probs.shape[2], probs.shape[3]),
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
