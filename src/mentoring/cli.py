"""The ``mentoring`` command line. Every pipeline stage is also a subcommand.

Example:
    mentoring line generate                 # render the line of params.yaml's profile
    mentoring train                         # train the baseline on the original domain
    mentoring evaluate                      # per-domain metrics and plots
    mentoring train --set train_baseline.epochs=2 --set base.profile=tiny
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from mentoring.config import ConfigError, Params, load_params
from mentoring.data.dataset import ImageError
from mentoring.data.manifest import ManifestError

EXAMPLES = """Examples:

`mentoring line generate` renders the line of params.yaml's profile

`mentoring train` trains the baseline on the original domain (resumes after a kill)

`mentoring evaluate` writes per-domain metrics and plots

`mentoring train -S base.profile=tiny -S train_baseline.epochs=2` overrides parameters
"""

app = typer.Typer(
    help="Keep a deployed defect-segmentation model accurate while a production line drifts. "
    "Every pipeline stage is a subcommand; parameters come from params.yaml.",
    epilog=EXAMPLES,
    rich_markup_mode="markdown",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
line_app = typer.Typer(help="The synthetic production line.", no_args_is_help=True)
app.add_typer(line_app, name="line")
console = Console(stderr=True)
out = Console()

F = TypeVar("F", bound=Callable[..., Any])

ParamsOpt = Annotated[Path, typer.Option("--params", "-p", help="Parameters file.")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-S", help="Override a parameter, e.g. -S base.profile=tiny (repeat)."),
]
ManifestOpt = Annotated[Path, typer.Option(help="Line manifest (parquet).")]


def _friendly(fn: F) -> F:
    """Turn the project's input errors into one red line and exit code 2 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (
            ConfigError,
            ManifestError,
            ImageError,
            FileNotFoundError,
            ValueError,
            RuntimeError,
        ) as exc:
            console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def _params(path: Path, sets: list[str] | None) -> Params:
    overrides: dict[str, Any] = {}
    for item in sets or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. base.profile=tiny")
        overrides[key.strip()] = yaml.safe_load(value)
    return load_params(path, overrides)


def _bar(description: str) -> Progress:
    return Progress(
        TextColumn(f"[bold]{description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not sys.stderr.isatty(),
    )


def _version(value: bool) -> None:
    if value:
        from mentoring import __version__

        out.print(f"mentoring {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool | None,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = None,
) -> None:
    """Keep a deployed defect-segmentation model accurate while a production line drifts."""


@line_app.command("generate")
@_friendly
def line_generate(
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
    data: Annotated[Path, typer.Option(help="Data root to write line/ and manifests/ in.")] = Path(
        "data"
    ),
    results: Annotated[Path, typer.Option(help="Where metrics.json and the preview go.")] = Path(
        "results/line"
    ),
) -> None:
    """Render the synthetic line (both domains, every split) of the active profile."""
    from mentoring.stages import line

    p = _params(params, set_)
    with _bar(f"rendering the '{p.base.profile}' line") as bar:
        task = bar.add_task("render", total=None)
        m = line.run(p, data, results, progress=lambda d, t: bar.update(task, completed=d, total=t))
    table = Table("domain/split", "images", "defect rate", "nuisances/image", title="line")
    for key, v in m["splits"].items():
        table.add_row(
            key, str(v["n_images"]), f"{v['defect_rate']:.2f}", f"{v['nuisances_per_image']:.2f}"
        )
    out.print(table)
    out.print(
        f"manifest: {data / 'manifests' / 'line.parquet'}  "
        f"preview: {results / 'plots' / 'preview.png'}"
    )


@line_app.command("preview")
@_friendly
def line_preview(
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
    manifest: ManifestOpt = Path("data/manifests/line.parquet"),
    out_path: Annotated[Path, typer.Option("--out", help="PNG to write.")] = Path(
        "results/line/plots/preview.png"
    ),
    per_domain: Annotated[int, typer.Option(help="Images per domain.")] = 12,
) -> None:
    """Write a contact sheet of both domains with defects outlined per class."""
    from mentoring.line.preview import contact_sheet

    p = _params(params, set_)
    path = contact_sheet(manifest, out_path, p.line.classes, per_domain, p.base.seed)
    out.print(f"contact sheet: {path}")


@app.command("train")
@_friendly
def train_cmd(
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
    manifest: ManifestOpt = Path("data/manifests/line.parquet"),
    model: Annotated[Path, typer.Option(help="Model file to write.")] = Path("models/baseline.pt"),
    results: Annotated[Path, typer.Option(help="Metrics and plots folder.")] = Path(
        "results/train_baseline"
    ),
    checkpoint: Annotated[Path, typer.Option(help="Per-epoch checkpoint (resume source).")] = Path(
        "models/checkpoints/baseline.pt"
    ),
    resume: Annotated[bool, typer.Option(help="Resume from a matching checkpoint.")] = True,
) -> None:
    """Train the baseline segmenter on the original domain (resumes after a kill)."""
    from mentoring.stages import train_baseline

    p = _params(params, set_)
    if not resume and checkpoint.exists():
        checkpoint.unlink()
    m = train_baseline.run(
        p, manifest, model, results, checkpoint, show_progress=sys.stderr.isatty()
    )
    out.print(
        f"baseline: {m['epochs']} epochs, final loss {m['final_loss']:.4f}, "
        f"{m['images_per_s']:.0f} images/s -> {model}"
    )


@app.command("evaluate")
@_friendly
def evaluate_cmd(
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
    manifest: ManifestOpt = Path("data/manifests/line.parquet"),
    model: Annotated[Path, typer.Option(help="Model file to evaluate.")] = Path(
        "models/baseline.pt"
    ),
    results: Annotated[Path, typer.Option(help="Metrics and plots folder.")] = Path(
        "results/evaluate_baseline"
    ),
    name: Annotated[str, typer.Option(help="Name shown in plots and metrics.")] = "baseline",
) -> None:
    """Evaluate a model on each domain: mAP, precision/recall @ threshold, image-level rates."""
    from mentoring.stages import evaluate

    p = _params(params, set_)
    m = evaluate.run(p, manifest, model, results, name)
    table = Table(
        "domain",
        "mAP",
        "precision",
        "recall",
        "false-reject",
        "escape",
        title=f"{name} @ {p.evaluate.threshold}",
    )
    for domain, v in m["domains"].items():
        table.add_row(
            domain,
            f"{v['map']:.3f}",
            f"{v['precision']:.3f}",
            f"{v['recall']:.3f}",
            f"{v['false_reject_rate']:.3f}",
            f"{v['escape_rate']:.3f}",
        )
    out.print(table)
    out.print(f"metrics: {results / 'metrics.json'}  plots: {results / 'plots'}/")


if __name__ == "__main__":  # pragma: no cover
    app()
