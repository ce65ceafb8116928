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
    strategy: Annotated[
        str,
        typer.Option(
            help="'baseline' (original domain only), or a strategy: scratch, transfer, "
            "omnia, healthy, dann, oracle, combined with '+' (e.g. transfer+omnia)."
        ),
    ] = "baseline",
    manifest: ManifestOpt = Path("data/manifests/line.parquet"),
    model: Annotated[
        Path | None, typer.Option(help="Model file to write [default: models/<strategy>.pt].")
    ] = None,
    results: Annotated[
        Path | None,
        typer.Option(
            help="Metrics and plots folder [default: "
            "results/train_baseline or results/train/<strategy>]."
        ),
    ] = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            help="Per-epoch checkpoint, the resume source "
            "[default: models/checkpoints/<strategy>.pt]."
        ),
    ] = None,
    labels: Annotated[Path, typer.Option(help="Partial labels from `mentoring mentor`.")] = Path(
        "data/feedback/partial_labels.npz"
    ),
    baseline: Annotated[Path, typer.Option(help="Baseline model (transfer, omnia).")] = Path(
        "models/baseline.pt"
    ),
    resume: Annotated[bool, typer.Option(help="Resume from a matching checkpoint.")] = True,
) -> None:
    """Train the baseline on the original domain, or a new model with a mentoring strategy."""
    p = _params(params, set_)
    model = model or Path(f"models/{strategy}.pt")
    checkpoint = checkpoint or Path(f"models/checkpoints/{strategy}.pt")
    if not resume and checkpoint.exists():
        checkpoint.unlink()
    show = sys.stderr.isatty()
    if strategy == "baseline":
        from mentoring.stages import train_baseline

        m = train_baseline.run(
            p,
            manifest,
            model,
            results or Path("results/train_baseline"),
            checkpoint,
            show_progress=show,
        )
    else:
        from mentoring.stages import train

        m = train.run(
            p,
            strategy,
            manifest,
            labels,
            baseline,
            model,
            results or Path(f"results/train/{strategy}"),
            checkpoint,
            show_progress=show,
        )
    out.print(
        f"{strategy}: {m['epochs']} epochs, final loss {m['final_loss']:.4f}, "
        f"{m['images_per_s']:.0f} images/s -> {model}"
    )


@app.command("mine")
@_friendly
def mine_cmd(
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
    manifest: ManifestOpt = Path("data/manifests/line.parquet"),
    model: Annotated[Path, typer.Option(help="The deployed model that mines.")] = Path(
        "models/baseline.pt"
    ),
    tasks: Annotated[Path, typer.Option(help="Mining tasks to write.")] = Path(
        "data/mining/tasks.json"
    ),
    results: Annotated[Path, typer.Option(help="Metrics folder.")] = Path("results/mine"),
) -> None:
    """Pick the new-domain images with detected areas (or another heuristic) for operators."""
    from mentoring.stages import mine

    p = _params(params, set_)
    m = mine.run(p, manifest, model, tasks, results)
    out.print(
        f"mined {m['n_mined']} of {m['n_pool']} images ({m['n_areas']} detected areas, "
        f"heuristic {m['heuristic']}) -> {tasks}"
    )


mentor_app = typer.Typer(
    help="Operator feedback on mined areas -> partial labels.", no_args_is_help=True
)
app.add_typer(mentor_app, name="mentor")

TasksOpt = Annotated[Path, typer.Option(help="Mining tasks.")]
FeedbackOpt = Annotated[Path, typer.Option(help="Folder of feedback files (*.json).")]
LabelsOpt = Annotated[Path, typer.Option(help="Partial labels to write.")]
ResultsOpt = Annotated[Path, typer.Option(help="Metrics folder.")]


def _mentor(
    p: Params, manifest: Path, tasks: Path, feedback: Path, labels: Path, results: Path
) -> None:
    from mentoring.stages import mentor

    m = mentor.run(p, manifest, tasks, feedback, labels, results)
    out.print(
        f"{m['n_images']} images: {m['n_confirmed']} areas confirmed "
        f"({m['n_corrected']} with a corrected class), {m['n_infirmed']} infirmed, "
        f"{m['n_healthy_images']} images flagged healthy, {m['n_duplicates']} duplicate "
        f"records ignored -> {labels}"
    )
    for c in m["conflicts"]:
        console.print(f"[yellow]conflict:[/] {escape(c)}")
    if m["stale_files"]:
        console.print(
            f"[yellow]warning:[/] feedback files answering other tasks: "
            f"{escape(str(m['stale_files']))}"
        )


def _mentor_command(source: str) -> Callable[..., None]:
    """The ``mentor simulate`` / ``mentor import`` commands: the same options, one source."""

    def command(
        params: ParamsOpt = Path("params.yaml"),
        set_: SetOpt = None,
        manifest: ManifestOpt = Path("data/manifests/line.parquet"),
        tasks: TasksOpt = Path("data/mining/tasks.json"),
        feedback: FeedbackOpt = Path("data/feedback"),
        labels: LabelsOpt = Path("data/feedback/partial_labels.npz"),
        results: ResultsOpt = Path("results/mentor"),
    ) -> None:
        p = _params(params, [*(set_ or []), f"mentor.source={source}"])
        _mentor(p, manifest, tasks, feedback, labels, results)

    return _friendly(command)


mentor_app.command(
    "simulate",
    help="A simulated operator answers the tasks from the ground truth; then import everything.",
)(_mentor_command("simulate"))
mentor_app.command(
    "import", help="Import the feedback files of the folder (idempotent) into partial labels."
)(_mentor_command("import"))


@app.command("evaluate")
@_friendly
def evaluate_cmd(
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
    manifest: ManifestOpt = Path("data/manifests/line.parquet"),
    model: Annotated[Path, typer.Option(help="Model file to evaluate.")] = Path(
        "models/baseline.pt"
    ),
    results: Annotated[
        Path | None,
        typer.Option(
            help="Metrics and plots folder [default: results/evaluate_baseline for the "
            "baseline, results/evaluate/<name> otherwise]."
        ),
    ] = None,
    name: Annotated[str, typer.Option(help="Name shown in plots and metrics.")] = "baseline",
) -> None:
    """Evaluate a model on each domain: mAP, precision/recall @ threshold, image-level rates."""
    from mentoring.stages import evaluate

    p = _params(params, set_)
    results = results or Path(
        "results/evaluate_baseline" if name == "baseline" else f"results/evaluate/{name}"
    )
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


experiment_app = typer.Typer(help="Experiments (the paper's Table 1).", no_args_is_help=True)
app.add_typer(experiment_app, name="experiment")


@experiment_app.command("table1")
@_friendly
def table1_cmd(
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
    seeds: Annotated[
        int, typer.Option(help="Number of seeds (base.seed, base.seed + 1, ...).")
    ] = 1,
    data: Annotated[
        Path, typer.Option(help="Data root (the line is generated if missing).")
    ] = Path("data"),
    workdir: Annotated[Path, typer.Option(help="Models and per-variant results.")] = Path(
        "results/table1/work"
    ),
    out_dir: Annotated[Path, typer.Option("--out", help="table1.json, table1.md, plots.")] = Path(
        "results/table1"
    ),
) -> None:
    """Reproduce the paper's Table 1: baseline, w/ new data, each fix, combinations, oracle."""
    from mentoring.experiments.table1 import plot_tsne, report, run_seed, seed_dir
    from mentoring.stages import line

    p = _params(params, set_)
    manifest = data / "manifests" / "line.parquet"
    if not manifest.exists():
        line.run(p, data, Path("results/line"))
    per_seed = {}
    for k in range(seeds):
        ps = p.model_copy(update={"base": p.base.model_copy(update={"seed": p.base.seed + k})})
        res = run_seed(
            ps,
            manifest,
            workdir,
            log=lambda msg: console.print(escape(msg)),
            show_progress=sys.stderr.isatty(),
        )
        per_seed[ps.base.seed] = res["evaluations"]
    first = seed_dir(workdir, p.base.seed) / "models"
    tsne_models = {
        v: first / f"{v}.pt" for v in ("scratch", "scratch+dann") if (first / f"{v}.pt").exists()
    }
    sep = (
        plot_tsne(tsne_models, p, manifest, out_dir / "plots" / "tsne.png", seed=p.base.seed)
        if tsne_models
        else None
    )
    report(per_seed, out_dir, sep)
    typer.echo((out_dir / "table1.md").read_text())  # plain: a wrapped table is unreadable
    out.print(f"written: {out_dir / 'table1.json'}, {out_dir / 'table1.md'}, {out_dir / 'plots'}/")


if __name__ == "__main__":  # pragma: no cover
    app()
