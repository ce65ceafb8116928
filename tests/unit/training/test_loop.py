"""The training loop: augmentation consistency, determinism, checkpoint/resume."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from mentoring.config import TrainParams
from mentoring.data.batch import Batch, SingleSource, augment, dihedral
from mentoring.losses import supervised_bce
from mentoring.models.segmenter import Segmenter
from mentoring.training.loop import fingerprint, train


def _data(n: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 255, (n, 1, 32, 32), generator=g, dtype=torch.uint8)
    # the target of a cell is a deterministic function of its pixels: bright cells are "defects"
    cells = images.float().reshape(n, 1, 4, 8, 4, 8).mean(dim=(3, 5))
    med = cells.flatten(1).median(dim=1).values.reshape(n, 1, 1, 1)
    targets = (cells > med).to(torch.uint8).repeat(1, 2, 1, 1)
    return images, targets


def _run(
    model: Segmenter,
    images: torch.Tensor,
    targets: torch.Tensor,
    cfg: TrainParams,
    seed: int,
    **kw: object,
) -> list:
    def loss(batch: Batch, _p: float) -> tuple[torch.Tensor, dict[str, float]]:
        return supervised_bce(model(batch.images), batch.targets), {}

    source = SingleSource(images, targets, cfg.batch_size, cfg.augment)
    return train(model, source, loss, cfg, seed, show_progress=False, **kw)  # type: ignore[arg-type]


def _model(seed: int = 0) -> Segmenter:
    torch.manual_seed(seed)
    return Segmenter(in_channels=1, n_classes=2, width=4, depth=1, stride=8, context_stages=1)


CFG = TrainParams(epochs=3, batch_size=8, lr=1e-2)


def test_dihedral_gives_eight_distinct_transforms() -> None:
    x = torch.arange(16.0).reshape(1, 4, 4)
    outs = {tuple(dihedral(x, k).flatten().tolist()) for k in range(8)}
    assert len(outs) == 8


def test_augment_transforms_image_and_target_alike() -> None:
    images, targets = _data()
    aug_i, aug_t = augment(torch.Generator().manual_seed(3), images, targets)
    cells = aug_i.float().reshape(len(aug_i), 1, 4, 8, 4, 8).mean(dim=(3, 5))
    # the relation target = f(pixels) must survive the transform
    for i in range(len(aug_i)):
        expected = (cells[i, 0] > cells[i, 0].median()).to(torch.uint8)
        assert torch.equal(aug_t[i, 0], expected)
    assert not torch.equal(aug_i, images)  # something was transformed


def test_same_seed_same_weights() -> None:
    images, targets = _data()
    a, b = _model(), _model()
    _run(a, images, targets, CFG, 5)
    _run(b, images, targets, CFG, 5)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k


def test_training_reduces_loss() -> None:
    images, targets = _data()
    hist = _run(_model(), images, targets, TrainParams(epochs=6, batch_size=8, lr=1e-2), 0)
    assert hist[-1].loss < hist[0].loss
    assert [h.epoch for h in hist] == list(range(1, 7))


def test_resume_gives_the_uninterrupted_weights(tmp_path: Path) -> None:
    images, targets = _data()
    fp = fingerprint("cfg")
    full = _model()
    _run(full, images, targets, CFG, 7, checkpoint=tmp_path / "a.pt", fingerprint_value=fp)
    # "killed" after epoch 1: the checkpoint of epoch 1 is what is left
    ck = tmp_path / "b.pt"
    _run(
        _model(),
        images,
        targets,
        CFG.model_copy(update={"epochs": 1}),
        7,
        checkpoint=ck,
        fingerprint_value=fp,
    )
    assert torch.load(ck, weights_only=True)["epoch"] == 1  # plain data only
    resumed = _model(seed=99)  # a different init: the checkpoint must overwrite it
    hist = _run(resumed, images, targets, CFG, 7, checkpoint=ck, fingerprint_value=fp)
    assert [h.epoch for h in hist] == [1, 2, 3]
    for (k, va), vb in zip(full.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k


def test_checkpoint_of_other_config_is_not_resumed(tmp_path: Path) -> None:
    images, targets = _data()
    ck = tmp_path / "c.pt"
    _run(_model(), images, targets, CFG, 1, checkpoint=ck, fingerprint_value="one")
    hist = _run(_model(), images, targets, CFG, 1, checkpoint=ck, fingerprint_value="two")
    assert len(hist) == CFG.epochs  # trained from scratch, not resumed at epoch 3
    assert all(h.seconds > 0 for h in hist)


@pytest.mark.parametrize("shape", [(2, 3, 4, 4), (1, 1, 2, 2)])
def test_supervised_bce_matches_formula(shape: tuple[int, ...]) -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(shape, generator=g)
    targets = (torch.rand(shape, generator=g) > 0.5).float()
    p = torch.sigmoid(logits)
    expected = -(targets * p.log() + (1 - targets) * (1 - p).log()).mean()
    assert torch.allclose(supervised_bce(logits, targets), expected, atol=1e-6)


def test_lr_factor_warms_up_then_decays_to_one_percent() -> None:
    from mentoring.training.loop import lr_factor

    assert lr_factor("constant", 123, 10, 100) == 1.0
    assert [round(lr_factor("cosine", s, 4, 20), 4) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    after = [lr_factor("cosine", s, 4, 20) for s in range(4, 21)]
    assert all(a >= b for a, b in itertools.pairwise(after))
    assert after[-1] == pytest.approx(0.01)


def test_resume_restores_the_schedule(tmp_path: Path) -> None:
    images, targets = _data()
    cfg = CFG.model_copy(update={"lr_schedule": "cosine"})
    ck = tmp_path / "s.pt"
    _run(
        _model(),
        images,
        targets,
        cfg.model_copy(update={"epochs": 1}),
        3,
        checkpoint=ck,
        fingerprint_value="s",
    )
    state = torch.load(ck, weights_only=True)
    assert state["scheduler"]["last_epoch"] == 3  # 24 images / batch 8 = 3 steps


def test_bf16_autocast_trains_close_to_fp32_and_channels_last_like_nchw() -> None:
    """The GPU settings, exercised on CPU: bf16 autocast learns what fp32 learns (within bf16's
    precision), channels_last computes what NCHW computes (within float rounding)."""
    from mentoring.evaluation import predict

    images, targets = _data()
    cfg = TrainParams(epochs=4, batch_size=8, lr=1e-2)
    ref, bf16, nhwc = _model(), _model(), _model()
    h_ref = _run(ref, images, targets, cfg, 3)
    h_bf16 = _run(bf16, images, targets, cfg, 3, precision="bf16")
    h_nhwc = _run(nhwc, images, targets, cfg, 3, channels_last=True)
    assert h_bf16[-1].loss < h_bf16[0].loss  # it learns
    assert h_bf16[-1].loss == pytest.approx(h_ref[-1].loss, rel=0.1)
    assert all(p.dtype == torch.float32 for p in bf16.parameters())  # fp32 master weights
    # NHWC convolutions accumulate in another order (the kernel oneDNN picks per CPU): each
    # step's loss and gradient round differently (float32 u = 6e-8 per term summed), and 12
    # Adam steps amplify it; 1e-3 leaves room for any x86-64/ARM CPU, a layout bug is > 1e-2
    assert h_nhwc[-1].loss == pytest.approx(h_ref[-1].loss, rel=1e-3)
    p_ref = predict(ref, images, 8)
    p_bf16 = predict(ref, images, 8, precision="bf16")
    p_nhwc = predict(ref, images, 8, channels_last=True)
    assert p_bf16.dtype.name == p_ref.dtype.name == "float32"
    assert abs(p_bf16 - p_ref).max() < 0.05 and abs(p_bf16 - p_ref).max() > 0
    assert abs(p_nhwc - p_ref).max() < 1e-5


class _RunsCode:
    """An object whose unpickling would run code: here, write a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.write_text, (self.marker, "ran"))


def test_a_crafted_checkpoint_runs_no_code_and_names_the_file(tmp_path: Path) -> None:
    from mentoring.training.loop import CheckpointError

    images, targets = _data()
    ck, marker = tmp_path / "crafted.pt", tmp_path / "marker"
    state = {"epoch": 1, "fingerprint": "f", "modules": {}, "optimizer": {}, "scheduler": {}}
    torch.save({**state, "history": [_RunsCode(marker)]}, ck)
    with pytest.raises(CheckpointError) as exc:
        _run(_model(), images, targets, CFG, 1, checkpoint=ck, fingerprint_value="f")
    assert not marker.exists()  # nothing was executed
    assert str(ck) in str(exc.value) and "--no-resume" in str(exc.value)


def test_a_truncated_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    from mentoring.training.loop import CheckpointError

    images, targets = _data()
    ck = tmp_path / "t.pt"
    _run(_model(), images, targets, CFG.model_copy(update={"epochs": 1}), 1, checkpoint=ck)
    ck.write_bytes(ck.read_bytes()[: ck.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="delete it, or run again with --no-resume") as exc:
        _run(_model(), images, targets, CFG, 1, checkpoint=ck)
    assert str(ck) in str(exc.value)


def test_a_diverging_training_fails_naming_epoch_and_lr(tmp_path: Path) -> None:
    """A finite but huge rate: the loss turns NaN; no checkpoint of NaN weights is kept."""
    from mentoring.training.loop import DivergedError

    images, targets = _data()
    cfg = TrainParams(epochs=3, batch_size=8, lr=1e30, lr_schedule="constant")
    ck = tmp_path / "d.pt"
    with pytest.raises(DivergedError, match=r"at epoch \d/3, step \d/3.*lr 1e\+30") as exc:
        _run(_model(), images, targets, cfg, 0, checkpoint=ck)
    assert "learning rate" in str(exc.value)
    if ck.exists():  # an epoch finished before the loss went NaN: its weights are finite
        from mentoring.models.store import non_finite

        assert non_finite(torch.load(ck, weights_only=True)["modules"]) == []
