"""The MLflow model registry: versions, the ``champion`` alias and the promotion gate.

This is the only module that talks to the registry. Aliases only (registry stages are deprecated
in MLflow 3):

- ``champion``: the deployed model (mining uses it; ``models:/defect-segmenter@champion``);
- ``previous-champion``: the one it replaced (``mentoring registry rollback`` goes back to it);
- ``challenger``: the last candidate the gate looked at.

The **promotion gate** (:func:`decide`): a candidate replaces the champion only if, on the same
current evaluation sets, its new-domain mAP is higher by at least ``min_gain`` and its
original-domain mAP is not lower by more than ``max_original_drop``; the mAPs are those of
``promotion.gate_level`` (``defect``, the default, or ``cell``). Every decision and its
reasons are written as tags of the candidate's version. The registered model's
``champion_history`` tag keeps the versions that held the alias, oldest first, so rollbacks can
go back more than one step.
"""

from __future__ import annotations

import getpass
import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from mentoring.config import Params
    from mentoring.feedback.schema import ModelRef
    from mentoring.models.segmenter import Segmenter

CHAMPION = "champion"
PREVIOUS = "previous-champion"
CHALLENGER = "challenger"
HISTORY_TAG = "champion_history"


class RegistryError(RuntimeError):
    """The registry is in a state we cannot act on (broken alias, unknown version...)."""


@dataclass(frozen=True)
class Decision:
    """The gate's verdict on a candidate against the champion (mAP per domain)."""

    promote: bool
    reasons: list[str]
    candidate: dict[str, float]  # {"original": mAP, "new": mAP}
    champion: dict[str, float] | None
    min_gain: float
    max_original_drop: float
    first_model: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide(
    candidate: dict[str, float],
    champion: dict[str, float] | None,
    min_gain: float,
    max_original_drop: float,
    level: str = "",
) -> Decision:
    """The promotion gate on per-domain mAPs ``{"original": .., "new": ..}``.

    Promote when there is no champion, or when both hold:
      1. new-domain gain >= ``min_gain``;
      2. original-domain drop <= ``max_original_drop``.
    Every check yields a reason, passed or failed, so a refusal explains itself. ``level``
    (``defect`` or ``cell``) names the evaluation level of the mAPs, in the reasons and in
    ``Decision.extra``.
    """
    extra = {"level": level} if level else {}
    if champion is None:
        return Decision(
            True,
            ["no champion yet: the first model becomes champion"],
            candidate,
            None,
            min_gain,
            max_original_drop,
            first_model=True,
            extra=extra,
        )
    gain = candidate["new"] - champion["new"]
    drop = champion["original"] - candidate["original"]
    gain_ok = gain >= min_gain - 1e-12
    drop_ok = drop <= max_original_drop + 1e-12
    what = f"{level}-level mAP" if level else "mAP"
    reasons = [
        f"new-domain {what} {candidate['new']:.4f} vs champion {champion['new']:.4f}: "
        f"gain {gain:+.4f} {'>=' if gain_ok else '<'} required {min_gain:.4f}",
        f"original-domain {what} {candidate['original']:.4f} vs champion "
        f"{champion['original']:.4f}: drop {drop:+.4f} {'<=' if drop_ok else '>'} "
        f"tolerated {max_original_drop:.4f}",
    ]
    return Decision(
        gain_ok and drop_ok,
        reasons,
        candidate,
        champion,
        min_gain,
        max_original_drop,
        extra=extra,
    )


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


class Registry:
    """One registered model (``tracking.registered_model``) of a tracking/registry store."""

    def __init__(self, uri: str, name: str) -> None:
        from mlflow import MlflowClient

        self.uri, self.name = uri, name
        self.client: MlflowClient = MlflowClient(tracking_uri=uri, registry_uri=uri)

    @classmethod
    def from_params(cls, params: Params) -> Registry:
        """The registry of ``tracking`` (``MLFLOW_TRACKING_URI`` wins), checked reachable."""
        from mentoring.tracking import check_reachable, resolve_uri

        uri = resolve_uri(params.tracking)
        check_reachable(uri, params.tracking.timeout_s)
        return cls(uri, params.tracking.registered_model)

    # reading -----------------------------------------------------------------------------
    def exists(self) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(self.name)
        except MlflowException:
            return False
        return True

    def versions(self) -> list[ModelVersion]:
        """Every version, newest first."""
        found = self.client.search_model_versions(f"name = '{self.name}'")
        return sorted(found, key=lambda v: int(v.version), reverse=True)

    def version(self, version: str | int) -> ModelVersion:
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_model_version(self.name, str(version))
        except MlflowException as exc:
            raise RegistryError(
                f"{self.name}: no version {version} in {self.uri} ({exc.error_code})"
            ) from None

    def aliases(self) -> dict[str, str]:
        """alias -> version of the registered model (empty when it does not exist yet)."""
        if not self.exists():
            return {}
        return {a: str(v) for a, v in self.client.get_registered_model(self.name).aliases.items()}

    def alias(self, alias: str) -> ModelVersion | None:
        """The version an alias points to; None when unset.

        Raises:
            RegistryError: the alias points to a version that no longer exists.
        """
        target = self.aliases().get(alias)
        if target is None:
            return None
        try:
            return self.version(target)
        except RegistryError:
            raise RegistryError(
                f"{self.name}@{alias} points to version {target}, which does not exist any "
                f"more (deleted?); set it with `mentoring registry promote VERSION`"
            ) from None

    def champion(self) -> ModelVersion | None:
        """The champion version; None before the first promotion.

        Raises:
            RegistryError: the alias is broken, or gone while the history says a champion was
                set (its version was deleted): the pipeline must not silently start over.
        """
        mv = self.alias(CHAMPION)
        hist = self.history()
        if mv is None and hist:
            raise RegistryError(
                f"{self.name}: the champion alias is gone but version {hist[-1]} held it "
                f"(champion_history {hist}); was it deleted? Choose the champion with "
                f"`mentoring registry promote VERSION` or `mentoring registry rollback`"
            )
        return mv

    def history(self) -> list[str]:
        """Versions that held ``champion``, oldest first."""
        if not self.exists():
            return []
        tags = self.client.get_registered_model(self.name).tags
        return list(json.loads(tags.get(HISTORY_TAG, "[]")))

    def load(self, version: str | int) -> tuple[Segmenter, list[str]]:
        """The torch segmenter of a version and its class names."""
        import mlflow
        import mlflow.pytorch

        self.version(version)  # a clear error for an unknown version
        # models:/ URIs resolve through the process-wide URIs: point them at this store
        before = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
        mlflow.set_tracking_uri(self.uri)
        mlflow.set_registry_uri(self.uri)
        uri = f"models:/{self.name}/{version}"
        try:
            served = mlflow.pytorch.load_model(uri, map_location="cpu")
            metadata = mlflow.models.get_model_info(uri).metadata or {}
        finally:
            mlflow.set_tracking_uri(before[0])
            mlflow.set_registry_uri(before[1])
        # a TorchScript graph (self-contained) keeps its class names in the model's metadata;
        # versions logged before that are pickled modules that carry them
        classes = metadata.get("classes") or getattr(served, "classes", None)
        if not classes:
            raise RegistryError(f"{self.name} version {version}: no class names in the model")
        from mentoring.models.store import non_finite

        segmenter = served.segmenter.eval()
        bad = non_finite(segmenter.state_dict())
        if bad:  # the gate must never compare (or promote) a diverged model
            raise RegistryError(
                f"{self.name} version {version}: weights {bad[:5]} hold NaN or infinite values "
                f"(a diverged training); it cannot be scored, promoted or served"
            )
        return segmenter, list(classes)

    def resolve(self, ref: str) -> str:
        """The version a ``models:/<name>@<alias>`` or ``models:/<name>/<version>`` URI names.

        Raises:
            RegistryError: another registered model, an unset alias or an unknown version.
        """
        body = ref.removeprefix("models:/")
        name, sep, alias = body.partition("@")
        if not sep:
            name, _, alias = body.partition("/")
        if name != self.name or not alias:
            raise RegistryError(
                f"{ref}: expected models:/{self.name}@<alias> or models:/{self.name}/<version>"
            )
        if sep:
            mv = self.alias(alias)
            if mv is None:
                raise RegistryError(f"{ref}: alias {alias!r} is not set on {self.name}")
            return str(mv.version)
        return str(self.version(alias).version)

    # writing -----------------------------------------------------------------------------
    def register(self, model_uri: str, run_id: str, tags: dict[str, Any]) -> tuple[Any, bool]:
        """Register a logged model as a new version; return (version, created).

        Idempotent: a version with the same ``fingerprint`` tag (same training inputs, hence
        the same weights) is returned instead of registering a duplicate.
        """
        from mlflow.exceptions import MlflowException

        if not self.exists():
            try:
                self.client.create_registered_model(
                    self.name, description="mentoring defect segmenter (see its versions' tags)"
                )
            except MlflowException:  # created meanwhile by another process
                pass
        fp = tags.get("fingerprint")
        if fp:
            for v in self.versions():
                if v.tags.get("fingerprint") == str(fp):
                    return v, False
        str_tags = {k: str(v) for k, v in tags.items()}
        model_id = model_uri.split("/")[-1] if model_uri.startswith("models:/m-") else None
        mv = self.client.create_model_version(
            self.name, model_uri, run_id=run_id, tags=str_tags, model_id=model_id
        )
        return mv, True

    def set_tags(self, version: str | int, tags: dict[str, Any]) -> None:
        for k, v in tags.items():
            self.client.set_model_version_tag(self.name, str(version), k, str(v))

    def promote(
        self,
        version: str | int,
        reason: str,
        by: str | None = None,
        decision: Decision | None = None,
    ) -> str | None:
        """Make ``version`` the champion; the old one keeps ``previous-champion``.

        Records who, when and why on the version. Returns the previous champion's version.
        """
        version = str(self.version(version).version)
        current = self.aliases().get(CHAMPION)
        if current == version:
            return current
        if current is not None:
            self.client.set_registered_model_alias(self.name, PREVIOUS, current)
        self.client.set_registered_model_alias(self.name, CHAMPION, version)
        self._set_history([*self.history(), version])
        self.set_tags(
            version,
            {
                "promoted_at": _now(),
                "promoted_by": by or getpass.getuser(),
                "promotion_reason": reason,
                **({"gate_reasons": " | ".join(decision.reasons)} if decision else {}),
            },
        )
        return current

    def rollback(self, reason: str, by: str | None = None) -> tuple[str | None, str]:
        """Give ``champion`` back to the version before it; return (demoted, restored).

        Raises:
            RegistryError: no earlier champion to go back to.
        """
        hist = self.history()
        current = self.aliases().get(CHAMPION)
        if current is not None and hist and hist[-1] == current:
            hist = hist[:-1]  # the version being demoted
        existing = {str(v.version) for v in self.versions()}
        hist = [h for h in hist if h in existing and h != current]  # skip deleted versions
        if not hist:
            raise RegistryError(
                f"{self.name}: champion is {f'version {current}' if current else 'unset'} and "
                f"there is no earlier champion to roll back to (champion_history "
                f"{self.history()})"
            )
        restored = hist[-1]
        self.client.set_registered_model_alias(self.name, CHAMPION, restored)
        if len(hist) > 1:
            self.client.set_registered_model_alias(self.name, PREVIOUS, hist[-2])
        else:
            self.client.delete_registered_model_alias(self.name, PREVIOUS)
        self._set_history(hist)
        who = by or getpass.getuser()
        if current is not None:
            self.set_tags(
                current,
                {"rolled_back_at": _now(), "rolled_back_by": who, "rollback_reason": reason},
            )
        self.set_tags(restored, {"restored_at": _now(), "restored_by": who})
        return current, restored

    def set_challenger(self, version: str | int) -> None:
        self.client.set_registered_model_alias(self.name, CHALLENGER, str(version))

    def _set_history(self, versions: list[str]) -> None:
        self.client.set_registered_model_tag(self.name, HISTORY_TAG, json.dumps(versions))


def open_model(
    params: Params, spec: str | Path, device: str, name: str
) -> tuple[torch.nn.Module, tuple[str, ...], ModelRef]:
    """A model file, or a registry URI (``models:/defect-segmenter@champion``, ``.../3``).

    Returns the model, its class names and the reference written into the tasks (the file's
    sha256, or the sha256 of the registry version's weights).
    """
    from mentoring.feedback.schema import ModelRef
    from mentoring.io import sha256_file
    from mentoring.models.store import load_model
    from mentoring.training.loop import tensor_digest

    if str(spec).startswith("models:/"):
        registry = Registry.from_params(params)
        version = registry.resolve(str(spec))
        model, classes = registry.load(version)
        digest = tensor_digest(*model.state_dict().values())
        ref = ModelRef(name=f"{registry.name} v{version}", path=str(spec), sha256=digest)
        return model.to(device).eval(), tuple(classes), ref
    model, record = load_model(spec, device)
    ref = ModelRef(name=name, path=str(spec), sha256=sha256_file(Path(spec)))
    return model, tuple(record["classes"]), ref


def export_model(params: Params, ref: str, path: Path) -> dict[str, Any]:
    """Save registry model ``ref`` (``models:/name@champion``, ``models:/name/3``) as a model
    file at ``path`` (what the training stages read); returns its version and tags.

    The architecture is this params' ``model`` section; weights of another architecture fail
    with the version named.
    """
    from mentoring.models.store import save_model
    from mentoring.training.outputs import model_arch

    registry = Registry.from_params(params)
    version = registry.resolve(ref)
    model, classes = registry.load(version)
    arch = model_arch(params)
    try:
        from mentoring.models.segmenter import Segmenter

        Segmenter(**arch).load_state_dict(model.state_dict())
    except RuntimeError as exc:
        raise RegistryError(
            f"{registry.name} version {version} does not match params' model section: {exc}"
        ) from None
    tags = dict(registry.version(version).tags)
    save_model(path, model, arch, tuple(classes), meta={"name": ref, "version": version})
    return {"version": str(version), "uri": ref, "variant": tags.get("variant", "")}
