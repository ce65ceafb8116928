"""MLflow tracking: where runs go, the pipeline's parent run, lineage tags and model logging.

Every stage that trains or evaluates opens a :class:`Tracker`. Runs of one pipeline run (the same
code, params and data) hang under one **parent run**, found again by its ``pipeline_key`` tag, so
that stages running as separate processes (``dvc repro``, Kubeflow pods) join it; each model
(``baseline`` or a strategy) has one nested **variant run** that holds its training params and
per-epoch metrics, its model and its evaluation. Tags carry the lineage: ``git_commit``,
``params_sha256`` and ``manifest_sha256``.

Where: ``tracking.uri`` (``sqlite:///mlflow.db`` with artifacts in ``mlartifacts/`` next to it by
default) unless ``MLFLOW_TRACKING_URI`` is set; ``MENTORING_PIPELINE_RUN`` names the parent run
explicitly (a Kubeflow run id, say). The store is checked before any work starts: a stage never
trains for an hour and then fails to log.

Example:
    >>> tracker = Tracker.open(params, manifest)          # doctest: +SKIP
    >>> run_id = tracker.variant_run("transfer+omnia")    # doctest: +SKIP
    >>> tracker.log_metrics(run_id, {"loss": 0.1}, step=1)  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mentoring.config import Params, TrackingParams
from mentoring.io import sha256_file

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from mentoring.models.segmenter import Segmenter

#: environment variables that override params
URI_ENV = "MLFLOW_TRACKING_URI"
PIPELINE_ENV = "MENTORING_PIPELINE_RUN"
GIT_ENV = "MENTORING_GIT_COMMIT"  # the commit a pipeline was compiled from (pods have no .git)
#: tag keys (plain words: MLflow filter strings need no quoting)
TAG_PIPELINE = "pipeline_key"
TAG_VARIANT = "variant"
TAG_KIND = "kind"


class TrackingError(RuntimeError):
    """The tracking store cannot be used (unreachable server, unwritable folder...)."""


def resolve_uri(cfg: TrackingParams) -> str:
    """The tracking URI: ``MLFLOW_TRACKING_URI`` if set, else ``tracking.uri``."""
    return os.environ.get(URI_ENV) or cfg.uri


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (relative or absolute), else None."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///") :])


def artifact_root(uri: str, cfg: TrackingParams) -> str | None:
    """Artifact location of new experiments: ``tracking.artifacts`` next to a sqlite database.

    None for a server (it keeps its own artifact store).
    """
    db = sqlite_path(uri)
    if db is None:
        return None
    return (db.resolve().parent / cfg.artifacts).as_uri()


def check_reachable(uri: str, timeout_s: float = 10.0) -> None:
    """Fail early, naming ``uri``, when the tracking store cannot be used.

    A server must answer ``GET /health`` with 200; a sqlite database must lie in a writable
    folder. Other schemes are left to MLflow.

    Raises:
        TrackingError: with the URI and the cause.
    """
    if uri.startswith(("http://", "https://")):
        import requests

        url = uri.rstrip("/") + "/health"
        try:
            resp = requests.get(url, timeout=timeout_s)
        except requests.RequestException as exc:
            raise TrackingError(
                f"MLflow tracking server {uri} is unreachable ({type(exc).__name__}: {exc}); "
                f"start it, or point {URI_ENV} / tracking.uri at a reachable one"
            ) from None
        if resp.status_code != 200:
            raise TrackingError(
                f"MLflow tracking server {uri} answered {resp.status_code} on /health "
                f"({resp.text[:200]!r})"
            )
        return
    db = sqlite_path(uri)
    if db is not None:
        folder = db.resolve().parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TrackingError(f"tracking store {uri}: cannot create {folder} ({exc})") from None
        if not os.access(folder, os.W_OK):
            raise TrackingError(f"tracking store {uri}: folder {folder} is not writable")


def git_commit(cwd: Path | None = None) -> str:
    """``HEAD``'s commit, with ``-dirty`` when tracked files changed; ``none`` outside git.

    ``MENTORING_GIT_COMMIT`` wins when set (a Kubeflow task runs from an image, not a checkout).
    """
    if os.environ.get(GIT_ENV):
        return os.environ[GIT_ENV]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "none"
    return head + ("-dirty" if dirty else "")


def params_sha256(params: Params) -> str:
    """A stable hash of every parameter value."""
    text = json.dumps(params.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists become their JSON text."""
    flat: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            flat.update(flatten(v, key + "."))
        elif isinstance(v, list | tuple):
            flat[key] = json.dumps(v)
        else:
            flat[key] = v
    return flat


def numeric(d: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The numeric leaves of a nested metrics mapping, with dotted keys.

    MLflow names allow no '+': ``transfer+omnia`` becomes ``transfer_omnia``.
    """
    return {
        k.replace("+", "_"): float(v)
        for k, v in flatten(d, prefix).items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }


@dataclass
class Tracker:
    """One pipeline run's view of the tracking store (see the module docstring)."""

    uri: str
    client: MlflowClient
    experiment_id: str
    parent_run_id: str
    lineage: dict[str, str]
    cfg: TrackingParams
    _runs: dict[str, str] = field(default_factory=dict)

    @classmethod
    def open(cls, params: Params, manifest: Path) -> Tracker:
        """Check the store, then find or create the experiment and this pipeline's parent run."""
        cfg = params.tracking
        uri, client, exp_id = _store(params)
        lineage = {
            "git_commit": git_commit(),
            "params_sha256": params_sha256(params),
            "manifest_sha256": sha256_file(manifest),
        }
        key = (
            os.environ.get(PIPELINE_ENV)
            or hashlib.sha256(json.dumps(lineage, sort_keys=True).encode()).hexdigest()[:16]
        )
        lineage[TAG_PIPELINE] = key
        found = _pipeline_runs(client, exp_id, key)
        if found:
            parent = found[0].info.run_id
        else:
            run = client.create_run(
                exp_id,
                run_name=f"pipeline-{key[:8]}",
                tags={**lineage, TAG_KIND: "pipeline"},
            )
            parent = run.info.run_id
            client.log_batch(parent, params=_params_list(flatten(params.model_dump(mode="json"))))
            client.set_terminated(parent, "FINISHED")
        return cls(uri, client, exp_id, parent, lineage, cfg)

    def variant_run(self, name: str) -> str:
        """The nested run of model ``name`` in this pipeline run (created on first use)."""
        if name in self._runs:
            return self._runs[name]
        found = self.client.search_runs(
            [self.experiment_id],
            f"tags.{TAG_PIPELINE} = '{self.lineage[TAG_PIPELINE]}' "
            f"and tags.{TAG_VARIANT} = '{name}'",
        )
        if found:
            run_id = found[0].info.run_id
        else:
            run = self.client.create_run(
                self.experiment_id,
                run_name=name,
                tags={
                    **self.lineage,
                    TAG_VARIANT: name,
                    TAG_KIND: "variant",
                    "mlflow.parentRunId": self.parent_run_id,
                },
            )
            run_id = run.info.run_id
        self._runs[name] = run_id
        return run_id

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        """Log (flattened) params; a value already logged with the same content is skipped."""
        have = self.client.get_run(run_id).data.params
        items = {k: v for k, v in flatten(params).items() if have.get(k) != str(v)}
        if items:
            self.client.log_batch(run_id, params=_params_list(items))

    def log_metrics(self, run_id: str, metrics: Mapping[str, Any], step: int = 0) -> None:
        """Log the numeric leaves of a nested mapping (dotted keys) at ``step``."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, v, now, step) for k, v in numeric(metrics).items()]
        for i in range(0, len(batch), 900):  # the REST API takes at most 1000 per call
            self.client.log_batch(run_id, metrics=batch[i : i + 900])

    def log_artifacts(self, run_id: str, paths: list[Path], folder: str | None = None) -> None:
        """Upload files (missing ones are skipped) under ``folder`` of the run's artifacts."""
        for p in paths:
            if p.is_file():
                self.client.log_artifact(run_id, str(p), folder)

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        for k, v in tags.items():
            self.client.set_tag(run_id, k, str(v))

    def epoch_logger(self, run_id: str) -> Callable[[list[Any]], None]:
        """A training ``on_epoch`` callback logging the last epoch's loss, parts and speed."""
        return lambda history: self._log_epoch(run_id, history[-1])

    def log_history(self, run_id: str, history: list[Any]) -> None:
        """Log the epochs the run does not hold yet (those trained before a resume)."""
        have = {m.step for m in self.client.get_metric_history(run_id, "train.loss")}
        for h in history:
            if h.epoch not in have:
                self._log_epoch(run_id, h)

    def _log_epoch(self, run_id: str, h: Any) -> None:
        train = {"loss": h.loss, "images_per_s": h.images_per_s, "seconds": h.seconds, **h.parts}
        self.log_metrics(run_id, {"train": train}, step=h.epoch)

    def log_model(
        self,
        run_id: str,
        segmenter: Segmenter,
        classes: tuple[str, ...],
        image_shape: tuple[int, int, int],
        tags: Mapping[str, Any] | None = None,
    ) -> dict[str, str]:
        """Log ``segmenter`` as the run's PyTorch model (served: images -> probabilities).

        The model is logged **self-contained**: a TorchScript graph of
        :class:`~mentoring.models.deploy.DeployedSegmenter` (traced; any batch size and image
        size), so ``mlflow models serve`` and ``mlflow.pyfunc.load_model`` need torch and numpy
        only, not this package. The class names and the output stride are in the model's
        metadata (``classes``, ``stride``).

        Returns ``{"model_uri", "model_id", "run_id"}``.
        """
        import mlflow
        import numpy as np
        import torch
        from mlflow.models import ModelSignature
        from mlflow.types import Schema, TensorSpec

        from mentoring.models.deploy import DeployedSegmenter, trace

        served = DeployedSegmenter(segmenter, classes).cpu().eval()
        example = np.zeros((1, *image_shape), np.uint8)
        graph = trace(served, image_shape)
        with torch.no_grad():
            out = graph(torch.from_numpy(example)).numpy()
        signature = ModelSignature(
            # unnamed tensors: pyfunc passes a plain ndarray (named ones become a dict)
            # uint8 pixels, what a camera gives (the graph scales them as the stages do)
            inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, *image_shape))]),
            outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *out.shape[1:]))]),
        )
        # a TorchScript graph is saved with torch.jit.save ("pickle" is MLflow's name for it;
        # its default "pt2" is for eager modules); MLflow warns about pickle on every save
        logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pytorch.log_model(
                graph,
                name="model",
                serialization_format="pickle",
                signature=signature,
                input_example=example,
                pip_requirements=[
                    f"torch=={torch.__version__.split('+')[0]}",
                    f"numpy=={np.__version__}",
                ],
                metadata={"classes": list(classes), "stride": int(segmenter.stride)},
                tags={k: str(v) for k, v in {**self.lineage, **(tags or {})}.items()},
            )
        return {"model_uri": info.model_uri, "model_id": info.model_id or "", "run_id": run_id}

    def run_url(self, run_id: str) -> str:
        """Where to look at a run: its UI page for a server, its id otherwise."""
        if self.uri.startswith(("http://", "https://")):
            return f"{self.uri.rstrip('/')}/#/experiments/{self.experiment_id}/runs/{run_id}"
        return f"run {run_id} in {self.uri} (mlflow ui --backend-store-uri {self.uri})"


def _store(params: Params) -> tuple[str, MlflowClient, str]:
    """(uri, client, experiment id) of the tracking store, checked and created as needed."""
    cfg = params.tracking
    uri = resolve_uri(cfg)
    check_reachable(uri, cfg.timeout_s)
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(uri)  # the fluent log_model writes through it
    mlflow.set_registry_uri(uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    try:
        exp = client.get_experiment_by_name(cfg.experiment)
        exp_id = (
            exp.experiment_id
            if exp is not None
            else client.create_experiment(cfg.experiment, artifact_location=artifact_root(uri, cfg))
        )
    except mlflow.exceptions.MlflowException as exc:
        raise TrackingError(f"tracking store {uri}: {exc}") from None
    return uri, client, exp_id


def _pipeline_runs(client: MlflowClient, exp_id: str, key: str) -> list[Any]:
    """The parent run(s) of pipeline run ``key`` (one at most, by construction)."""
    runs: list[Any] = client.search_runs(
        [exp_id], f"tags.{TAG_PIPELINE} = '{key}' and tags.{TAG_KIND} = 'pipeline'"
    )
    return runs


def open_pipeline_run(params: Params, key: str, tags: Mapping[str, Any]) -> str:
    """The parent run of pipeline run ``key`` (a Kubeflow run id), RUNNING, with ``tags``.

    The stages of that run join it through ``MENTORING_PIPELINE_RUN=key``
    (:meth:`Tracker.open`); :func:`close_pipeline_run` ends it. Idempotent: a retried task finds
    the same run.
    """
    _, client, exp_id = _store(params)
    found = _pipeline_runs(client, exp_id, key)
    all_tags = {
        "git_commit": git_commit(),
        "params_sha256": params_sha256(params),
        **{k: str(v) for k, v in tags.items()},
        TAG_PIPELINE: key,
        TAG_KIND: "pipeline",
    }
    if found:
        run_id: str = found[0].info.run_id
        for k, v in all_tags.items():
            client.set_tag(run_id, k, v)
        client.update_run(run_id, status="RUNNING")
        return run_id
    run = client.create_run(exp_id, run_name=f"pipeline-{key[:8]}", tags=all_tags)
    client.log_batch(run.info.run_id, params=_params_list(flatten(params.model_dump(mode="json"))))
    return str(run.info.run_id)


def close_pipeline_run(params: Params, key: str, status: str) -> str:
    """End the parent run of ``key``: ``FINISHED``, or ``FAILED`` when a task failed.

    Returns the run id. Raises :class:`TrackingError` when the run does not exist.
    """
    _, client, exp_id = _store(params)
    found = _pipeline_runs(client, exp_id, key)
    if not found:
        raise TrackingError(f"no pipeline run with {TAG_PIPELINE} {key!r} to close")
    run_id = str(found[0].info.run_id)
    client.set_terminated(run_id, status)
    return run_id


def _params_list(items: Mapping[str, Any]) -> list[Any]:
    from mlflow.entities import Param

    # MLflow caps a param value at 6000 characters
    return [Param(k, str(v)[:6000]) for k, v in items.items()]
