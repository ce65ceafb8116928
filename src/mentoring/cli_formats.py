"""``mentoring import ...`` and ``mentoring export ...``: MVTec AD, VisA and COCO in, COCO out.

The commands only parse options and print; the work is in :mod:`mentoring.formats`. Like
``cli_kfp``, this adapter shares ``mentoring.cli``'s console, progress bar and error handler.

Example:
    mentoring import mvtec ~/mvtec_ad --category bottle --out data/ingest --domain original
    mentoring import mvtec ~/mvtec_ad --category metal_nut --out data/ingest --domain new
    mentoring import coco ann.json --images imgs/ --out data/ingest --domain new --split pool
    mentoring export coco --manifest data/manifests/line.parquet --tasks data/mining/tasks.json \\
        --feedback data/feedback/op1.json --out results/coco/gt.json
"""

import json
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from mentoring.cli import _bar, _friendly, _md, console, out
from mentoring.io import write_json

import_app = typer.Typer(
    help=_md(
        "Import MVTec AD, VisA or COCO data into the folder layout `line.source: folder` "
        "ingests (<out>/<domain>/<split>/images|masks/, classes.json)."
    ),
    rich_markup_mode="markdown",
    no_args_is_help=True,
)
export_app = typer.Typer(
    help="Export the line's ground truth, mined detections and operator verdicts.",
    rich_markup_mode="markdown",
    no_args_is_help=True,
)


class Domain(StrEnum):
    original = "original"
    new = "new"


class Split(StrEnum):
    train = "train"
    eval = "eval"
    pool = "pool"


class Layout(StrEnum):
    auto = "auto"
    mvtec = "mvtec"
    visa = "visa"


def _run_with_bar(description: str, work: Callable[[Callable[[int, int], None]], Any]) -> Any:
    with _bar(description) as bar:
        task = bar.add_task(description, total=None)
        return work(lambda done, total: bar.update(task, completed=done, total=total))


OutOpt = Annotated[
    Path,
    typer.Option(
        "--out",
        "-o",
        help="Ingest folder to write (later: -S line.ingest_dir=OUT).",
        show_default=False,
    ),
]
DomainOpt = Annotated[
    Domain,
    typer.Option(
        help="original: splits train + eval (the baseline's data); new: pool + eval (the "
        "drifted line).",
        show_default=False,
    ),
]
OverwriteOpt = Annotated[
    bool,
    typer.Option(help="Replace the files of an earlier import of the same data (else an error)."),
]
ReportOpt = Annotated[
    Path | None,
    typer.Option(help="Also write what was imported and skipped as JSON to this file."),
]


def _import_summary(result: Any, report: Path | None) -> None:
    """The table of what each split received, what was skipped, and the classes override."""
    classes = sorted({c for s in result.splits.values() for c in s.classes})
    table = Table("split", "images", "defect-free", *classes, title=f"imported into {result.out}")
    for split, count in result.splits.items():
        table.add_row(
            f"{result.domain}/{split}",
            str(count.images),
            str(count.healthy),
            *(str(count.classes.get(c, 0)) for c in classes),
        )
    out.print(table)
    for w in result.warnings[:20]:
        console.print(f"[yellow]warning:[/] {escape(w)}", highlight=False)
    for s in result.skipped[:20]:
        console.print(f"[yellow]skipped:[/] {escape(s.file)}: {escape(s.reason)}", highlight=False)
    if len(result.skipped) > 20:
        console.print(f"[yellow]... {len(result.skipped) - 20} more skipped[/]")
    if result.skipped:
        console.print(f"[yellow]{len(result.skipped)} file(s) skipped[/] (not imported)")
    if report is not None:
        write_json(report, result.as_dict())
        out.print(f"report: {report}")
    added = f" (added {', '.join(result.new_classes)})" if result.new_classes else ""
    out.print(f"classes.json: {result.classes}{added}")
    override = result.classes_override()
    out.print(f"use: {escape(override)}", highlight=False, soft_wrap=True)
    out.print(
        escape(
            "ingest, once both domains are imported: "
            f"mentoring line ingest {result.out} {override} -S line.resize=tile"
        ),
        highlight=False,
        soft_wrap=True,
    )


@import_app.command("mvtec")
@_friendly
def import_mvtec_cmd(
    root: Annotated[
        Path,
        typer.Argument(
            help=_md(
                "MVTec AD root (holding <category>/train/good, test/<defect>, ground_truth/) "
                "or VisA root (holding split_csv/1cls.csv)."
            ),
            show_default=False,
        ),
    ],
    category: Annotated[
        str,
        typer.Option(
            "--category",
            "-c",
            help="Category (MVTec) or object (VisA), e.g. bottle, candle.",
            show_default=False,
        ),
    ],
    out_dir: OutOpt,
    domain: DomainOpt,
    train_share: Annotated[
        float,
        typer.Option(
            help="Share of each test group (each defect type, and test/good) that goes to the "
            "first split (train or pool) with all defect-free training images; the rest is eval."
        ),
    ] = 0.5,
    seed: Annotated[int, typer.Option(help="Seed of the split draw.")] = 0,
    layout: Annotated[
        Layout, typer.Option(help=_md("auto: MVTec AD when <root>/<category>/ exists, else VisA."))
    ] = Layout.auto,
    visa_class: Annotated[
        str, typer.Option(help="VisA: the class of every anomaly (VisA has no defect types).")
    ] = "defect",
    overwrite: OverwriteOpt = False,
    report: ReportOpt = None,
) -> None:
    """Import an **MVTec AD** category (or a **VisA** object) as the original or the new domain.

    Defect folder names become classes (merged into classes.json of --out); masks become
    class-index PNGs at the images' resolution; a test image without its mask is skipped and
    listed.
    """
    from mentoring.formats.mvtec import detect_layout, import_mvtec, import_visa

    kind = detect_layout(root, category) if layout is Layout.auto else layout.value
    if kind == "visa":
        result = _run_with_bar(
            f"importing VisA {category}",
            lambda p: import_visa(
                root, category, out_dir, domain.value, visa_class, train_share, seed, overwrite, p
            ),
        )
    else:
        result = _run_with_bar(
            f"importing MVTec AD {category}",
            lambda p: import_mvtec(
                root, category, out_dir, domain.value, train_share, seed, overwrite, p
            ),
        )
    _import_summary(result, report)


@import_app.command("coco")
@_friendly
def import_coco_cmd(
    annotations: Annotated[
        Path,
        typer.Argument(help="COCO instance-segmentation JSON.", show_default=False),
    ],
    images: Annotated[
        Path,
        typer.Option(help="Folder the images' file_name are relative to.", show_default=False),
    ],
    out_dir: OutOpt,
    domain: DomainOpt,
    split: Annotated[
        Split,
        typer.Option(help="train or eval (original), pool or eval (new).", show_default=False),
    ],
    overwrite: OverwriteOpt = False,
    report: ReportOpt = None,
) -> None:
    """Import a **COCO** instance-segmentation data set into one split.

    Polygons, RLE and bbox-only annotations become class-index masks (the later annotation
    wins where instances overlap); category names become classes; an image without
    annotations is defect-free.
    """
    from mentoring.formats.coco import import_coco

    result = _run_with_bar(
        f"importing {annotations.name}",
        lambda p: import_coco(
            annotations, images, out_dir, domain.value, split.value, overwrite, p
        ),
    )
    _import_summary(result, report)


def _line_classes(params: Path, sets: list[str] | None) -> list[str]:
    """line.classes of params.yaml with -S overrides (read as an ingested line's)."""
    from mentoring.config import load_params, parse_overrides

    overrides = parse_overrides(sets, example="line.classes=[a,b]")
    overrides.setdefault("line.source", "folder")  # any class names, as for an ingested line
    return list(load_params(params, overrides).line.classes)


@export_app.command("coco")
@_friendly
def export_coco_cmd(
    out_path: Annotated[
        Path,
        typer.Option(
            "--out", "-o", help="COCO data set (ground truth) to write.", show_default=False
        ),
    ],
    manifest: Annotated[Path, typer.Option(help="The line's manifest.")] = Path(
        "data/manifests/line.parquet"
    ),
    tasks: Annotated[
        Path | None,
        typer.Option(help="Mining tasks.json: also write its detections as a COCO results list."),
    ] = None,
    feedback: Annotated[
        list[Path] | None,
        typer.Option(
            help="Operator feedback file (repeat): verdicts in the detections' attributes."
        ),
    ] = None,
    detections_out: Annotated[
        Path | None,
        typer.Option(help=_md("Where the detections go [default: <out stem>.detections.json].")),
    ] = None,
    classes: Annotated[
        Path | None,
        typer.Option(help="classes.json naming the mask values [default: line.classes]."),
    ] = None,
    domain: Annotated[Domain | None, typer.Option(help="Only this domain's rows.")] = None,
    split: Annotated[Split | None, typer.Option(help="Only this split's rows.")] = None,
    params: Annotated[Path, typer.Option("--params", "-p", help="Parameters file.")] = Path(
        "params.yaml"
    ),
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", "-S", help="Override a parameter, e.g. -S 'line.classes=[a,b]'."),
    ] = None,
) -> None:
    """Export ground truth (**COCO** data set) and detections + verdicts (results list).

    Boxes, masks and sizes are in the original images' pixels (through each row's mapping);
    the mentoring image ids are kept in each image's `mentoring_image_ids`.
    """
    from mentoring.formats.coco import export_coco
    from mentoring.formats.mvtec import load_class_list

    names = load_class_list(classes) if classes is not None else _line_classes(params, set_)
    result = _run_with_bar(
        f"exporting {manifest.name}",
        lambda p: export_coco(
            manifest,
            names,
            out_path,
            tasks=tasks,
            feedback=feedback or [],
            detections_out=detections_out,
            domain=domain.value if domain else None,
            split=split.value if split else None,
            progress=p,
        ),
    )
    table = Table("category", "ground-truth instances", "detections", title="COCO export")
    for name in names:
        table.add_row(name, str(result.annotations[name]), str(result.detections[name]))
    out.print(table)
    for w in result.warnings:
        console.print(f"[yellow]warning:[/] {escape(w)}", highlight=False)
    out.print(f"{result.n_images} image(s), ground truth: {result.out}")
    if result.detections_out is not None:
        verdicts = json.dumps(dict(sorted(result.verdicts.items()))) if feedback else "no feedback"
        out.print(f"detections: {result.detections_out} (verdicts: {verdicts})", highlight=False)
