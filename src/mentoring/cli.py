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
TrackOpt = Annotated[
    bool,
    typer.Option(
        help="Log to MLflow (tracking.uri or MLFLOW_TRACKING_URI; checked before any work)."
    ),
]


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


DataOpt = Annotated[Path, typer.Option(help="Data root to write line/ and manifests/ in.")]
LineResultsOpt = Annotated[Path, typer.Option(help="Where metrics.json and the preview go.")]


def _line(p: Params, data: Path, results: Path) -> None:
    from mentoring.stages import line

    verb = "rendering" if p.line.source == "synthetic" else f"ingesting {p.line.ingest_dir}:"
    with _bar(f"{verb} the '{p.base.profile}' line") as bar:
        task = bar.add_task("line", total=None)
        m = line.run(p, data, results, progress=lambda d, t: bar.update(task, completed=d, total=t))
    table = Table("domain/split", "images", "defect rate", "nuisances/image", title="line")
    for key, v in m["splits"].items():
        table.add_row(
            key, str(v["n_images"]), f"{v['defect_rate']:.2f}", f"{v['nuisances_per_image']:.2f}"
        )
    out.print(table)
    for q in m["quarantined"][:20]:
        console.print(f"[yellow]quarantined:[/] {escape(q['file'])}: {escape(q['reason'])}")
    if m["n_quarantined"]:
        console.print(
            f"[yellow]{m['n_quarantined']} file(s) quarantined[/] -> "
            f"{data / 'quarantine'}/ (report.json lists them all)"
        )
    out.print(
        f"manifest: {data / 'manifests' / 'line.parquet'}  "
        f"preview: {results / 'plots' / 'preview.png'}"
    )


@line_app.command("run")
@_friendly
def line_run(
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
    data: DataOpt = Path("data"),
    results: LineResultsOpt = Path("results/line"),
) -> None:
    """What the pipeline runs: generate or ingest, as line.source says."""
    _line(_params(params, set_), data, results)


@line_app.command("generate")
@_friendly
def line_generate(
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
    data: DataOpt = Path("data"),
    results: LineResultsOpt = Path("results/line"),
) -> None:
    """Render the synthetic line (both domains, every split) of the active profile."""
    _line(_params(params, [*(set_ or []), "line.source=synthetic"]), data, results)


@line_app.command("ingest")
@_friendly
def line_ingest(
    folder: Annotated[
        Path | None,
        typer.Argument(help="<domain>/<split>/images|masks/ folder [default: line.ingest_dir]."),
    ] = None,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
    data: DataOpt = Path("data"),
    results: LineResultsOpt = Path("results/line"),
) -> None:
    """Ingest real images (and masks) instead of rendering; unusable files are quarantined."""
    sets = [*(set_ or []), "line.source=folder"]
    if folder is not None:
        sets.append(f"line.ingest_dir={folder}")
    _line(_params(params, sets), data, results)


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
        "data/mentor/partial_labels.npz"
    ),
    baseline: Annotated[Path, typer.Option(help="Baseline model (transfer, omnia).")] = Path(
        "models/baseline.pt"
    ),
    resume: Annotated[bool, typer.Option(help="Resume from a matching checkpoint.")] = True,
    track: TrackOpt = True,
) -> None:
    """Train the baseline on the original domain, or a new model with a mentoring strategy.

    With ``nproc`` > 1 (``train.nproc``, ``train_baseline.nproc`` for the baseline), runs itself
    as that many processes under torchrun (DistributedDataParallel, docs/distributed.md).
    """
    from mentoring.training import distributed

    p = _params(params, set_)
    model = model or Path(f"models/{strategy}.pt")
    checkpoint = checkpoint or Path(f"models/checkpoints/{strategy}.pt")
    results = results or Path(
        "results/train_baseline" if strategy == "baseline" else f"results/train/{strategy}"
    )
    cfg = p.train_baseline if strategy == "baseline" else p.train
    if cfg.nproc > 1 and not distributed.launched():
        distributed.check_launch(cfg.nproc, cfg.batch_size, p.base.device)
        args = [
            *("--params", str(params)),
            *(a for item in set_ or [] for a in ("--set", item)),
            *("--strategy", strategy, "--manifest", str(manifest), "--model", str(model)),
            *("--results", str(results), "--checkpoint", str(checkpoint)),
            *("--labels", str(labels), "--baseline", str(baseline)),
            "--resume" if resume else "--no-resume",
            "--track" if track else "--no-track",
        ]
        code = distributed.torchrun(cfg.nproc, "mentoring.stages.train", args)
        if code:
            sys.exit(code)  # not typer.Exit: _friendly would take it for an error
        return
    if not resume and distributed.is_main():  # one rank removes it; the others wait in train()
        checkpoint.unlink(missing_ok=True)
    show = sys.stderr.isatty()
    if strategy == "baseline":
        from mentoring.stages import train_baseline

        m = train_baseline.run(
            p,
            manifest,
            model,
            results,
            checkpoint,
            show_progress=show,
            track=track,
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
            results,
            checkpoint,
            show_progress=show,
            track=track,
        )
    if distributed.is_main():
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
    model: Annotated[
        Path,
        typer.Option(
            help="The deployed model that mines: a file, or a registry URI such as "
            "models:/defect-segmenter@champion."
        ),
    ] = Path("models/baseline.pt"),
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
    p: Params,
    manifest: Path,
    tasks: Path,
    feedback: Path,
    labels: Path,
    results: Path,
    simulated: Path,
) -> None:
    from mentoring.stages import mentor

    m = mentor.run(p, manifest, tasks, feedback, labels, results, simulated)
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


def _mentor_command(source: str | None) -> Callable[..., None]:
    """The ``mentor run|simulate|import`` commands: the same options; ``run`` reads the source
    from ``mentor.source``, the others force it."""

    def command(
        params: ParamsOpt = Path("params.yaml"),
        set_: SetOpt = None,
        manifest: ManifestOpt = Path("data/manifests/line.parquet"),
        tasks: TasksOpt = Path("data/mining/tasks.json"),
        feedback: FeedbackOpt = Path("data/feedback"),
        labels: LabelsOpt = Path("data/mentor/partial_labels.npz"),
        results: ResultsOpt = Path("results/mentor"),
        simulated: Annotated[
            Path, typer.Option(help="Where the simulated operator's feedback file goes.")
        ] = Path("data/mentor/simulated.json"),
    ) -> None:
        forced = [f"mentor.source={source}"] if source else []
        p = _params(params, [*(set_ or []), *forced])
        _mentor(p, manifest, tasks, feedback, labels, results, simulated)

    return _friendly(command)


mentor_app.command(
    "run",
    help="What the pipeline runs: simulate or import as mentor.source says, then import.",
)(_mentor_command(None))
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
    model: Annotated[
        Path,
        typer.Option(
            help="Model file to evaluate, or a registry URI such as "
            "models:/defect-segmenter@champion."
        ),
    ] = Path("models/baseline.pt"),
    results: Annotated[
        Path | None,
        typer.Option(
            help="Metrics and plots folder [default: results/evaluate_baseline for the "
            "baseline, results/evaluate/<name> otherwise]."
        ),
    ] = None,
    name: Annotated[
        str, typer.Option(help="Model name: 'baseline' or its strategy (plots, metrics, MLflow).")
    ] = "baseline",
    track: TrackOpt = True,
) -> None:
    """Evaluate a model on each domain: mAP, precision/recall @ threshold, image-level rates."""
    from mentoring.stages import evaluate

    p = _params(params, set_)
    results = results or Path(
        "results/evaluate_baseline" if name == "baseline" else f"results/evaluate/{name}"
    )
    m = evaluate.run(p, manifest, model, results, name, track=track)
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


@app.command("validate")
@_friendly
def validate_cmd(
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
    manifest: ManifestOpt = Path("data/manifests/line.parquet"),
    results: Annotated[
        Path, typer.Option(help="Where manifest.json (full results) and metrics.json go.")
    ] = Path("results/validate"),
) -> None:
    """Check the line manifest (great-expectations): ids, sizes, checksums, defect rates."""
    from mentoring.stages import validate

    p = _params(params, set_)
    m = validate.run(p, manifest, results)
    out.print(
        f"manifest valid: {m['n_expectations']} expectations on {m['n_images']} images "
        f"-> {results / 'manifest.json'}"
    )


BaselineEvalOpt = Annotated[Path, typer.Option(help="The baseline's evaluation.")]
EvaluationsOpt = Annotated[
    Path, typer.Option(help="Folder of the strategies' evaluations (<strategy>/).")
]


@app.command("report")
@_friendly
def report_cmd(
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
    manifest: ManifestOpt = Path("data/manifests/line.parquet"),
    baseline_eval: BaselineEvalOpt = Path("results/evaluate_baseline"),
    evaluations: EvaluationsOpt = Path("results/evaluate"),
    models: Annotated[Path, typer.Option(help="Trained models (for the t-SNE figure).")] = Path(
        "models"
    ),
    out_dir: Annotated[Path, typer.Option("--out", help="table1.json, table1.md, plots.")] = Path(
        "results/report"
    ),
    track: TrackOpt = True,
) -> None:
    """Table 1 of this pipeline run: every strategy against the baseline and the oracle."""
    from mentoring.stages import report

    p = _params(params, set_)
    report.run(p, manifest, baseline_eval, evaluations, models, out_dir, track=track)
    typer.echo((out_dir / "table1.md").read_text())
    out.print(f"written: {out_dir / 'table1.json'}, {out_dir / 'table1.md'}, {out_dir / 'plots'}/")


@app.command("register")
@_friendly
def register_cmd(
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
    manifest: ManifestOpt = Path("data/manifests/line.parquet"),
    baseline_train: Annotated[Path, typer.Option(help="The baseline's training results.")] = Path(
        "results/train_baseline"
    ),
    baseline_eval: BaselineEvalOpt = Path("results/evaluate_baseline"),
    trainings: Annotated[
        Path, typer.Option(help="Folder of the strategies' training results (<strategy>/).")
    ] = Path("results/train"),
    evaluations: EvaluationsOpt = Path("results/evaluate"),
    results: Annotated[Path, typer.Option(help="decision.json and metrics.json.")] = Path(
        "results/register"
    ),
) -> None:
    """Register every trained model; promote the best candidate only if the gate says so."""
    from mentoring.stages import register

    p = _params(params, set_)
    r = register.run(p, manifest, baseline_train, baseline_eval, trainings, evaluations, results)
    news = [f"{x['variant']}=v{x['version']}" for x in r["registered"] if x["created"]]
    out.print(f"registered: {', '.join(news) or 'nothing new'} in {r['registered_model']}")
    colour = "green" if r["decision"] == "promoted" else "yellow"
    out.print(
        f"[{colour}]{r['decision']}[/]: candidate {escape(r['candidate']['variant'])} "
        f"v{r['candidate']['version']} vs champion v{r['champion']['version']}"
    )
    for reason in r["reasons"]:
        out.print(f"  - {escape(reason)}")
    out.print(f"champion is now v{r['aliases']['champion']}; decision: {results / 'decision.json'}")


registry_app = typer.Typer(
    help="The MLflow model registry: versions, the champion alias, promotions and rollbacks.",
    no_args_is_help=True,
)
app.add_typer(registry_app, name="registry")


def _registry(params: Path, sets: list[str] | None) -> Any:
    from mentoring.registry import Registry

    return Registry.from_params(_params(params, sets))


@registry_app.command("list")
@_friendly
def registry_list(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None) -> None:
    """Every version with its aliases, variant, per-domain mAP and gate decision."""
    reg = _registry(params, set_)
    by_version: dict[str, list[str]] = {}
    for alias, version in reg.aliases().items():
        by_version.setdefault(version, []).append(alias)
    table = Table(title=f"{reg.name} @ {reg.uri}")
    for name in ("v", "aliases", "variant", "orig mAP", "new mAP", "gate", "registered"):
        table.add_column(name, overflow="fold")
    from datetime import UTC, datetime

    for v in reg.versions():
        t = v.tags
        table.add_row(
            str(v.version),
            ", ".join(sorted(by_version.get(str(v.version), []))),
            t.get("variant", "?"),
            t.get("original_map", "-"),
            t.get("new_map", "-"),
            t.get("gate_decision", "-"),
            datetime.fromtimestamp(v.creation_timestamp / 1000, UTC).strftime("%m-%d %H:%M"),
        )
    out.print(table)
    champion = reg.champion()  # reports a broken alias
    if champion is None:
        out.print("no champion yet: run the pipeline (`dvc repro`) or `mentoring registry promote`")


@registry_app.command("promote")
@_friendly
def registry_promote(
    version: Annotated[str, typer.Argument(help="The version to make champion.")],
    reason: Annotated[str, typer.Option(help="Why (recorded on the version).")],
    by: Annotated[str | None, typer.Option(help="Who [default: the login name].")] = None,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Make VERSION the champion by hand (no gate); the old one becomes previous-champion."""
    reg = _registry(params, set_)
    before = reg.promote(version, reason, by=by)
    out.print(
        f"{reg.name}: champion v{before or '-'} -> v{version}"
        + (f" (v{before} is previous-champion)" if before else "")
    )


@registry_app.command("rollback")
@_friendly
def registry_rollback(
    reason: Annotated[str, typer.Option(help="Why (recorded on both versions).")],
    by: Annotated[str | None, typer.Option(help="Who [default: the login name].")] = None,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Give the champion alias back to the previous champion."""
    reg = _registry(params, set_)
    demoted, restored = reg.rollback(reason, by=by)
    out.print(f"{reg.name}: champion v{demoted or '-'} -> v{restored} (rolled back)")


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
    from mentoring.experiments.table1 import run_seed, seed_dir
    from mentoring.reporting import plot_tsne, report
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


# at the end: the kfp commands reuse this module's options and error handling
from mentoring.cli_kfp import kfp_app  # noqa: E402

app.add_typer(kfp_app, name="kfp")
