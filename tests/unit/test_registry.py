"""The promotion gate on hand-made metrics, and the registry's aliases on a real sqlite store."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mentoring.registry import CHAMPION, PREVIOUS, Registry, RegistryError, decide
from mentoring.tracking import artifact_root

GATE = {"min_gain": 0.01, "max_original_drop": 0.02}


def test_first_model_becomes_champion() -> None:
    d = decide({"original": 0.9, "new": 0.6}, None, **GATE)
    assert d.promote and d.first_model
    assert "no champion" in d.reasons[0]


def test_promotes_a_better_candidate() -> None:
    d = decide({"original": 0.93, "new": 0.86}, {"original": 0.945, "new": 0.69}, **GATE)
    assert d.promote and not d.first_model
    assert "gain +0.1700 >= required 0.0100" in d.reasons[0]
    assert "drop +0.0150 <= tolerated 0.0200" in d.reasons[1]


def test_refuses_a_regression_on_the_original_domain() -> None:
    d = decide({"original": 0.80, "new": 0.90}, {"original": 0.945, "new": 0.69}, **GATE)
    assert not d.promote
    assert "drop +0.1450 > tolerated 0.0200" in d.reasons[1]


def test_refuses_too_small_a_gain() -> None:
    d = decide({"original": 0.95, "new": 0.695}, {"original": 0.945, "new": 0.69}, **GATE)
    assert not d.promote
    assert "gain +0.0050 < required 0.0100" in d.reasons[0]
    assert "<= tolerated" in d.reasons[1]  # the other check passed, and says so


def test_gate_edges_are_inclusive() -> None:
    d = decide({"original": 0.92, "new": 0.71}, {"original": 0.94, "new": 0.70}, **GATE)
    assert d.promote  # gain == min_gain, drop == max_original_drop


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(self.conv(x))


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    """A registry in a fresh sqlite store with three logged (tiny) models registered."""
    import mlflow
    import mlflow.pytorch
    from mlflow import MlflowClient

    from mentoring.config import TrackingParams

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri, uri)
    exp = client.create_experiment("t", artifact_location=artifact_root(uri, TrackingParams()))
    mlflow.set_tracking_uri(uri)
    reg = Registry(uri, "seg")
    for i in range(3):
        with mlflow.start_run(experiment_id=exp) as run:
            info = mlflow.pytorch.log_model(
                Tiny(), name="model", serialization_format="pickle", pip_requirements=["torch"]
            )
        mv, created = reg.register(info.model_uri, run.info.run_id, {"fingerprint": f"fp{i}"})
        assert created and str(mv.version) == str(i + 1)
    return reg


def test_registration_is_idempotent_on_fingerprint(registry: Registry) -> None:
    v1 = registry.version(1)
    again, created = registry.register(v1.source, v1.run_id or "", {"fingerprint": "fp0"})
    assert not created and str(again.version) == "1"
    assert [str(v.version) for v in registry.versions()] == ["3", "2", "1"]


def test_promote_and_rollback_keep_previous_champion(registry: Registry) -> None:
    assert registry.champion() is None
    assert registry.promote(1, "first", by="alice") is None
    assert registry.promote(2, "better", by="bob") == "1"
    assert registry.aliases() == {CHAMPION: "2", PREVIOUS: "1"}
    tags = registry.version(2).tags
    assert tags["promoted_by"] == "bob" and tags["promotion_reason"] == "better"
    registry.promote(3, "even better", by="carol")
    assert registry.history() == ["1", "2", "3"]

    assert registry.rollback("v3 rejects good parts", by="dave") == ("3", "2")
    assert registry.aliases() == {CHAMPION: "2", PREVIOUS: "1"}
    assert registry.version(3).tags["rollback_reason"] == "v3 rejects good parts"
    assert registry.rollback("again", by="dave") == ("2", "1")
    assert registry.aliases() == {CHAMPION: "1"}
    with pytest.raises(RegistryError, match="no earlier champion"):
        registry.rollback("once more")


def test_unknown_version_is_a_clear_error(registry: Registry) -> None:
    with pytest.raises(RegistryError, match="seg: no version 42"):
        registry.promote(42, "typo")


def test_deleted_champion_is_reported_and_rollback_recovers(registry: Registry) -> None:
    registry.promote(1, "first")
    registry.promote(2, "second")
    registry.client.delete_model_version("seg", "2")  # MLflow drops the alias with the version
    with pytest.raises(RegistryError, match="champion alias is gone but version 2 held it"):
        registry.champion()
    demoted, restored = registry.rollback("v2 was deleted")
    assert (demoted, restored) == (None, "1")
    assert registry.champion() is not None
    assert registry.aliases()[CHAMPION] == "1"


def test_load_returns_the_torch_module(tmp_path: Path) -> None:
    """Registry.load on a DeployedSegmenter gives back the segmenter and the class names."""
    import mlflow
    import mlflow.pytorch

    from mentoring.config import TrackingParams
    from mentoring.models.deploy import DeployedSegmenter
    from mentoring.models.segmenter import Segmenter

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    exp = mlflow.create_experiment("t", artifact_location=artifact_root(uri, TrackingParams()))
    seg = Segmenter(n_classes=2, width=4, depth=1).eval()
    with mlflow.start_run(experiment_id=exp) as run:
        info = mlflow.pytorch.log_model(
            DeployedSegmenter(seg, ("a", "b")),
            name="model",
            serialization_format="pickle",
            pip_requirements=["torch"],
        )
    reg = Registry(uri, "seg")
    mv, _ = reg.register(info.model_uri, run.info.run_id, {})
    loaded, classes = reg.load(mv.version)
    assert classes == ["a", "b"]
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), seg(x))
        pixels = torch.randint(0, 256, (2, 1, 32, 32), dtype=torch.uint8)
        served = DeployedSegmenter(seg, ("a", "b"))
        assert torch.equal(served(pixels), torch.sigmoid(seg(pixels.float() / 255.0)))


def test_resolve_registry_uris(registry: Registry) -> None:
    registry.promote(2, "test")
    assert registry.resolve("models:/seg@champion") == "2"
    assert registry.resolve("models:/seg/3") == "3"
    with pytest.raises(RegistryError, match="alias 'challenger' is not set"):
        registry.resolve("models:/seg@challenger")
    with pytest.raises(RegistryError, match="expected models:/seg@<alias>"):
        registry.resolve("models:/other@champion")
    with pytest.raises(RegistryError, match="no version 9"):
        registry.resolve("models:/seg/9")


def test_gate_names_its_level() -> None:
    d = decide({"original": 0.9, "new": 0.8}, {"original": 0.9, "new": 0.7}, **GATE, level="defect")
    assert d.promote and d.extra == {"level": "defect"}
    assert d.reasons[0].startswith("new-domain defect-level mAP 0.8000")
