"""Stage ``mentor``: operator feedback on the mined areas, imported into partial labels.

With ``mentor.source: simulate`` the simulated operator answers the tasks from the hidden ground
truth and its file joins the feedback folder; with ``import`` only the files already there (from
the web interface or another plant system) are used. Every ``*.json`` of the feedback folder is
imported (idempotently) into ``partial_labels.npz``, after the feedback suite
(:func:`mentoring.validation.validate_feedback`) has checked their content against the tasks and
the manifest; its full results go to ``<results>/validation.json``, pass or fail. The boxes
operators drew around missed defects confirm the cells they cover by ``line.cell_min_coverage``;
the simulated operator draws a share ``mentor.draw_missed_rate`` of them (``n_drawn`` in the
metrics counts every drawn box imported).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mentoring.config import Params
from mentoring.data.dataset import load_targets, read_mask, rows_by_id
from mentoring.data.manifest import data_root, read_manifest
from mentoring.feedback.partial import build_partial_labels, load_feedback_files
from mentoring.feedback.schema import FeedbackError, dump, read_tasks
from mentoring.feedback.simulate import simulate_operator
from mentoring.io import sha256_file, write_bytes, write_json
from mentoring.validation import validate_feedback


def run(
    params: Params,
    manifest: Path,
    tasks_path: Path,
    feedback_dir: Path,
    labels_out: Path,
    results_dir: Path,
    simulated_out: Path | None = None,
) -> dict[str, Any]:
    """Simulate (optionally), validate and import feedback; return the import report and counts.

    The simulated operator's file goes to ``simulated_out`` (default: ``simulated.json`` beside
    ``labels_out``), apart from the operators' folder, so that folder stays an input; with
    ``mentor.source: import`` that file records ``{"simulated": false, ...}`` instead (it is the
    DVC stage's declared output either way).

    Raises:
        FeedbackError: no mined image, no feedback file, or a file that is not valid feedback.
        ValidationError: feedback naming unknown images or areas, or with unknown values.
    """
    cfg = params.mentor
    tasks = read_tasks(tasks_path)
    if not tasks.images:
        raise FeedbackError(
            f"{tasks_path}: mining selected no image, nothing to mentor "
            f"(heuristic {tasks.heuristic}, threshold {tasks.threshold})"
        )
    tasks_sha = sha256_file(tasks_path)
    # the simulated operator reads the images; validating the feedback only needs the ids
    images = read_manifest(manifest, check_files=cfg.source == "simulate")
    if cfg.source == "simulate":
        df = rows_by_id(images, [t.image_id for t in tasks.images], str(manifest))
        truth = {}
        if len(df):
            # the truth of the mined images from their masks (the images are not decoded)
            targets = load_targets(
                df,
                data_root(manifest),
                tuple(tasks.classes),
                tasks.stride,
                params.line.cell_min_coverage,
            )
            truth = dict(zip(df["image_id"].astype(str), targets.numpy(), strict=True))
        masks = None
        if cfg.draw_missed_rate > 0 and len(df):  # drawing boxes needs the pixel masks
            hw = (int(df.iloc[0]["height"]), int(df.iloc[0]["width"]))
            masks = {
                str(i): read_mask(data_root(manifest) / str(m), hw)
                for i, m in zip(df["image_id"], df["mask_path"], strict=True)
            }
        fb = simulate_operator(
            tasks,
            truth,
            min_overlap=cfg.min_overlap,
            error_rate=cfg.error_rate,
            healthy_flag_rate=cfg.healthy_flag_rate,
            correct_classes=cfg.correct_classes,
            seed=params.base.seed,
            tasks_sha256=tasks_sha,
            draw_missed_rate=cfg.draw_missed_rate,
            masks=masks,
        )
        simulated_out = simulated_out or labels_out.parent / "simulated.json"
        write_bytes(simulated_out, dump(fb).encode())
    else:
        # the stage's declared output (dvc.yaml) says that no operator was simulated; it is
        # not feedback and is never imported
        write_json(
            simulated_out or labels_out.parent / "simulated.json",
            {
                "simulated": False,
                "source": cfg.source,
                "reason": f"mentor.source is {cfg.source!r}: only {feedback_dir}/*.json is "
                "imported",
            },
        )
    files = sorted(feedback_dir.glob("*.json")) if feedback_dir.exists() else []
    if cfg.source == "simulate" and simulated_out is not None:
        files = sorted({f.resolve(): f for f in [*files, simulated_out]}.values())
    if not files:
        raise FeedbackError(f"{feedback_dir}: no feedback files (*.json) to import")
    loaded = load_feedback_files(files)
    validate_feedback(
        params, tasks, loaded, images["image_id"].dropna(), results_dir / "validation.json"
    )
    stale = [p.name for p, fb in loaded if fb.tasks_sha256 not in (None, tasks_sha)]
    labels, report = build_partial_labels(tasks, loaded, params.line.cell_min_coverage)
    labels.save(labels_out)
    metrics = {
        **report.as_dict(),
        "files": [p.name for p in files],
        "stale_files": stale,
        "n_tasks": len(tasks.images),
        "annotated_fraction": float(labels.annotated.mean()) if labels.ids else 0.0,
    }
    write_json(results_dir / "metrics.json", metrics)
    return metrics


def main() -> None:
    """Command-line entry: the same as `mentoring mentor run` with these arguments."""
    import sys

    from mentoring.cli import app

    app(["mentor", "run", *sys.argv[1:]])


if __name__ == "__main__":
    main()
