"""Tests of the synthetic part renderer (src/mentoring/line/render.py)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from mentoring.config import DEFECT_CLASSES, NUISANCES, PART_REFS, AcquisitionSetup, Params
from mentoring.line.render import Canvas, render

SIZE = 128
SURFACE_DEFECTS = tuple(c for c in DEFECT_CLASSES if c != "chip")


@pytest.fixture(scope="module")
def canvas() -> Canvas:
    return Canvas(SIZE)


@pytest.fixture(scope="module")
def params() -> Params:
    return Params()


def _render(canvas: Canvas, seed, setup: AcquisitionSetup, **kw):
    line = Params().line
    args = {
        "classes": line.classes,
        "part_refs": line.part_refs,
        "defect_rate": line.defect_rate,
        "max_defects": line.max_defects,
        "channels": 1,
    }
    args.update(kw)
    return render(canvas, np.random.default_rng(seed), setup, **args)


# -- determinism ----------------------------------------------------------------------------------
def test_same_seed_gives_identical_image_and_mask(canvas: Canvas, params: Params) -> None:
    for domain in ("original", "new"):
        setup = params.line.setups[domain]
        a = _render(canvas, [3, 1, 4], setup, defect_rate=1.0)
        b = _render(Canvas(SIZE), [3, 1, 4], setup, defect_rate=1.0)
        assert a.image.dtype == np.float32
        assert a.mask.dtype == np.uint8
        assert a.image.shape == (SIZE, SIZE)
        assert a.mask.shape == (SIZE, SIZE)
        assert a.mask.any()  # the determinism check covers a non-trivial mask
        assert a.image.tobytes() == b.image.tobytes()
        assert a.mask.tobytes() == b.mask.tobytes()
        assert (a.part_ref, a.defects, a.nuisances) == (b.part_ref, b.defects, b.nuisances)


def test_different_seed_gives_different_image(canvas: Canvas, params: Params) -> None:
    setup = params.line.setups["original"]
    a = _render(canvas, 1, setup)
    b = _render(canvas, 2, setup)
    assert a.image.tobytes() != b.image.tobytes()
    assert float(np.abs(a.image - b.image).mean()) > 0.01


def test_image_range(canvas: Canvas, params: Params) -> None:
    for seed in range(5):
        r = _render(canvas, seed, params.line.setups["new"], defect_rate=1.0)
        assert r.image.min() >= 0.0
        assert r.image.max() <= 1.0
        assert r.part_ref in PART_REFS
        assert 1 <= len(r.defects) <= params.line.max_defects


# -- defects --------------------------------------------------------------------------------------
@pytest.mark.parametrize("ref", PART_REFS)
@pytest.mark.parametrize("cls", SURFACE_DEFECTS)
def test_every_surface_defect_draws_on_the_part(canvas: Canvas, ref: str, cls: str) -> None:
    for seed in range(3):
        rng = np.random.default_rng([seed, 11])
        part, tex = canvas.part(ref, rng)
        assert part.dtype == bool
        assert 0.2 < part.mean() < 0.8
        inside = ndimage.distance_transform_edt(part).astype(np.float32)
        img = np.where(part, tex, 0.1).astype(np.float32)
        dmask, delta = canvas.defect(cls, rng, img, inside, 1.0)
        assert dmask.shape == delta.shape == (SIZE, SIZE)
        on_part = dmask & part
        assert on_part.sum() >= 20, (cls, ref, seed)
        # the defect is anchored on the part: at least part of it lies well inside it
        assert inside[on_part].max() >= 8
        # and it actually changes the image where it is labelled
        assert float(np.abs(delta[on_part]).mean()) > 0.03


def test_unknown_names_raise(canvas: Canvas) -> None:
    rng = np.random.default_rng(0)
    part, tex = canvas.part("disc", rng)
    inside = ndimage.distance_transform_edt(part).astype(np.float32)
    with pytest.raises(ValueError, match="gear"):
        canvas.part("gear", rng)
    with pytest.raises(ValueError, match="blob"):
        canvas.defect("blob", rng, tex, inside, 1.0)
    with pytest.raises(ValueError, match="smoke"):
        canvas.nuisance("smoke", rng, inside)


@pytest.mark.parametrize("cls", DEFECT_CLASSES)
def test_render_labels_every_class(canvas: Canvas, params: Params, cls: str) -> None:
    setup = params.line.setups["original"]
    for seed in range(3):
        r = _render(canvas, [seed, 5], setup, classes=(cls,), defect_rate=1.0, max_defects=1)
        assert r.defects == (cls,)
        assert set(np.unique(r.mask)) == {0, 1}
        assert 10 <= int((r.mask == 1).sum()) < SIZE * SIZE // 8


def test_render_mask_values_follow_class_order(canvas: Canvas, params: Params) -> None:
    setup = params.line.setups["original"]
    classes = ("hole", "scratch", "stain")
    seen: set[int] = set()
    for seed in range(20):
        r = _render(canvas, seed, setup, classes=classes, defect_rate=1.0, max_defects=3)
        allowed = {0} | {classes.index(d) + 1 for d in r.defects}
        values = set(np.unique(r.mask).tolist())
        assert values <= allowed
        seen |= values
    assert seen == {0, 1, 2, 3}


class _RecordingCanvas(Canvas):
    """A canvas that remembers the part mask it drew, before any chip bites it."""

    def part(self, ref, rng):
        mask, tex = super().part(ref, rng)
        self.original_part = mask.copy()
        return mask, tex


def test_chip_mask_lies_on_original_part_edge(params: Params) -> None:
    canvas = _RecordingCanvas(SIZE)
    setup = params.line.setups["original"]
    for seed in range(8):
        r = _render(canvas, [seed, 9], setup, classes=("chip",), defect_rate=1.0, max_defects=1)
        chip = r.mask == 1
        part = canvas.original_part
        assert chip.sum() > 5
        assert not (chip & ~part).any(), "chip label outside the original part"
        # a chip is a bite out of the edge: it touches the part's border
        inside = ndimage.distance_transform_edt(part)
        assert inside[chip].min() <= 2
        # the bitten area now shows the (dark) background, not the bright part
        remaining = part & ~chip
        assert r.image[chip].mean() < r.image[remaining].mean()


def test_canvas_chip_is_subset_of_part(canvas: Canvas) -> None:
    for ref in PART_REFS:
        rng = np.random.default_rng([1, 2])
        part, _ = canvas.part(ref, rng)
        inside = ndimage.distance_transform_edt(part).astype(np.float32)
        bite = canvas.chip(rng, part, inside)
        assert bite.any()
        assert not (bite & ~part).any()
        assert bite.sum() < 0.2 * part.sum()


# -- nuisances ------------------------------------------------------------------------------------
def test_nuisances_draw_no_mask_pixels(canvas: Canvas) -> None:
    setup = AcquisitionSetup(nuisances={n: 3.0 for n in NUISANCES})
    drawn: set[str] = set()
    for seed in range(10):
        r = _render(canvas, seed, setup, defect_rate=0.0)
        assert r.defects == ()
        assert not r.mask.any()
        drawn |= set(r.nuisances)
    assert drawn == set(NUISANCES)


@pytest.mark.parametrize("name", NUISANCES)
def test_each_nuisance_changes_the_image(canvas: Canvas, name: str) -> None:
    rng = np.random.default_rng(4)
    part, _ = canvas.part("disc", rng)
    inside = ndimage.distance_transform_edt(part).astype(np.float32)
    delta = canvas.nuisance(name, rng, inside)
    assert delta.shape == (SIZE, SIZE)
    assert float(np.abs(delta).max()) > 0.05


# -- domains --------------------------------------------------------------------------------------
def _domain_stats(canvas: Canvas, setup: AcquisitionSetup, seed: int, n: int = 60):
    """Median over images of the background level and its high-frequency energy.

    Both are read in the four 12 x 12 corners, which every part reference leaves as background.
    """
    levels, hf = [], []
    for i in range(n):
        img = _render(canvas, [seed, i], setup).image.astype(np.float64)
        corners = [img[:12, :12], img[:12, -12:], img[-12:, :12], img[-12:, -12:]]
        levels.append(np.median([c.mean() for c in corners]))
        hf.append(np.median([np.diff(c, axis=0).std() for c in corners]))
    return float(np.median(levels)), float(np.median(hf))


def test_default_domains_differ_measurably(canvas: Canvas, params: Params) -> None:
    setups = params.line.setups
    level_o, hf_o = _domain_stats(canvas, setups["original"], seed=100)
    level_n, hf_n = _domain_stats(canvas, setups["new"], seed=200)
    # the new setup's belt is brighter and textured, its camera noisier
    assert level_n - level_o > 0.05, (level_o, level_n)
    assert hf_n > 1.4 * hf_o, (hf_o, hf_n)
    # control: two independent samples of one domain do not pass those margins
    level_o2, hf_o2 = _domain_stats(canvas, setups["original"], seed=300)
    assert abs(level_o2 - level_o) < 0.05
    assert max(hf_o, hf_o2) < 1.4 * min(hf_o, hf_o2)


# -- RGB ------------------------------------------------------------------------------------------
def test_rgb_rendering(canvas: Canvas, params: Params) -> None:
    setup = params.line.setups["new"]
    rgb = _render(canvas, 8, setup, channels=3, defect_rate=1.0)
    assert rgb.image.shape == (SIZE, SIZE, 3)
    assert rgb.image.dtype == np.float32
    assert rgb.mask.shape == (SIZE, SIZE)
    assert 0.0 <= rgb.image.min() and rgb.image.max() <= 1.0
    # the colour cast makes the channels differ, and the gray render is the same scene
    assert not np.array_equal(rgb.image[..., 0], rgb.image[..., 1])
    gray = _render(canvas, 8, setup, channels=1, defect_rate=1.0)
    np.testing.assert_array_equal(gray.mask, rgb.mask)
    assert float(np.abs(rgb.image.mean(axis=2) - gray.image).mean()) < 0.05
