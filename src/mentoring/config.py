"""Typed, strict parameters: one frozen model per ``params.yaml`` section.

``params.yaml`` is the single source of defaults for both runners (DVC and Kubeflow). Every
section becomes a frozen pydantic model; an unknown key or a wrong type is a :class:`ConfigError`
that names the section and the key, so a typo never silently falls back to a default.

Example:
    >>> params = load_params("params.yaml")
    >>> params.train_baseline.epochs
    20
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AllowInfNan,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    model_validator,
)

DEFECT_CLASSES: tuple[str, ...] = ("scratch", "crack", "dent", "stain", "hole", "chip")
PART_REFS: tuple[str, ...] = ("disc", "plate", "bracket")
NUISANCES: tuple[str, ...] = ("dust", "reflection", "oil", "machining")


class ConfigError(ValueError):
    """A params file that cannot be used: the message names the file, section and key."""


#: what YAML 1.1 (PyYAML) reads as a boolean; said in the errors of a boolean given for a number
YAML_BOOLEANS = "yes/no/on/off/true/false"


def _refuse_bool(value: Any) -> Any:
    """A number param never takes a boolean: Python's ``bool`` is an ``int``, so pydantic's lax
    mode reads ``epochs: yes`` (YAML's ``True``) as 1 and ``lr: true`` as 1.0."""
    if isinstance(value, bool):
        raise ValueError("expected a number, got a boolean")
    return value


# Strict number and on/off types of every section's fields (an int, float or bool param is one
# of these; tests/unit/test_config.py checks every field of the defaults):
#: an integer, never a boolean. Not pydantic's strict int: a Kubeflow pipeline parameter is a
#: protobuf Struct, whose numbers are doubles, so ``epochs: 20`` comes back as 20.0 (an integral
#: float is taken, 20.5 is refused)
Int = Annotated[int, BeforeValidator(_refuse_bool)]
#: a real number: an int or a float (also a string such as ``1e-3``, which YAML 1.1 reads as a
#: string), never a boolean, and finite (``inf``/``nan`` make no sense for any param here)
Float = Annotated[float, BeforeValidator(_refuse_bool), AllowInfNan(False)]
#: on/off: ``true``/``false`` only (pydantic's strict bool: ``1`` or ``"yes"`` is refused)
Bool = StrictBool


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BaseParams(_Section):
    seed: Int = 0  # training, mining and simulation randomness (line.seed picks the data)
    device: str = "cpu"  # torch device for training and inference ("cpu", "cuda", "cuda:1")
    profile: str = "demo"  # which `line.profiles` entry sets the data set sizes
    num_threads: Int = Field(2, ge=1)  # torch intra-op threads on CPU
    # bf16: training and inference under torch.autocast (bfloat16 matmuls/convolutions, fp32
    # weights and losses); fp32 everywhere else. fp32 keeps CPU runs bit-exact
    precision: Literal["fp32", "bf16"] = "fp32"
    channels_last: Bool = False  # NHWC tensors and weights (faster convolutions on GPUs)
    compile: Bool = False  # torch.compile the trained modules (GPU nodes; CPU needs a C++ compiler)
    # a training set whose decoded images take at most this many MiB is decoded once and kept
    # in memory; a larger one is read from the image store batch by batch (same batches)
    train_cache_mib: Float = Field(4096, ge=0)


class SplitSizes(_Section):
    original_train: Int = Field(ge=0)  # fully-labelled images the baseline trains on
    original_eval: Int = Field(ge=0)  # fully-labelled evaluation images, original domain
    new_pool: Int = Field(ge=0)  # unlabelled images of the new domain, to be mined
    new_eval: Int = Field(ge=0)  # fully-labelled evaluation images, new domain


class AcquisitionSetup(_Section):
    """How one domain's camera, lighting and line look. Values are ranges [low, high]."""

    background: tuple[Float, Float] = (0.08, 0.2)  # background gray level range
    background_texture: Float = Field(0.0, ge=0)  # amplitude of the conveyor-belt stripes
    gain: tuple[Float, Float] = (0.85, 1.15)  # global illumination gain
    gamma: tuple[Float, Float] = (0.9, 1.1)  # sensor response gamma
    gradient: tuple[Float, Float] = (0.0, 0.12)  # amplitude of a linear lighting ramp
    hot_spot_prob: Float = Field(0.1, ge=0, le=1)  # chance of a large specular hot spot
    noise: tuple[Float, Float] = (0.005, 0.015)  # camera noise standard deviation
    blur: tuple[Float, Float] = (0.0, 0.4)  # gaussian blur sigma (focus), pixels
    defect_contrast: tuple[Float, Float] = (0.8, 1.2)  # defect contrast multiplier
    nuisances: dict[str, Float] = Field(default_factory=dict)  # nuisance -> expected count/image

    @model_validator(mode="after")
    def _known_nuisances(self) -> AcquisitionSetup:
        unknown = sorted(set(self.nuisances) - set(NUISANCES))
        if unknown:
            raise ValueError(f"unknown nuisance(s) {unknown}; known: {list(NUISANCES)}")
        return self


def _default_setups() -> dict[str, AcquisitionSetup]:
    return {
        "original": AcquisitionSetup(nuisances={"dust": 0.3, "machining": 0.3}),
        "new": AcquisitionSetup(
            background=(0.16, 0.24),
            background_texture=0.015,
            gamma=(0.8, 0.95),
            gradient=(0.05, 0.15),
            hot_spot_prob=0.2,
            noise=(0.01, 0.02),
            blur=(0.2, 0.6),
            defect_contrast=(0.6, 1.0),
            nuisances={"dust": 0.4, "reflection": 0.4, "oil": 0.4, "machining": 0.3},
        ),
    }


class DvcSource(_Section):
    """``line.source: dvc``: the line of a DVC-versioned data repository at one git revision.

    The repository's folder ``path`` holds ``line/`` and ``manifests/line.parquet`` (what
    ``mentoring line generate`` writes under its data folder), tracked by DVC; the files come
    from the repository's DVC remote (S3 credentials from the standard AWS chain, never from
    here). See :mod:`mentoring.data.versioned` and ``docs/data-versioning.md``.
    """

    repo: str = ""  # git URL or local path of the data repository; required with source: dvc
    rev: str = ""  # commit sha (pin it: pipelines key on it), tag or branch; "" = default branch
    path: str = "data"  # folder of the repository holding line/ and manifests/line.parquet

    @model_validator(mode="after")
    def _relative_path(self) -> DvcSource:
        parts = Path(self.path).parts
        if not self.path.strip() or Path(self.path).is_absolute() or ".." in parts:
            raise ValueError(
                f"line.dvc.path {self.path!r} must be a folder inside the repository, relative to "
                "its root (e.g. 'data')"
            )
        return self


class S3Source(_Section):
    """``line.source: s3`` (and ``mentoring ingest s3://...``): where and how to read S3.

    Credentials are never here: boto3's standard chain (env vars, profile, instance role).
    """

    uri: str = ""  # s3://bucket/prefix holding <domain>/<split>/images|masks/ (source: s3)
    endpoint_url: str = ""  # any S3-compatible store; "" = AWS or $AWS_ENDPOINT_URL_S3
    concurrency: Int = Field(8, ge=1, le=128)  # objects fetched in parallel
    max_attempts: Int = Field(8, ge=1, le=30)  # botocore adaptive-mode attempts per request

    @model_validator(mode="after")
    def _s3_uri(self) -> S3Source:
        if self.uri and not self.uri.startswith("s3://"):
            raise ValueError(f"line.s3.uri {self.uri!r} must start with s3://")
        return self


class LineParams(_Section):
    source: Literal["synthetic", "folder", "s3", "dvc"] = "synthetic"  # generate, ingest, DVC
    ingest_dir: str = "data/ingest"  # source: folder -> <domain>/<split>/images|masks/*
    s3: S3Source = Field(default_factory=S3Source)  # source: s3 -> the same layout in a bucket
    resize: Literal["resize", "tile", "pad"] = "resize"  # ingested images -> image_size
    dvc: DvcSource = Field(default_factory=DvcSource)  # source: dvc -> repository, revision, path
    seed: Int = 0  # which synthetic line: the data set's seed, apart from training's base.seed
    image_size: Int = Field(128, ge=32)  # square images, pixels; a multiple of model.stride
    # 1 = grayscale camera, 3 = RGB (a Literal takes True for 1: refuse booleans first)
    channels: Annotated[Literal[1, 3], BeforeValidator(_refuse_bool)] = 1
    classes: tuple[str, ...] = DEFECT_CLASSES  # defect classes, in output-channel order (any
    # names for ingested data; the synthetic generator draws only the names of DEFECT_CLASSES)
    part_refs: tuple[str, ...] = PART_REFS  # part references made on the line
    defect_rate: Float = Field(0.25, ge=0, le=1)  # fraction of parts with >= 1 defect
    max_defects: Int = Field(3, ge=1)  # most defects on one part
    cell_min_coverage: Float = Field(0.06, gt=0, le=1)  # covered fraction making a cell defective
    workers: Int = Field(0, ge=0)  # generator processes; 0 = one per CPU core
    profiles: dict[str, SplitSizes] = Field(
        default_factory=lambda: {
            "demo": SplitSizes(original_train=1500, original_eval=400, new_pool=1500, new_eval=400),
            "paper": SplitSizes(
                original_train=21000, original_eval=3000, new_pool=12000, new_eval=4000
            ),
            "tiny": SplitSizes(original_train=48, original_eval=16, new_pool=32, new_eval=16),
        }
    )  # named data set sizes; `base.profile` picks one
    setups: dict[str, AcquisitionSetup] = Field(default_factory=_default_setups)  # domains

    @model_validator(mode="after")
    def _check(self) -> LineParams:
        if not self.classes:
            raise ValueError("line.classes is empty: name at least one defect class")
        dup = sorted({c for c in self.classes if self.classes.count(c) > 1})
        bad = [c for c in self.classes if not c.strip() or c != c.strip() or "/" in c]
        if dup or bad:
            raise ValueError(
                f"line.classes: duplicate {dup} or blank/padded/'/'-containing {bad} class names"
            )
        if self.source == "synthetic":
            unknown = sorted(set(self.classes) - set(DEFECT_CLASSES))
            if unknown:
                raise ValueError(
                    f"line.source is synthetic and the generator cannot draw class(es) {unknown}; "
                    f"it draws {list(DEFECT_CLASSES)} (any names are allowed for ingested data: "
                    "line.source folder, s3 or dvc)"
                )
            unknown = sorted(set(self.part_refs) - set(PART_REFS))
            if unknown:
                raise ValueError(f"unknown part reference(s) {unknown}; known: {list(PART_REFS)}")
        if self.source == "s3" and not self.s3.uri:
            raise ValueError(
                "line.source is 's3' but line.s3.uri is empty: set s3://bucket/prefix "
                "(e.g. -S line.s3.uri=s3://plant-images/line-3)"
            )
        missing = {"original", "new"} - set(self.setups)
        if missing:
            raise ValueError(f"setups must define the domains {sorted(missing)}")
        if self.source == "dvc" and not self.dvc.repo.strip():
            raise ValueError(
                "line.source is 'dvc' but line.dvc.repo is empty: set the git URL or path of the "
                "data repository (e.g. -S line.dvc.repo=https://git.example.com/plant/data.git "
                "-S line.dvc.rev=<commit sha>)"
            )
        return self


class ValidateParams(_Section):
    """Data validation (great-expectations suites): manifest, ingested batches, acquisition
    drift, operator feedback, evaluation metrics (docs/validation.md)."""

    defect_rate: tuple[Float, Float] = (0.1, 0.5)  # band [low, high] of each domain's defect rate
    defect_rate_by_domain: dict[str, tuple[Float, Float]] = Field(
        default_factory=dict
    )  # per-domain bands that replace `defect_rate`, e.g. {new: [0.05, 0.6]}
    max_examples: Int = Field(5, ge=1)  # unexpected values shown per failed expectation
    drift_reference: str = "original/train"  # <domain>/<split> whose images are the reference
    drift_tolerance: Float = Field(0.25, ge=0)  # drift band: reference percentile +- this x
    # the reference's 10-90 percentile range (per acquisition statistic; a warning beyond it)
    stats_batch_size: Int = Field(256, ge=1)  # images decoded at once for those statistics

    @model_validator(mode="after")
    def _bands(self) -> ValidateParams:
        domain, sep, split = self.drift_reference.partition("/")
        if not (domain and sep and split) or "/" in split:
            raise ValueError(
                f"drift_reference must be <domain>/<split>, e.g. original/train, "
                f"got {self.drift_reference!r}"
            )
        named = {"defect_rate": self.defect_rate}
        named |= {f"defect_rate_by_domain.{d}": b for d, b in self.defect_rate_by_domain.items()}
        for name, (low, high) in named.items():
            if not 0 <= low <= high <= 1:
                raise ValueError(f"{name} must be a band 0 <= low <= high <= 1, got {[low, high]}")
        return self

    def defect_band(self, domain: str) -> tuple[float, float]:
        """The defect-rate band of ``domain``: its own, or the global one."""
        return self.defect_rate_by_domain.get(domain, self.defect_rate)

    @property
    def reference(self) -> tuple[str, str]:
        """``drift_reference`` as (domain, split)."""
        domain, _, split = self.drift_reference.partition("/")
        return domain, split


class ModelParams(_Section):
    stride: Int = Field(8, ge=2)  # output stride: one area (cell) per stride x stride pixels
    width: Int = Field(16, ge=4)  # channels of the first encoder stage (doubles per stage)
    depth: Int = Field(2, ge=1)  # convolutions per encoder stage
    context_stages: Int = Field(1, ge=0)  # extra stages below the output stride (receptive field)
    prior: Float = Field(0.01, gt=0, lt=1)  # initial defect probability (classifier bias init)

    @model_validator(mode="after")
    def _stride_power_of_two(self) -> ModelParams:
        if self.stride & (self.stride - 1):
            raise ValueError(f"stride must be a power of two, got {self.stride}")
        return self


class TrainParams(_Section):
    epochs: Int = Field(20, ge=1)  # passes over the training set
    batch_size: Int = Field(32, ge=1)  # images per batch
    lr: Float = Field(3e-3, gt=0)  # Adam peak learning rate
    lr_schedule: Literal["constant", "cosine"] = "cosine"  # cosine: 1-epoch warm-up, decay to 1%
    weight_decay: Float = Field(0.0, ge=0)  # Adam L2 penalty
    augment: Bool = True  # random flips and 90-degree rotations (parts have no orientation)
    # threads decoding a batch read from the image store (a set over base.train_cache_mib)
    num_workers: Int = Field(0, ge=0)
    nproc: Int = Field(1, ge=1)  # processes per node under torchrun (DDP); 1 = plain


STRATEGY_FLAGS: tuple[str, ...] = (
    "scratch",
    "transfer",
    "omnia",
    "healthy",
    "dann",
    "distill",
    "oracle",
)


def parse_strategy(name: str) -> frozenset[str]:
    """``"transfer+omnia"`` -> {"transfer", "omnia"}; checks names and exclusive choices."""
    parts = frozenset(p.strip() for p in name.split("+") if p.strip())
    unknown = sorted(parts - set(STRATEGY_FLAGS))
    if not parts or unknown:
        raise ValueError(
            f"unknown strategy part(s) {unknown or [name]} in {name!r}; "
            f"combine with '+': {list(STRATEGY_FLAGS)}"
        )
    if {"scratch", "transfer"} <= parts:
        raise ValueError(f"strategy {name!r}: 'scratch' and 'transfer' exclude each other")
    if "oracle" in parts and parts & {"omnia", "healthy", "distill"}:
        raise ValueError(
            f"strategy {name!r}: the oracle is fully labelled; omnia/healthy/distill add nothing"
        )
    return parts


class MineParams(_Section):
    # detections (the paper) | uncertainty | entropy | random (a seeded uniform sample)
    heuristic: Literal["detections", "uncertainty", "entropy", "random"] = "detections"
    threshold: Float = Field(0.5, gt=0, lt=1)  # class threshold of a detected area
    margin: Float = Field(0.2, gt=0, lt=0.5)  # uncertainty heuristic: |p - threshold| <= margin
    budget: Int | None = Field(None, ge=1)  # most images to mine; None = every image of interest
    batch_size: Int = Field(64, ge=1)  # images per inference batch
    num_workers: Int = Field(0, ge=0)  # processes decoding the pool (0 = in the main one)


class MentorParams(_Section):
    source: Literal["simulate", "import"] = "simulate"  # simulated operator or real feedback files
    min_overlap: Float = Field(0.2, gt=0, le=1)  # area cells on true defects to confirm it
    error_rate: Float = Field(0.02, ge=0, le=1)  # chance the simulated operator clicks wrong
    healthy_flag_rate: Float = Field(0.5, ge=0, le=1)  # truly healthy mined images flagged healthy
    correct_classes: Bool = True  # the operator may correct a confirmed area's class
    draw_missed_rate: Float = Field(0.0, ge=0, le=1)  # missed defects the simulated operator draws


class MentoredTrainParams(TrainParams):
    epochs: Int = Field(16, ge=1)  # CPU budget: 7 variants of the demo in ~9 minutes
    lambda_w: Float = Field(1.0, ge=0)  # weight of the masked loss L_W in eq. (3)
    new_fraction: Float = Field(0.5, gt=0, lt=1)  # share of mentored images per batch (1:1)
    omnia_epsilon: Float = Field(0.01, gt=0, lt=1)  # OMNIA-like: baseline p < eps -> healthy
    dann_weight: Float = Field(0.1, ge=0)  # weight of the domain loss
    dann_gamma: Float = Field(10.0, gt=0)  # GRL ramp 2/(1+exp(-gamma p)) - 1
    distill_weight: Float = Field(1.0, ge=0)  # distill: weight of the baseline's soft targets
    # what a confirmed area of class c also says: the other classes are healthy on its cells
    confirm_exclusive: Bool = False
    # confirmed cells stay defective only where the deployed model's p >= this (others masked);
    # 0 = off. Mined areas have p >= mine.threshold already, so only a higher value acts
    confirm_refine: Float = Field(0.0, ge=0, lt=1)
    # L_W of eq. (4): batch = sum over annotated entries / their count in the batch (the paper);
    # image = each mentored image's mean over its annotated entries, averaged over the images
    lw_normalisation: Literal["batch", "image"] = "batch"
    strategies: tuple[str, ...] = (
        "scratch",
        "transfer",
        "scratch+omnia",
        "scratch+healthy",
        "scratch+dann",
        "transfer+omnia",
        "oracle",
    )  # variants trained by the pipeline (the Table 1 rows)

    @model_validator(mode="after")
    def _check_strategies(self) -> MentoredTrainParams:
        for name in self.strategies:
            parse_strategy(name)
        return self


class EvaluateParams(_Section):
    threshold: Float = Field(0.5, gt=0, lt=1)  # class threshold for precision/recall and images
    batch_size: Int = Field(64, ge=1)  # images per inference batch
    n_examples: Int = Field(8, ge=0)  # images per domain in the prediction overlay plot
    detect_threshold: Float = Field(0.5, gt=0, lt=1)  # defect level: a detected area's threshold
    match_iou: Float = Field(0.1, gt=0, le=1)  # defect level: cell IoU for a detection to match
    num_workers: Int = Field(0, ge=0)  # processes decoding images and masks (0 = the main one)


class TrackingParams(_Section):
    uri: str = "sqlite:///mlflow.db"  # MLflow tracking + registry; MLFLOW_TRACKING_URI overrides
    artifacts: str = "mlartifacts"  # artifact folder of the embedded store (a server has its own)
    experiment: str = Field("mentoring", min_length=1)  # MLflow experiment of pipeline runs
    registered_model: str = Field("defect-segmenter", min_length=1)  # registry name of models
    log_models: Bool = True  # log each trained model (PyTorch flavour) in its run
    timeout_s: Float = Field(10.0, gt=0)  # reachability check of a tracking server, seconds


class PromotionParams(_Section):
    candidate: str = "best"  # best: top new-domain mAP within tolerance; or a strategy name
    min_gain: Float = Field(0.01, ge=0)  # candidate must beat the champion's new mAP by this
    max_original_drop: Float = Field(0.02, ge=0)  # and lose at most this original-domain mAP
    exclude: tuple[str, ...] = ("oracle",)  # never registered: labels a plant does not have
    gate_level: Literal["defect", "cell"] = "defect"  # whose mAPs the gate compares


class Resources(_Section):
    """Kubernetes requests and limits of one task's container."""

    cpu: str = "1"  # CPU request (cores, "500m" style allowed)
    memory: str = "2Gi"  # memory request
    cpu_limit: str = "2"  # CPU limit
    memory_limit: str = "4Gi"  # memory limit


class GpuNodes(_Section):
    """Where training tasks run: GPU resource, node selector and toleration of GPU nodes."""

    resource: str = "nvidia.com/gpu"  # extended resource name of the device plugin
    count: Int = Field(1, ge=0)  # GPUs per training task; 0 = train on CPU nodes
    node_selector: dict[str, str] = Field(
        default_factory=lambda: {"nvidia.com/gpu.present": "true"}
    )  # node labels of GPU nodes (GPU operator / NFD label by default)
    toleration_key: str = "nvidia.com/gpu"  # taint key kept on GPU nodes
    toleration_effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] = "NoSchedule"
    shm_size: str = "2Gi"  # memory-backed /dev/shm for DataLoader workers


class Retry(_Section):
    """Retries with exponential backoff of the tasks that talk to S3 or MLflow."""

    count: Int = Field(3, ge=0)  # retries after the first failure
    backoff: str = "30s"  # first wait
    factor: Float = Field(2.0, ge=1)  # wait multiplier per retry
    max_backoff: str = "600s"  # longest wait


#: a PersistentVolumeClaim's access mode (Kubernetes' names)
AccessMode = Literal["ReadWriteOnce", "ReadWriteMany", "ReadWriteOncePod", "ReadOnlyMany"]


def _read_write_many() -> list[AccessMode]:
    return ["ReadWriteMany"]


class KfpParams(_Section):
    """Kubeflow Pipelines: compile-time platform settings (the runs' own params are `params`)."""

    image: str = "ghcr.io/mentoring/mentoring:0.1.0"  # CPU image of every component
    gpu_image: str = "ghcr.io/mentoring/mentoring-cuda:0.1.0"  # image of the training tasks
    store: Literal["workspace", "artifacts", "pvc"] = "workspace"  # where the line's images live
    workspace_size: str = "20Gi"  # Pipeline Run Workspace volume (store: workspace)
    workspace_access_modes: list[AccessMode] = Field(
        default_factory=_read_write_many, min_length=1
    )  # its claim's access modes: train pods of one run on several GPU nodes need ReadWriteMany
    workspace_storage_class: str = ""  # its claim's storage class; "" = the cluster's default
    pvc_name: str = "mentoring-data"  # existing PersistentVolumeClaim (store: pvc)
    pvc_mount: str = "/mnt/mentoring"  # its mount path in every task
    gpu: GpuNodes = Field(default_factory=GpuNodes)  # training tasks' nodes
    trainer: Literal["task", "trainjob"] = "task"  # strategies train in the task's pod, or in a
    # Kubeflow Trainer TrainJob over several GPU nodes (docs/kubeflow-trainer.md)
    trainjob_nodes: Int = Field(2, ge=1)  # trainer: trainjob, nodes per strategy
    trainjob_runtime: str = "torch-distributed"  # its ClusterTrainingRuntime
    resources: dict[str, Resources] = Field(
        default_factory=lambda: {
            "default": Resources(),
            "train": Resources(cpu="4", memory="16Gi", cpu_limit="8", memory_limit="32Gi"),
            "train_baseline": Resources(cpu="4", memory="16Gi", cpu_limit="8", memory_limit="32Gi"),
        }
    )  # per component name; "default" for the others
    retry: Retry = Field(default_factory=Retry)  # S3 / MLflow steps
    mlflow_secret: str = "mentoring-mlflow"  # Secret with MLFLOW_TRACKING_URI (+ credentials)
    s3_secret: str = "mentoring-s3"  # Secret with AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY
    s3_endpoint: str = ""  # S3-compatible endpoint URL for tasks (empty: AWS)
    tasks_s3_uri: str = ""  # mining pipeline: copy tasks.json under this s3:// prefix
    experiment: str = "mentoring"  # KFP experiment of runs and recurring runs
    retraining_cron: str = "0 0 2 * * 0"  # weekly, Sunday 02:00 (KFP cron has seconds)
    mining_cron: str = "0 0 1 * * *"  # daily, 01:00

    @model_validator(mode="after")
    def _default_resources(self) -> KfpParams:
        if "default" not in self.resources:
            raise ValueError("kfp.resources must define 'default'")
        return self

    def resources_of(self, component: str) -> Resources:
        """The resources of ``component``: its own entry, else ``default``."""
        return self.resources.get(component, self.resources["default"])


# The `validate` section (named after its stage, like the others) shadows pydantic's deprecated
# `BaseModel.validate` classmethod; instances read the field, so pydantic's warning is noise.
warnings.filterwarnings(
    "ignore", message='Field name "validate" in "Params" shadows', category=UserWarning
)


class Params(_Section):
    base: BaseParams = Field(default_factory=BaseParams)
    line: LineParams = Field(default_factory=LineParams)
    validate: ValidateParams = Field(default_factory=ValidateParams)  # type: ignore[assignment]
    model: ModelParams = Field(default_factory=ModelParams)
    train_baseline: TrainParams = Field(default_factory=TrainParams)
    evaluate: EvaluateParams = Field(default_factory=EvaluateParams)
    mine: MineParams = Field(default_factory=MineParams)
    mentor: MentorParams = Field(default_factory=MentorParams)
    train: MentoredTrainParams = Field(default_factory=MentoredTrainParams)
    tracking: TrackingParams = Field(default_factory=TrackingParams)
    promotion: PromotionParams = Field(default_factory=PromotionParams)
    kfp: KfpParams = Field(default_factory=KfpParams)

    @model_validator(mode="after")
    def _cross_checks(self) -> Params:
        if self.base.profile not in self.line.profiles:
            raise ValueError(
                f"base.profile {self.base.profile!r} is not one of line.profiles "
                f"{sorted(self.line.profiles)}"
            )
        if self.line.image_size % self.model.stride:
            raise ValueError(
                f"line.image_size {self.line.image_size} is not a multiple of "
                f"model.stride {self.model.stride}"
            )
        unknown = sorted(set(self.validate.defect_rate_by_domain) - set(self.line.setups))
        if unknown:
            raise ValueError(
                f"validate.defect_rate_by_domain names unknown domain(s) {unknown}; "
                f"line.setups defines {sorted(self.line.setups)}"
            )
        return self

    @property
    def sizes(self) -> SplitSizes:
        """The split sizes of the active profile."""
        return self.line.profiles[self.base.profile]


def _describe(err: dict[str, Any]) -> str:
    loc = [str(p) for p in err["loc"]]
    where = f"[{loc[0]}]" if loc else "[top level]"
    key = ".".join(loc[1:])
    if err["type"] == "extra_forbidden":
        return f"{where} unknown key {key!r}"
    got = err.get("input")
    got_text = f" (got {got!r})" if not isinstance(got, dict) else ""
    if isinstance(got, bool) and err["type"] != "bool_type":
        got_text += f"; YAML reads {YAML_BOOLEANS} as booleans: write a number"
    elif err["type"] == "bool_type":
        got_text += "; write true or false"
    return f"{where} {key + ': ' if key else ''}{err['msg']}{got_text}"


def parse_params(data: dict[str, Any] | None, source: str = "params.yaml") -> Params:
    """Validate a params mapping; raise :class:`ConfigError` naming each bad section/key."""
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(data).__name__}")
    unknown_sections = sorted(set(data) - set(Params.model_fields))
    if unknown_sections:
        raise ConfigError(
            f"{source}: unknown section(s) {unknown_sections}; known: {sorted(Params.model_fields)}"
        )
    try:
        return Params.model_validate(data)
    except ValidationError as exc:
        lines = [_describe(dict(e)) for e in exc.errors()]
        raise ConfigError(f"{source}: invalid parameters:\n  " + "\n  ".join(lines)) from None


def parse_overrides(items: list[str] | None, example: str = "base.profile=tiny") -> dict[str, Any]:
    """``KEY=VALUE`` strings (``--set``/``-S``) -> ``{KEY: VALUE read as YAML}`` for
    :func:`load_params`.

    Raises:
        ConfigError: an item without ``=`` or without a key (the message shows ``example``).
    """
    overrides: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. {example}")
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides


def load_params(
    path: str | Path = "params.yaml", overrides: dict[str, Any] | None = None
) -> Params:
    """Read ``params.yaml`` (missing file = all defaults is an error) and validate it.

    Args:
        path: the params file.
        overrides: dotted keys to set after reading, e.g. ``{"base.profile": "tiny"}``.
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: params file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(data).__name__}")
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for depth, part in enumerate(parents):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                where = ".".join(parents[: depth + 1])
                raise ConfigError(f"{path}: cannot set {dotted!r}: {where!r} is not a section")
        node[leaf] = value
    return parse_params(data, source=str(path))


def with_overrides(params: Params, overrides: dict[str, Any], source: str = "overrides") -> Params:
    """``params`` with dotted keys set (``{"train.lambda_w": 0.2}``), validated again.

    Raises:
        ConfigError: an unknown key or an invalid value, named with ``source``.
    """
    data = params.model_dump(mode="json")
    for dotted, value in overrides.items():
        node: Any = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
            if not isinstance(node, dict):
                raise ConfigError(f"{source}: cannot set {dotted!r}: no section {part!r}")
        node[leaf] = value
    return parse_params(data, source=source)
