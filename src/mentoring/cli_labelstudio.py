"""``mentoring annotate export-labelstudio`` and ``mentoring mentor import-labelstudio``.

The Label Studio round trip (docs/labelstudio.md): mining tasks out as pre-annotated Label Studio
tasks, a Label Studio JSON export back in as a feedback file that ``mentoring mentor`` imports.
The commands are registered in :mod:`mentoring.cli`, which wraps them in its error handling.

Example:
    mentoring annotate export-labelstudio --out labelstudio/round-7
    mentoring mentor import-labelstudio project-3.json --export-dir labelstudio/round-7
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from mentoring import pipeline_spec as spec
from mentoring.data.manifest import data_root, read_manifest
from mentoring.feedback.rounds import round_of_labelstudio
from mentoring.feedback.schema import read_tasks
from mentoring.formats.labelstudio import (
    MAPPING_FILE,
    LabelStudioError,
    SourceReader,
    export_tasks,
    import_annotations,
    read_export,
    read_mapping,
    write_export,
    write_feedback,
)
from mentoring.io import sha256_file
from mentoring.storage import is_s3

# one line per message, unwrapped: the summaries are read by people and by scripts
console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)


def export_labelstudio(
    out_dir: Annotated[
        Path,
        typer.Option(
            "--out", help="Folder to write tasks.json, config.xml and mapping.json to (keep it)."
        ),
    ],
    tasks: Annotated[Path, typer.Option(help="Mining tasks.")] = spec.default("mentor", "tasks"),
    manifest: Annotated[Path, typer.Option(help="Manifest of the line.")] = spec.default(
        "mentor", "manifest"
    ),
    s3_prefix: Annotated[
        str,
        typer.Option(
            help="Also upload to this s3://bucket/prefix: the tasks under tasks/ (the prefix of "
            "a Label Studio S3 import storage), config.xml and mapping.json beside it."
        ),
    ] = "",
    endpoint_url: Annotated[
        str | None,
        typer.Option(
            help="S3 endpoint (MinIO, Ceph...) for --s3-prefix and s3:// originals [default: "
            "boto3's AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL, else AWS]."
        ),
    ] = None,
) -> None:
    """Export the mining tasks as Label Studio tasks with the model's areas as predictions."""
    mining = read_tasks(tasks)
    images = read_manifest(manifest, check_files=False)
    export = export_tasks(
        mining,
        images,
        data_root(manifest),
        tasks_sha256=sha256_file(tasks),
        read_source=SourceReader(endpoint_url),
    )
    written = write_export(export, out_dir, s3_prefix, endpoint_url)
    for note in export.notes:
        console.print(f"[yellow]note:[/] {escape(note)}")
    n_orig = sum(im.shown == "original" for im in export.mapping.images.values())
    n_areas = sum(len(im.regions) for im in export.mapping.images.values())
    out.print(
        f"{len(export.tasks)} Label Studio tasks ({n_orig} showing the original image, "
        f"{len(export.tasks) - n_orig} the stored one), {n_areas} predicted regions "
        f"(model {escape(export.mapping.model_version)})"
    )
    for path in written:
        out.print(f"  {escape(path)}")


def import_labelstudio(
    export: Annotated[
        Path, typer.Argument(help="A Label Studio JSON export of the project (exportType=JSON).")
    ],
    export_dir: Annotated[
        str,
        typer.Option(
            help=f"The folder export-labelstudio wrote (its {MAPPING_FILE} is read), or a mining "
            "round's s3://.../<sha256[:12]>/labelstudio, as the mining pipeline publishes it."
        ),
    ],
    out_path: Annotated[
        str | None,
        typer.Option(
            "--out",
            help="Feedback file to write, a path or s3:// URI [default: for a round, its "
            "feedback/labelstudio-<EXPORT's name>.json; else "
            "data/feedback/labelstudio-<EXPORT's name>.json].",
        ),
    ] = None,
    endpoint_url: Annotated[
        str | None,
        typer.Option(
            help="S3 endpoint for s3:// locations [default: boto3's AWS_ENDPOINT_URL_S3 / "
            "AWS_ENDPOINT_URL, else AWS]."
        ),
    ] = None,
) -> None:
    """Turn a Label Studio export's latest annotations into a feedback file for `mentor` (for a
    mining round: into the round's feedback/, which retraining's mining_round imports)."""
    mapping_at = (
        f"{export_dir.rstrip('/')}/{MAPPING_FILE}"
        if is_s3(export_dir)
        else str(Path(export_dir) / MAPPING_FILE)
    )
    mapping = read_mapping(mapping_at, endpoint_url)
    feedback, summary = import_annotations(read_export(export), mapping, export.name)
    name = f"labelstudio-{export.stem}.json"
    rnd = round_of_labelstudio(export_dir, endpoint_url)
    if out_path is None:
        default = spec.default("mentor", "feedback") / name
        out_path = rnd.feedback_location(name) if rnd else str(default)
    if rnd is not None and feedback.tasks_sha256 and feedback.tasks_sha256[:12] != rnd.name:
        raise LabelStudioError(
            f"{mapping_at}: maps task set {feedback.tasks_sha256[:12]}, not round {rnd.name}"
        )
    out_path = write_feedback(feedback, out_path, endpoint_url)
    for line in summary.reported:
        console.print(f"[yellow]not imported:[/] {escape(line)}")
    if summary.n_without_prediction:
        console.print(
            f"[yellow]note:[/] {summary.n_without_prediction} annotation(s) were made without the "
            f"predictions: their detected areas stay unanswered"
        )
    out.print(
        f"{summary.n_items} images from {summary.n_tasks} tasks: {summary.n_confirmed} areas "
        f"confirmed ({summary.n_corrected} with a corrected class), {summary.n_rejected} "
        f"rejected, {summary.n_drawn} drawn, {summary.n_healthy_images} images flagged healthy; "
        f"{summary.n_unannotated} tasks without annotation, {summary.n_skipped} skipped, "
        f"{summary.n_not_in_export} exported images not in this export -> {escape(out_path)}"
    )
