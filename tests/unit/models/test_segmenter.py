"""Tests of the segmenter network and its storage (src/mentoring/models/)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from mentoring.models.segmenter import Segmenter
from mentoring.models.store import load_model, save_model

SIZE = 64


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.mark.parametrize("context_stages", [0, 1, 2])
@pytest.mark.parametrize("stride", [4, 8, 16])
def test_output_and_feature_shapes(stride: int, context_stages: int) -> None:
    model = Segmenter(
        in_channels=1, n_classes=5, width=8, depth=2, stride=stride, context_stages=context_stages
    ).eval()
    x = torch.rand(2, 1, SIZE, SIZE + 32)  # non-square too
    h, w = SIZE // stride, (SIZE + 32) // stride
    with torch.no_grad():
        out = model(x)
        feats = model.features(x)
    assert out.shape == (2, 5, h, w)
    assert out.dtype == torch.float32
    assert feats.shape == (2, model.feature_channels, h, w)
    assert model.stride == stride
    assert torch.isfinite(out).all()


def test_feature_channels_follow_width() -> None:
    # stem width 8, doubled per halving: at stride 8 the output stage is the third (8 * 4 = 32)
    assert Segmenter(width=8, stride=8).feature_channels == 32
    assert Segmenter(width=8, stride=2).feature_channels == 8
    # capped at 8 * width: 4, 8, 16, 32, 32 (not 64) at stride 32
    assert Segmenter(width=4, stride=32, context_stages=0).feature_channels == 32


def test_forward_is_head_of_features() -> None:
    model = Segmenter(width=8, stride=8).eval()
    x = torch.rand(3, 1, SIZE, SIZE)
    with torch.no_grad():
        out = model(x)
        expected = model.head(model.features(x))
        shifted = model.head(model.features(x + 0.5))
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    assert not torch.allclose(out, shifted)  # features see the raw image, not a normalised one


def test_rgb_input() -> None:
    model = Segmenter(in_channels=3, n_classes=6, width=8, stride=8).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, SIZE, SIZE))
    assert out.shape == (2, 6, SIZE // 8, SIZE // 8)
    with pytest.raises(RuntimeError):
        model(torch.rand(2, 1, SIZE, SIZE))


@pytest.mark.parametrize("stride", [0, 1, 3, 6, 12, 24])
def test_non_power_of_two_stride_raises(stride: int) -> None:
    with pytest.raises(ValueError, match="power of two"):
        Segmenter(stride=stride)


@pytest.mark.parametrize("prior", [0.01, 0.2])
def test_prior_sets_initial_mean_output(prior: float) -> None:
    model = Segmenter(width=8, stride=8, prior=prior).eval()
    bias = model.classifier.bias
    assert bias is not None
    torch.testing.assert_close(
        bias, torch.full_like(bias, math.log(prior / (1 - prior))), rtol=1e-6, atol=1e-6
    )
    with torch.no_grad():
        p = torch.sigmoid(model(torch.rand(4, 1, SIZE, SIZE)))
    assert abs(float(p.mean()) - prior) < 0.25 * prior
    assert float(p.max()) < 3 * prior


def _trained_once(model: Segmenter) -> Segmenter:
    """One optimiser step in train mode, so weights and BatchNorm statistics are non-default."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    loss = model(torch.rand(4, model.in_channels, SIZE, SIZE)).square().mean()
    loss.backward()
    opt.step()
    return model.eval()


def test_save_load_round_trip(tmp_path: Path) -> None:
    arch = {
        "in_channels": 1,
        "n_classes": 4,
        "width": 8,
        "depth": 1,
        "stride": 4,
        "context_stages": 2,
        "prior": 0.05,
    }
    model = _trained_once(Segmenter(**arch))
    classes = ("scratch", "crack", "dent", "hole")
    path = tmp_path / "models" / "baseline.pt"
    save_model(path, model, arch, classes, meta={"epochs": 3, "map": 0.5})
    assert path.is_file()
    assert not [p for p in path.parent.iterdir() if p != path]  # no temporary left behind

    loaded, record = load_model(path)
    assert isinstance(loaded, Segmenter)
    assert not loaded.training
    assert record == {"arch": arch, "classes": list(classes), "meta": {"epochs": 3, "map": 0.5}}
    x = torch.rand(2, 1, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    for (name, a), (_, b) in zip(
        model.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


def test_save_without_meta(tmp_path: Path) -> None:
    arch = {"n_classes": 2, "width": 4, "stride": 2, "context_stages": 0}
    save_model(tmp_path / "m.pt", Segmenter(**arch), arch, ("hole", "chip"))
    _, record = load_model(tmp_path / "m.pt")
    assert record["meta"] == {}
    assert record["classes"] == ["hole", "chip"]


def test_load_garbage_file_names_it(tmp_path: Path) -> None:
    path = tmp_path / "broken.pt"
    path.write_bytes(b"definitely not a torch checkpoint" * 20)
    with pytest.raises(ValueError) as exc:
        load_model(path)
    assert str(path) in str(exc.value)
    assert "cannot load model" in str(exc.value)


def test_load_missing_file_names_it(tmp_path: Path) -> None:
    path = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError, match=r"nope\.pt"):
        load_model(path)


def test_load_torch_file_that_is_not_a_model_names_it(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    torch.save({"a": 1}, path)
    with pytest.raises(ValueError, match=r"other\.pt.*not a mentoring model"):
        load_model(path)


def test_load_weights_not_matching_arch_names_it(tmp_path: Path) -> None:
    path = tmp_path / "mismatch.pt"
    model = Segmenter(in_channels=1, n_classes=2, width=4, depth=1)
    save_model(path, model, {"in_channels": 1, "n_classes": 3, "width": 4, "depth": 1}, ("a", "b"))
    with pytest.raises(ValueError, match=r"mismatch\.pt.*do not match"):
        load_model(path)


def test_a_model_file_with_a_nan_weight_is_refused(tmp_path: Path) -> None:
    """What evaluate, mining and the training stages load: a diverged model never scores."""
    arch = {"in_channels": 1, "n_classes": 2, "width": 4, "depth": 1, "stride": 8}
    model = Segmenter(**arch)
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] = float("nan")
    path = tmp_path / "nan.pt"
    save_model(path, model, arch, ("a", "b"))
    with pytest.raises(ValueError, match="NaN or infinite") as exc:
        load_model(path)
    assert str(path) in str(exc.value)


def test_predict_refuses_non_finite_outputs() -> None:
    from mentoring.evaluation import predict

    model = Segmenter(in_channels=1, n_classes=2, width=4, depth=1, stride=8)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("inf"))
    with pytest.raises(ValueError, match=r"NaN or infinite values on images 0\.\.2"):
        predict(model, torch.zeros(2, 1, 16, 16, dtype=torch.uint8))
