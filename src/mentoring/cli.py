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
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from mentoring import pipeline_spec as spec
from mentoring.config import ConfigError, Params, load_params, parse_overrides
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
PARAMS: Path = Path(spec.PARAMS_FILE)
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-S", help="Override a parameter, e.g. -S base.profile=tiny (repeat)."),
]
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
        except typer.Exit:
            raise  # an exit status the command chose (click's Exit is a RuntimeError)
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
    return load_params(path, parse_overrides(sets))


def _md(text: str) -> str:
    """Help text for the markdown renderer: ``<strategy>`` shown, not taken for an HTML tag."""
    return text.replace("<", "\\<").replace(">", "\\>")


def path_option(stage: str, role: str, *flags: str) -> Any:
    """A path option of ``stage``: its default and help come from the stage's declaration
    (:mod:`mentoring.pipeline_spec`); ``flags`` replace the one typer derives from the name."""
    s = spec.stage(stage)
    return typer.Option(s.default(role), *flags, help=_md(s.describe(role)))


def _shown(stage: str, role: str, placeholder: str = "strategy") -> str:
    """A templated default as the help shows it: ``models/<strategy>.pt``."""
    return str(spec.default(stage, role, strategy=f"<{placeholder}>"))


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


def _line(p: Params, data: Path, results: Path) -> None:
    from mentoring.stages import line

    where = {"folder": p.line.ingest_dir, "s3": p.line.s3.uri, "dvc": p.line.dvc.repo}
    verb = (
        "rendering"
        if p.line.source == "synthetic"
        else f"ingesting {where.get(p.line.source, '')}:"
    )
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
        f"manifest: {spec.relocate('line', 'manifest', 'data', data)}  "
        f"preview: {spec.relocate('line', 'preview', 'results', results)}"
    )


def _line_command(source: str | None) -> Callable[..., None]:
    """The ``line run|generate`` commands: ``run`` reads the source from ``line.source``,
    ``generate`` forces it."""

    def command(
        params: ParamsOpt = PARAMS,
        set_: SetOpt = None,
        data: Path = path_option("line", "data"),
        results: Path = path_option("line", "results"),
    ) -> None:
        forced = [f"line.source={source}"] if source else []
        _line(_params(params, [*(set_ or []), *forced]), data, results)

    return _friendly(command)


line_app.command("run", help="What the pipeline runs: generate or ingest, as line.source says.")(
    _line_command(None)
)
line_app.command(
    "generate", help="Render the synthetic line (both domains, every split) of the active profile."
)(_line_command("synthetic"))


@line_app.command("ingest")
@_friendly
def line_ingest(
    folder: Annotated[
        str | None,
        typer.Argument(
            help="<domain>/<split>/images|masks/ folder or s3://bucket/prefix "
            "[default: line.ingest_dir]."
        ),
    ] = None,
    params: ParamsOpt = PARAMS,
    set_: SetOpt = None,
    data: Path = path_option("line", "data"),
    results: Path = path_option("line", "results"),
) -> None:
    """Ingest a whole line (4 splits) of real images instead of rendering one.

    Images of any size are fitted with line.resize; unusable files are quarantined with a reason.
    """
    sets = list(set_ or [])
    if folder is not None and folder.startswith("s3://"):
        sets += ["line.source=s3", f"line.s3.uri={folder}"]
    else:
        sets.append("line.source=folder")
        if folder is not None:
            sets.append(f"line.ingest_dir={folder}")
    _line(_params(params, sets), data, results)


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


@app.command("ingest")
@_friendly
def ingest_cmd(
    source: Annotated[
        str,
        typer.Argument(
            help="s3://bucket/prefix (or a folder) holding images/ [+ masks/, sidecar .json], "
            "or images directly."
        ),
    ],
    domain: Annotated[str, typer.Option(help="Domain of these images (a key of line.setups).")],
    split: Annotated[str, typer.Option(help="Split: pool (unlabelled), train or eval.")] = "pool",
    masks: Annotated[
        str, typer.Option(help="required | optional | auto (required except new/pool).")
    ] = "auto",
    params: ParamsOpt = PARAMS,
    set_: SetOpt = None,
    data: Annotated[Path, typer.Option(help="Data folder (manifests/line.parquet).")] = Path(
        "data"
    ),
    results: Annotated[Path, typer.Option(help="Where metrics.json goes.")] = Path(
        "results/ingest"
    ),
) -> None:
    """Add the images of an S3 prefix (or folder) to the manifest: only what is new.

    Idempotent and resumable: objects already in the manifest (same key and ETag) are not
    fetched again, and a killed run picks up where it stopped. Every listed object is
    reconciled: ingested + quarantined + to retry + already present + skipped. What can heal
    (a failed fetch, an image whose mask has not arrived) is tried again on every later run.
    Exit status: 0 done, 1 the batch failed validation, 2 bad arguments or source, 3 objects
    left to retry (the rest is ingested: run again later). Credentials come from the standard
    AWS chain; -S line.s3.endpoint_url=... for any S3-compatible store.
    """
    from mentoring.data.ingest import ingest_batch

    if masks not in ("required", "optional", "auto"):
        raise ValueError(f"--masks {masks!r}: required, optional or auto")
    p = _params(params, set_)
    required = None if masks == "auto" else masks == "required"
    with Progress(
        TextColumn(f"[bold]ingesting {escape(source)}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("objects"),
        TextColumn("{task.fields[nbytes]}"),
        TimeRemainingColumn(),
        console=console,
        disable=not sys.stderr.isatty(),
    ) as bar:
        task = bar.add_task("ingest", total=None, nbytes="")

        def tick(done: int, total: int, nbytes: int) -> None:
            bar.update(task, completed=done, total=total, nbytes=_size(nbytes))

        m = ingest_batch(p, source, domain, split, data, results, required, tick)
    table = Table(
        "listed",
        "ingested",
        "quarantined",
        "to retry",
        "already present",
        "skipped",
        title=source,
    )
    table.add_row(
        str(m["listed"]),
        str(m["ingested"]),
        str(m["quarantined"]),
        str(m["to_retry"]),
        str(m["already_present"]),
        str(sum(m["skipped"].values())),
    )
    out.print(table)
    for reason, n in sorted(m["skipped"].items()):
        console.print(f"skipped {n}: {escape(reason)}")
    for q in m["quarantined_files"][:20]:
        console.print(f"[yellow]quarantined ({q['kind']}):[/] {escape(q['reason'])}")
    for group in m["duplicate_content"][:10]:
        console.print(f"[yellow]same content under {len(group)} keys:[/] {escape(str(group))}")
    out.print(
        f"{m['images_stored']} image(s) stored, {_size(m['bytes_fetched'])} fetched in "
        f"{m['seconds']:.1f} s; manifest: {m['manifest']}  metrics: {results / 'metrics.json'}"
    )
    v = m["validation"]
    for line in v["warnings"][:20]:
        console.print(f"[yellow]warning:[/] {escape(line)}")
    for line in v["failures"][:20]:
        console.print(f"[bold red]failed:[/] {escape(line)}")
    out.print(f"validation: {v['data_docs'] or results / 'validate'}")
    if m["recovered"]:
        out.print(f"{m['recovered']} object(s) quarantined by an earlier run are now ingested")
    if not v["success"]:
        raise typer.Exit(1)
    if m["to_retry"]:
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(m["retry_kinds"].items()))
        console.print(
            f"[bold yellow]incomplete:[/] {m['to_retry']} object(s) left to retry ({kinds}): "
            "everything else is in the manifest; run the same command again later (a failed "
            "fetch is fetched again, an image waiting for its mask is paired once it arrives). "
            "Exit status 3."
        )
        raise typer.Exit(3)


@line_app.command("preview")
@_friendly
def line_preview(
    params: ParamsOpt = PARAMS,
    set_: SetOpt = None,
    manifest: Path = path_option("line", "manifest"),
    out_path: Path = path_option("line", "preview", "--out"),
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
    params: ParamsOpt = PARAMS,
    set_: SetOpt = None,
    strategy: Annotated[
        str,
        typer.Option(
            help="'baseline' (original domain only), or a strategy: scratch, transfer, "
            "omnia, healthy, dann, oracle, combined with '+' (e.g. transfer+omnia)."
        ),
    ] = "baseline",
    manifest: Path = path_option("train", "manifest"),
    model: Path | None = typer.Option(
        None, help=_md(f"Model file to write [default: {_shown('train', 'model')}].")
    ),
    results: Path | None = typer.Option(
        None,
        help=_md(
            f"Metrics and plots folder [default: {_shown('train_baseline', 'results')} "
            f"or {_shown('train', 'results')}]."
        ),
    ),
    checkpoint: Path | None = typer.Option(
        None,
        help=_md(
            f"Per-epoch checkpoint, the resume source [default: {_shown('train', 'checkpoint')}]."
        ),
    ),
    labels: Path = path_option("train", "labels"),
    baseline: Path = path_option("train", "baseline"),
    resume: Annotated[bool, typer.Option(help="Resume from a matching checkpoint.")] = True,
    track: TrackOpt = True,
) -> None:
    """Train the baseline on the original domain, or a new model with a mentoring strategy.

    With ``nproc`` > 1 (``train.nproc``, ``train_baseline.nproc`` for the baseline), runs itself
    as that many processes under torchrun (DistributedDataParallel, docs/distributed.md).
    """
    from mentoring.training import distributed

    p = _params(params, set_)
    stage = spec.stage("train_baseline" if strategy == "baseline" else "train")
    model = model or stage.default("model", strategy=strategy)
    checkpoint = checkpoint or stage.default("checkpoint", strategy=strategy)
    results = results or stage.default("results", strategy=strategy)
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
            p, manifest, model, results, checkpoint, show_progress=show, track=track
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


@app.command("mine", help=spec.stage("mine").help)
@_friendly
def mine_cmd(
    params: ParamsOpt = PARAMS,
    set_: SetOpt = None,
    manifest: Path = path_option("mine", "manifest"),
    model: Path = path_option("mine", "model"),
    tasks: Path = path_option("mine", "tasks"),
    results: Path = path_option("mine", "results"),
) -> None:
    from mentoring.stages import mine

    p = _params(params, set_)
    m = mine.run(p, manifest, model, tasks, results, show_progress=sys.stderr.isatty())
    out.print(
        f"mined {m['n_mined']} of {m['n_pool']} images ({m['n_areas']} detected areas, "
        f"heuristic {m['heuristic']}) -> {tasks}"
    )


mentor_app = typer.Typer(
    help="Operator feedback on mined areas -> partial labels.", no_args_is_help=True
)
app.add_typer(mentor_app, name="mentor")
annotate_app = typer.Typer(help="Operators' annotation tools.", no_args_is_help=True)
app.add_typer(annotate_app, name="annotate")


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
        params: ParamsOpt = PARAMS,
        set_: SetOpt = None,
        manifest: Path = path_option("mentor", "manifest"),
        tasks: Path = path_option("mentor", "tasks"),
        feedback: Path = path_option("mentor", "feedback"),
        labels: Path = path_option("mentor", "labels"),
        results: Path = path_option("mentor", "results"),
        simulated: Path = path_option("mentor", "simulated"),
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
    params: ParamsOpt = PARAMS,
    set_: SetOpt = None,
    manifest: Path = path_option("evaluate_baseline", "manifest"),
    model: Path = path_option("evaluate_baseline", "model"),
    results: Path | None = typer.Option(
        None,
        help=_md(
            f"Metrics and plots folder [default: {_shown('evaluate_baseline', 'results')} for "
            f"the baseline, {_shown('evaluate', 'results', 'name')} otherwise]."
        ),
    ),
    name: Annotated[
        str, typer.Option(help="Model name: 'baseline' or its strategy (plots, metrics, MLflow).")
    ] = "baseline",
    track: TrackOpt = True,
) -> None:
    """Evaluate a model on each domain: mAP, precision/recall @ threshold, image-level rates."""
    from mentoring.stages import evaluate

    p = _params(params, set_)
    stage = "evaluate_baseline" if name == "baseline" else "evaluate"
    results = results or spec.default(stage, "results", strategy=name)
    m = evaluate.run(p, manifest, model, results, name, track=track)
    table = Table(
        title=f"{name} @ {p.evaluate.threshold}: defect level (matched at IoU "
        f"{p.evaluate.match_iou}; alarms = false alarms per image), cell level, images"
    )
    table.add_column("domain", no_wrap=True, min_width=8)
    for header in ("def. mAP", "def. P/R", "alarms", "cell mAP", "reject", "escape"):
        table.add_column(header, no_wrap=True)

    def num(x: float | None) -> str:
        return "-" if x is None else f"{x:.3f}"

    for domain, v in m["domains"].items():
        d = v.get("defect", {})
        table.add_row(
            domain,
            num(d.get("map")),
            f"{num(d.get('precision'))}/{num(d.get('recall'))}",
            num(d.get("false_alarms_per_image")),
            num(v["map"]),
            num(v["false_reject_rate"]),
            num(v["escape_rate"]),
        )
    out.print(table)
    out.print(f"metrics: {results / 'metrics.json'}  plots: {results / 'plots'}/")


@app.command("validate", help=spec.stage("validate").help)
@_friendly
def validate_cmd(
    params: ParamsOpt = PARAMS,
    set_: SetOpt = None,
    manifest: Path = path_option("validate", "manifest"),
    results: Path = path_option("validate", "results"),
) -> None:
    from mentoring.stages import validate

    p = _params(params, set_)
    m = validate.run(p, manifest, results, show_progress=sys.stderr.isatty())
    out.print(
        f"manifest valid: {m['n_expectations']} expectations on {m['n_images']} images, "
        f"{m['n_files_verified']} files match their sha256 "
        f"-> {results / 'manifest.json'}"
    )


def _written(out_dir: Path, stem: str = "table1") -> None:
    """Print the table (plain: a wrapped table is unreadable) and where its files are."""
    typer.echo((out_dir / f"{stem}.md").read_text())
    out.print(
        f"written: {out_dir / (stem + '.json')}, {out_dir / (stem + '.md')}, {out_dir / 'plots'}/"
    )


@app.command("report", help=spec.stage("report").help)
@_friendly
def report_cmd(
    params: ParamsOpt = PARAMS,
    set_: SetOpt = None,
    manifest: Path = path_option("report", "manifest"),
    baseline_eval: Path = path_option("report", "baseline_eval"),
    evaluations: Path = path_option("report", "evaluations"),
    models: Path = path_option("report", "models"),
    out_dir: Path = path_option("report", "out", "--out"),
    track: TrackOpt = True,
) -> None:
    from mentoring.stages import report

    p = _params(params, set_)
    report.run(p, manifest, baseline_eval, evaluations, models, out_dir, track=track)
    _written(out_dir)


@app.command("register", help=spec.stage("register").help)
@_friendly
def register_cmd(
    params: ParamsOpt = PARAMS,
    set_: SetOpt = None,
    manifest: Path = path_option("register", "manifest"),
    baseline_train: Path = path_option("register", "baseline_train"),
    baseline_eval: Path = path_option("register", "baseline_eval"),
    trainings: Path = path_option("register", "trainings"),
    evaluations: Path = path_option("register", "evaluations"),
    results: Path = path_option("register", "results"),
) -> None:
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
def registry_list(params: ParamsOpt = PARAMS, set_: SetOpt = None) -> None:
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
    params: ParamsOpt = PARAMS,
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
    params: ParamsOpt = PARAMS,
    set_: SetOpt = None,
) -> None:
    """Give the champion alias back to the previous champion."""
    reg = _registry(params, set_)
    demoted, restored = reg.rollback(reason, by=by)
    out.print(f"{reg.name}: champion v{demoted or '-'} -> v{restored} (rolled back)")


experiment_app = typer.Typer(
    help="Experiments over seeds: Table 1, rows, rounds, label efficiency, epoch budget.",
    no_args_is_help=True,
)
app.add_typer(experiment_app, name="experiment")


def _over_seeds(
    p: Params, data: Path, seeds: int, run: Callable[[Params, Path], dict[str, Any]]
) -> tuple[Path, dict[int, dict[str, Any]]]:
    """Generate the line if missing, then ``run(params, manifest)`` for ``seeds`` seeds."""
    from mentoring.stages import line

    manifest = spec.relocate("line", "manifest", "data", data)
    if not manifest.exists():
        line.run(p, data, spec.default("line", "results"))
    per_seed = {}
    for k in range(seeds):
        ps = p.model_copy(update={"base": p.base.model_copy(update={"seed": p.base.seed + k})})
        per_seed[ps.base.seed] = run(ps, manifest)
    return manifest, per_seed


def _experiment_log(msg: str) -> None:
    console.print(escape(msg))


def _experiment_seeds(
    p: Params, data: Path, workdir: Path, seeds: int, rows: Any, noise: bool = False
) -> tuple[Path, dict[int, dict[str, Any]]]:
    """Generate the line if missing, then run every row for ``seeds`` seeds."""
    from mentoring.experiments.rows import run_seed

    return _over_seeds(
        p,
        data,
        seeds,
        lambda ps, manifest: run_seed(
            ps,
            manifest,
            workdir,
            rows,
            log=_experiment_log,
            show_progress=sys.stderr.isatty(),
            noise=noise,
        ),
    )


def _row_labels(rows: Any) -> dict[str, str]:
    from mentoring.reporting import label

    return {
        r.name: r.label or (label(r.strategy) + ("" if r.name == r.strategy else f" [{r.name}]"))
        for r in rows
    }


SeedsOpt = Annotated[int, typer.Option(help="Number of seeds (base.seed, base.seed + 1, ...).")]
WorkdirOpt = Annotated[
    Path, typer.Option(help="Models and per-row results, per seed (shared checkpoints resume).")
]
EXPERIMENT_WORK = Path("results/experiments/work")
DataOpt = Annotated[Path, typer.Option(help="Data root (the line is generated if missing).")]


@experiment_app.command("table1")
@_friendly
def table1_cmd(
    params: ParamsOpt = PARAMS,
    set_: SetOpt = None,
    seeds: SeedsOpt = 1,
    data: DataOpt = spec.default("line", "data"),
    workdir: Annotated[Path, typer.Option(help="Models and per-variant results.")] = Path(
        "results/table1/work"
    ),
    out_dir: Annotated[Path, typer.Option("--out", help="table1.json, table1.md, plots.")] = Path(
        "results/table1"
    ),
    rows_file: Annotated[
        Path | None,
        typer.Option(
            "--rows",
            help="Extra rows after the strategies (YAML, see experiments/README.md), e.g. "
            "transfer+oracle or a row with mentor.draw_missed_rate set.",
        ),
    ] = None,
    round2: Annotated[
        str | None,
        typer.Option(
            help="Add the round-2 row of this strategy: round 1's champion (through the gate) "
            "mines what operators have not answered (round 1's refused candidate, in shadow "
            "mode, when the champion has nothing left), round 2 trains on both rounds' labels.",
        ),
    ] = None,
) -> None:
    """Reproduce the paper's Table 1: baseline, w/ new data, each fix, combinations, oracle."""
    from mentoring.config import parse_strategy
    from mentoring.experiments.rounds import run_rounds
    from mentoring.experiments.rows import check_rows, load_rows, seed_dir, strategy_rows
    from mentoring.reporting import label, plot_tsne, report

    p = _params(params, set_)
    strategies = strategy_rows(p)
    rows = check_rows(strategies + (load_rows(rows_file) if rows_file else []))
    if round2 is not None:
        try:
            parse_strategy(round2)
        except ValueError as exc:
            raise ConfigError(f"--round2: {exc}") from None
    manifest, per_seed = _experiment_seeds(p, data, workdir, seeds, rows)
    labels = _row_labels(rows)
    if round2 is not None:
        name = f"{round2}-round2"
        got = {}
        for seed in per_seed:
            ps = p.model_copy(update={"base": p.base.model_copy(update={"seed": seed})})
            points = run_rounds(ps, manifest, workdir, round2, 2, log=console.print)["points"]
            if len(points) == 3:
                got[seed] = points[2]["evaluation"]
        if len(got) == len(per_seed):
            for seed, ev in got.items():
                per_seed[seed]["evaluations"][name] = ev
            labels[name] = (
                f"{label(round2)}, round 2 (mined by round 1's champion, or by its refused "
                "candidate in shadow mode)"
            )
        else:
            console.print(f"round 2 of {round2}: nothing left to mentor for some seed; no row")
    first = seed_dir(workdir, p.base.seed) / "models"
    tsne_models = {
        v: first / f"{v}.pt" for v in ("scratch", "scratch+dann") if (first / f"{v}.pt").exists()
    }
    sep = (
        plot_tsne(tsne_models, p, manifest, out_dir / "plots" / "tsne.png", seed=p.base.seed)
        if tsne_models
        else None
    )
    report(
        {s: r["evaluations"] for s, r in per_seed.items()},
        out_dir,
        sep,
        labels=labels,
        candidates=[r.name for r in strategies],
    )
    _written(out_dir)


@experiment_app.command("rows")
@_friendly
def rows_cmd(
    rows_file: Annotated[Path, typer.Argument(help="Rows to compare (YAML: rows: [...]).")],
    params: ParamsOpt = PARAMS,
    set_: SetOpt = None,
    seeds: SeedsOpt = 3,
    reference: Annotated[
        str | None, typer.Option(help="Row the others are compared with [default: the first].")
    ] = None,
    title: Annotated[str, typer.Option(help="Title of rows.md.")] = "Experiment",
    noise: Annotated[
        bool, typer.Option(help="Measure each row's label noise against the hidden truth.")
    ] = True,
    data: DataOpt = spec.default("line", "data"),
    workdir: WorkdirOpt = EXPERIMENT_WORK,
    out_dir: Annotated[Path, typer.Option("--out", help="rows.json, rows.md, plots.")] = Path(
        "results/experiments/rows"
    ),
) -> None:
    """Compare rows (a strategy + train/mine/mentor overrides) over seeds, at both levels.

    Every row of a seed shares its baseline (and mining and operator, unless the row sets
    mine.* or mentor.*); each row is compared with the reference at defect level.
    """
    from mentoring.experiments.rows import load_rows
    from mentoring.reporting import report_rows

    p = _params(params, set_)
    rows = load_rows(rows_file)
    ref = reference or rows[0].name
    if ref not in {r.name for r in rows}:
        raise ConfigError(f"--reference {ref!r}: not a row of {rows_file}")
    _, per_seed = _experiment_seeds(p, data, workdir, seeds, rows, noise=noise)
    report_rows(per_seed, out_dir, _row_labels(rows), ref, title)
    _written(out_dir, "rows")


def _int_list(text: str, what: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"{what} {text!r}: expected integers separated by commas") from None
    if not values or min(values) < 1:
        raise ConfigError(f"{what} {text!r}: expected positive integers, e.g. 8,16,32")
    return values


@experiment_app.command("rounds")
@_friendly
def rounds_cmd(
    params: ParamsOpt = PARAMS,
    set_: SetOpt = None,
    rounds: Annotated[int, typer.Option(min=1, help="Mentoring rounds.")] = 3,
    strategy: Annotated[str, typer.Option(help="Strategy of every round.")] = "transfer+omnia",
    seeds: SeedsOpt = 3,
    data: DataOpt = spec.default("line", "data"),
    workdir: WorkdirOpt = EXPERIMENT_WORK,
    out_dir: Annotated[Path, typer.Option("--out", help="rounds.json, rounds.md, plots.")] = Path(
        "results/experiments/rounds"
    ),
) -> None:
    """Multi-round mentoring: the champion mines what is not mentored yet, operators answer,
    the new model is promoted through the gate; new-domain mAP against operator verdicts."""
    from mentoring.config import parse_strategy
    from mentoring.experiments.rounds import run_rounds
    from mentoring.reporting import report_rounds

    p = _params(params, set_)
    try:
        parse_strategy(strategy)
    except ValueError as exc:
        raise ConfigError(f"--strategy: {exc}") from None
    _, per_seed = _over_seeds(
        p,
        data,
        seeds,
        lambda ps, manifest: run_rounds(
            ps,
            manifest,
            workdir,
            strategy,
            rounds,
            log=_experiment_log,
            show_progress=sys.stderr.isatty(),
        ),
    )
    report_rounds(per_seed, out_dir)
    _written(out_dir, "rounds")


@experiment_app.command("efficiency")
@_friendly
def efficiency_cmd(
    params: ParamsOpt = PARAMS,
    set_: SetOpt = None,
    heuristics: Annotated[
        str, typer.Option(help="Mining heuristics, comma-separated.")
    ] = "detections,uncertainty,entropy,random",
    budgets: Annotated[str, typer.Option(help="Images mined, comma-separated.")] = "100,300,600",
    strategy: Annotated[str, typer.Option(help="Strategy trained on each.")] = "transfer+omnia",
    seeds: SeedsOpt = 3,
    data: DataOpt = spec.default("line", "data"),
    workdir: WorkdirOpt = EXPERIMENT_WORK,
    out_dir: Annotated[
        Path, typer.Option("--out", help="efficiency.json, efficiency.md, plots.")
    ] = Path("results/experiments/efficiency"),
) -> None:
    """Label efficiency: new-domain mAP against operator verdicts for each mining heuristic at
    each budget (what active-learning users compare)."""
    from mentoring.experiments.rows import Row, check_rows
    from mentoring.reporting import report_efficiency

    p = _params(params, set_)
    hs = [h.strip() for h in heuristics.split(",") if h.strip()]
    bs = _int_list(budgets, "--budgets")
    rows = check_rows(
        [
            Row(f"{h}-{b}", strategy, {"mine.heuristic": h, "mine.budget": b})
            for h in hs
            for b in bs
        ],
        "--heuristics/--budgets",
    )
    for r in rows:
        r.params(p)  # an unknown heuristic is an error before any training
    _, per_seed = _experiment_seeds(p, data, workdir, seeds, rows)
    report_efficiency(per_seed, out_dir, hs, bs)
    _written(out_dir, "efficiency")


@experiment_app.command("budget")
@_friendly
def budget_cmd(
    params: ParamsOpt = PARAMS,
    set_: SetOpt = None,
    strategy: Annotated[str, typer.Option(help="Strategy to train.")] = "scratch",
    epochs: Annotated[str, typer.Option(help="Epoch budgets, comma-separated.")] = "8,16,32,64",
    seeds: SeedsOpt = 3,
    data: DataOpt = spec.default("line", "data"),
    workdir: WorkdirOpt = EXPERIMENT_WORK,
    out_dir: Annotated[Path, typer.Option("--out", help="budget.json, budget.md, plots.")] = Path(
        "results/experiments/budget"
    ),
) -> None:
    """How a strategy moves with its epoch budget (the paper trains 200 epochs), at defect and
    cell level."""
    from mentoring.experiments.rows import Row, check_rows
    from mentoring.reporting import report_budget

    p = _params(params, set_)
    es = _int_list(epochs, "--epochs")
    rows = check_rows(
        [
            Row(
                strategy if e == p.train.epochs else f"{strategy}-e{e}",
                strategy,
                {} if e == p.train.epochs else {"train.epochs": e},
            )
            for e in es
        ],
        "--epochs",
    )
    _, per_seed = _experiment_seeds(p, data, workdir, seeds, rows)
    for r in per_seed.values():  # the default budget's row is the strategy's own
        r["evaluations"] |= {
            f"{strategy}-e{e}": r["evaluations"][strategy] for e in es if e == p.train.epochs
        }
    report_budget(per_seed, out_dir, strategy, es)
    _written(out_dir, "budget")


if __name__ == "__main__":  # pragma: no cover
    app()


# at the end: the kfp commands reuse this module's options and error handling
from mentoring.cli_kfp import kfp_app  # noqa: E402

app.add_typer(kfp_app, name="kfp")

from mentoring.cli_formats import export_app, import_app  # noqa: E402

app.add_typer(import_app, name="import")
app.add_typer(export_app, name="export")

# the Label Studio round trip (cli_labelstudio.py), with this module's error handling
from mentoring.cli_labelstudio import export_labelstudio, import_labelstudio  # noqa: E402

annotate_app.command("export-labelstudio")(_friendly(export_labelstudio))
mentor_app.command("import-labelstudio")(_friendly(import_labelstudio))

# the mentoring web interface (cli_annotate.py), with this module's error handling
from mentoring.cli_annotate import export_cmd, serve_cmd, status_cmd  # noqa: E402

annotate_app.command("serve")(_friendly(serve_cmd))
annotate_app.command("export")(_friendly(export_cmd))
annotate_app.command("status")(_friendly(status_cmd))
