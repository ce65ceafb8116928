"""What each pipeline stage reads and writes, declared once.

One :class:`StageSpec` per stage of ``dvc.yaml``: the params keys it reads (as ``dvc.yaml`` lists
them), its inputs and outputs (role -> default path) and a one-line help. The ``mentoring``
command line takes its option defaults and help from here; ``tests/unit/test_pipeline_spec.py``
checks ``dvc.yaml`` and the CLI against it, so neither can drift.

A path may be a template: ``models/{strategy}.pt`` is ``models/${item.strategy}.pt`` in a
``dvc.yaml`` matrix stage and ``default("train", "model", strategy="omnia")`` here.

This module imports nothing heavy (no torch, no mlflow): it is data, read where Kubeflow pipelines
compile too.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from pathlib import Path

#: the parameters file every command reads
PARAMS_FILE = "params.yaml"

# paths that several stages share: one stage writes them, later stages read them
MANIFEST = "data/manifests/line.parquet"
MODEL = "models/{strategy}.pt"
BASELINE_MODEL = MODEL.format(strategy="baseline")
CHECKPOINT = "models/checkpoints/{strategy}.pt"
TASKS = "data/mining/tasks.json"
LABELS = "data/mentor/partial_labels.npz"
TRAININGS = "results/train"
EVALUATIONS = "results/evaluate"
BASELINE_TRAINING = "results/train_baseline"
BASELINE_EVALUATION = "results/evaluate_baseline"

#: the params keys of both evaluate stages (``&evaluate_params`` in dvc.yaml)
#: what both training stages read before their own section (dvc.yaml lists them in this order)
TRAINING_PARAMS = (
    "base",
    "line.classes",
    "line.channels",
    "line.image_size",
    "line.cell_min_coverage",
    "model",
)
EVALUATE_PARAMS = (
    "base",
    "line.classes",
    "line.cell_min_coverage",
    "model.stride",
    "evaluate",
    "tracking",
)

#: option help of a role, unless the stage says otherwise (``StageSpec.option_help``)
ROLE_HELP = {
    "manifest": "Line manifest (parquet).",
    "results": "Metrics folder.",
    "baseline_eval": "The baseline's evaluation.",
    "evaluations": "Folder of the strategies' evaluations (<strategy>/).",
    "trainings": "Folder of the strategies' training results (<strategy>/).",
}


@dataclass(frozen=True)
class StageSpec:
    """One pipeline stage: what it reads (params keys, input paths) and writes (output paths).

    Roles are the CLI option names (``--baseline-eval`` is the role ``baseline_eval``).
    """

    name: str
    #: the params keys it reads, as dvc.yaml lists them (a section, or ``section.key``)
    params: tuple[str, ...]
    #: role -> default path of what it reads
    inputs: dict[str, str]
    #: role -> default path of what it writes (a folder holds its metrics, plots...)
    outputs: dict[str, str]
    help: str
    #: the module that runs it, ``mentoring.stages.<module>`` (default: its name)
    module: str = ""
    #: role -> default path of files it keeps between runs, untracked by DVC (resume checkpoint)
    state: dict[str, str] = field(default_factory=dict)
    #: role -> CLI option help, where ROLE_HELP's does not fit
    option_help: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.module:
            object.__setattr__(self, "module", self.name)
        roles = [*self.inputs, *self.outputs, *self.state]
        if len(roles) != len(set(roles)):
            raise ValueError(f"stage {self.name}: a role is both an input and an output")

    @property
    def paths(self) -> dict[str, str]:
        """Every role -> its default path (template), inputs first."""
        return {**self.inputs, **self.outputs, **self.state}

    def template(self, role: str) -> str:
        """The default path of ``role``, placeholders unfilled."""
        try:
            return self.paths[role]
        except KeyError:
            raise KeyError(
                f"stage {self.name} has no path {role!r} (it has {', '.join(self.paths)})"
            ) from None

    def default(self, role: str, **fmt: str) -> Path:
        """The default path of ``role``, its placeholders filled from ``fmt``."""
        template = self.template(role)
        missing = sorted({f for _, f, _, _ in string.Formatter().parse(template) if f} - fmt.keys())
        if missing:
            raise KeyError(f"stage {self.name}, {role}: {template} needs {', '.join(missing)}")
        return Path(template.format(**fmt))

    def describe(self, role: str) -> str:
        """The CLI option help of ``role``."""
        self.template(role)  # an unknown role is an error
        return self.option_help.get(role) or ROLE_HELP.get(role, "")


_STAGES = (
    StageSpec(
        "line",
        params=("base.profile", "line"),
        inputs={},
        outputs={
            "data": "data",
            "manifest": MANIFEST,
            "results": "results/line",
            "preview": "results/line/plots/preview.png",
        },
        help="Render the synthetic line (or ingest real images): images, masks, the manifest.",
        option_help={
            "data": "Data root to write line/ and manifests/ in.",
            "results": "Where metrics.json and the preview go.",
            "preview": "PNG to write.",
        },
    ),
    StageSpec(
        "validate",
        params=("line.image_size", "line.channels", "line.classes", "line.setups", "validate"),
        inputs={"manifest": MANIFEST},
        outputs={"results": "results/validate"},
        help="Check the line manifest (great-expectations): ids, sizes, checksums, defect rates; "
        "warn of acquisition drift (brightness, contrast, sharpness) from the reference split.",
        option_help={
            "results": "Where manifest.json, drift.json (full results), data_docs/ (HTML) and "
            "metrics.json go."
        },
    ),
    StageSpec(
        "train_baseline",
        params=(*TRAINING_PARAMS, "train_baseline", "tracking"),
        inputs={"manifest": MANIFEST},
        outputs={"model": BASELINE_MODEL, "results": BASELINE_TRAINING},
        state={"checkpoint": CHECKPOINT.format(strategy="baseline")},
        help="Train the baseline on the original domain (full labels).",
    ),
    StageSpec(
        "evaluate_baseline",
        params=EVALUATE_PARAMS,
        inputs={"manifest": MANIFEST, "model": BASELINE_MODEL},
        outputs={"results": BASELINE_EVALUATION},
        module="evaluate",
        help="Evaluate the baseline on each domain.",
        option_help={
            "model": "Model file to evaluate, or a registry URI such as "
            "models:/defect-segmenter@champion."
        },
    ),
    StageSpec(
        "mine",
        params=("base", "line.classes", "model.stride", "mine"),
        inputs={"manifest": MANIFEST, "model": BASELINE_MODEL},
        outputs={"tasks": TASKS, "results": "results/mine"},
        help="Pick the new-domain images with detected areas (or another heuristic) for operators.",
        option_help={
            "model": "The deployed model that mines: a file, or a registry URI such as "
            "models:/defect-segmenter@champion.",
            "tasks": "Mining tasks to write.",
        },
    ),
    StageSpec(
        "mentor",
        params=("base.seed", "line.cell_min_coverage", "mentor", "validate"),
        inputs={"manifest": MANIFEST, "tasks": TASKS, "feedback": "data/feedback"},
        outputs={
            "simulated": "data/mentor/simulated.json",
            "labels": LABELS,
            "results": "results/mentor",
        },
        help="Operator feedback on the mined areas (simulated or imported) -> partial labels.",
        option_help={
            "tasks": "Mining tasks.",
            "feedback": "Folder of feedback files (*.json).",
            "labels": "Partial labels to write.",
            "simulated": "Where the simulated operator's feedback file goes.",
        },
    ),
    StageSpec(
        "train",
        params=(
            *TRAINING_PARAMS,
            "evaluate.batch_size",
            "train.epochs",
            "train.batch_size",
            "train.lr",
            "train.lr_schedule",
            "train.weight_decay",
            "train.augment",
            "train.num_workers",
            "train.nproc",
            "train.lambda_w",
            "train.new_fraction",
            "train.omnia_epsilon",
            "train.dann_weight",
            "train.dann_gamma",
            "train.confirm_exclusive",
            "train.confirm_refine",
            "train.lw_normalisation",
            "train.distill_weight",
            "tracking",
        ),
        inputs={"manifest": MANIFEST, "labels": LABELS, "baseline": BASELINE_MODEL},
        outputs={"model": MODEL, "results": TRAININGS + "/{strategy}"},
        state={"checkpoint": CHECKPOINT},
        help="Train a new model with a mentoring strategy (one DVC stage per train.strategies).",
        option_help={
            "labels": "Partial labels from `mentoring mentor`.",
            "baseline": "Baseline model (transfer, omnia).",
        },
    ),
    StageSpec(
        "evaluate",
        params=EVALUATE_PARAMS,
        inputs={"manifest": MANIFEST, "model": MODEL},
        outputs={"results": EVALUATIONS + "/{strategy}"},
        help="Evaluate a strategy's model on each domain (one DVC stage per train.strategies).",
    ),
    StageSpec(
        "report",
        params=(
            "base.seed",
            "line.classes",
            "line.cell_min_coverage",
            "model.stride",
            "train.strategies",
            "tracking",
        ),
        inputs={
            "manifest": MANIFEST,
            "baseline_eval": BASELINE_EVALUATION,
            "evaluations": EVALUATIONS,
            "models": "models",
        },
        outputs={"out": "results/report"},
        help="Table 1 of this pipeline run: every strategy against the baseline and the oracle.",
        option_help={
            "models": "Trained models (for the t-SNE figure).",
            "out": "table1.json, table1.md, plots.",
        },
    ),
    StageSpec(
        "register",
        params=(
            "base",
            "line.classes",
            "line.cell_min_coverage",
            "model.stride",
            "evaluate",
            "train.strategies",
            "tracking",
            "promotion",
        ),
        inputs={
            "manifest": MANIFEST,
            "baseline_train": BASELINE_TRAINING,
            "baseline_eval": BASELINE_EVALUATION,
            "trainings": TRAININGS,
            "evaluations": EVALUATIONS,
        },
        outputs={"results": "results/register"},
        help="Register every trained model; promote the best candidate only if the gate says so.",
        option_help={
            "baseline_train": "The baseline's training results.",
            "results": "decision.json and metrics.json.",
        },
    ),
)

#: stage name -> its declaration, in pipeline order (dvc.yaml's stages)
STAGES: dict[str, StageSpec] = {s.name: s for s in _STAGES}


def stage(name: str) -> StageSpec:
    """The declaration of stage ``name``."""
    try:
        return STAGES[name]
    except KeyError:
        raise KeyError(f"no stage {name!r} (stages: {', '.join(STAGES)})") from None


def default(stage_name: str, role: str, **fmt: str) -> Path:
    """The default path of ``role`` of a stage, e.g. ``default("train", "model", strategy="omnia")``
    is ``models/omnia.pt``."""
    return stage(stage_name).default(role, **fmt)


def relocate(stage_name: str, role: str, root_role: str, root: Path) -> Path:
    """Where ``role`` goes when ``root_role`` (a folder holding it) is ``root`` instead of its
    default: ``relocate("line", "manifest", "data", Path("d"))`` is ``d/manifests/line.parquet``."""
    spec = stage(stage_name)
    return root / spec.default(role).relative_to(spec.default(root_role))
