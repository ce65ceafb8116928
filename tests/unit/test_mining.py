"""Tests of area extraction and mining heuristics (src/mentoring/mining.py)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from mentoring.mining import (
    Area,
    Detections,
    Entropy,
    Heuristic,
    Random,
    Uncertainty,
    content_area_id,
    extract_area_arrays,
    extract_areas,
    extract_areas_batch,
    make_heuristic,
    mine,
)

CLASSES = ("scratch", "stain")


def _probs(h: int = 6, w: int = 6, c: int = 2) -> np.ndarray:
    return np.full((c, h, w), 0.01, dtype=np.float32)


# ---------------------------------------------------------------- area extraction


def test_two_separate_blobs_give_two_areas() -> None:
    p = _probs()
    p[0, 0:2, 0:2] = 0.9
    p[0, 4:6, 3:5] = 0.7
    areas = extract_areas(p, CLASSES, 0.5, stride=8, image_id="img")
    assert len(areas) == 2
    assert {a.cls for a in areas} == {"scratch"}
    assert sorted(len(a.cells) for a in areas) == [4, 4]


def test_diagonal_cells_join_with_eight_connectivity() -> None:
    p = _probs()
    p[1, 1, 1] = 0.8
    p[1, 2, 2] = 0.6
    p[1, 3, 1] = 0.7  # diagonal to (2, 2)
    areas = extract_areas(p, CLASSES, 0.5, stride=8, image_id="img")
    assert len(areas) == 1
    assert areas[0].cls == "stain"
    assert set(areas[0].cells) == {(1, 1), (2, 2), (3, 1)}


def test_cell_below_threshold_is_excluded() -> None:
    p = _probs()
    p[0, 2, 2] = 0.9
    p[0, 2, 3] = 0.49  # adjacent but below the threshold
    p[0, 2, 1] = 0.5  # exactly at the threshold: included (>=)
    areas = extract_areas(p, CLASSES, 0.5, stride=8, image_id="img")
    assert len(areas) == 1
    assert set(areas[0].cells) == {(2, 1), (2, 2)}


def test_per_class_thresholds() -> None:
    p = _probs()
    p[0, 0, 0] = 0.6  # scratch, threshold 0.7: not detected
    p[1, 5, 5] = 0.4  # stain, threshold 0.3: detected
    areas = extract_areas(p, CLASSES, [0.7, 0.3], stride=8, image_id="img")
    assert [(a.cls, a.cells) for a in areas] == [("stain", ((5, 5),))]
    both = extract_areas(p, CLASSES, [0.5, 0.3], stride=8, image_id="img")
    assert sorted(a.cls for a in both) == ["scratch", "stain"]


def test_bbox_in_pixels_with_exclusive_end_and_score_is_max() -> None:
    p = _probs()
    p[0, 1, 2] = 0.6
    p[0, 2, 2] = 0.95
    p[0, 2, 3] = 0.7
    p[0, 3, 3] = 0.55
    (area,) = extract_areas(p, CLASSES, 0.5, stride=8, image_id="img")
    # rows 1..3, cols 2..3 -> x0 = 16, y0 = 8, x1 = 32, y1 = 32
    assert area.bbox == (16, 8, 32, 32)
    assert area.score == pytest.approx(0.95)


def test_area_ids_unique_and_named_after_image_and_class() -> None:
    p = _probs()
    p[0, 0, 0] = p[0, 5, 5] = 0.9
    p[1, 0, 0] = p[1, 3, 3] = 0.9
    areas = extract_areas(p, CLASSES, 0.5, stride=8, image_id="new-pool-000007")
    ids = [a.area_id for a in areas]
    assert len(ids) == 4
    assert len(set(ids)) == 4
    for a in areas:
        assert "new-pool-000007" in a.area_id
        assert a.cls in a.area_id
        assert a.area_id.startswith(f"new-pool-000007/{a.cls}/")


def test_content_ids_name_what_an_area_is_not_where_it_is_listed() -> None:
    """A mining task's area id comes from the image's sha256, the class and the cells: the
    same area found by two minings has one id, and a new area of that image never takes the
    id (and so the verdict) of another one, as positional ids ``<k>`` did."""
    p = _probs()
    p[0, 0, 0] = p[0, 5, 5] = 0.9
    (arrays,) = extract_area_arrays(p[None], 0.5, stride=8)
    first = arrays.areas(CLASSES, "img-1", "a" * 64)
    assert [a.area_id for a in first] == [
        content_area_id("img-1", "a" * 64, a.cls, a.cells) for a in first
    ]
    assert first[0].area_id.startswith("img-1/scratch/") and len(first[0].area_id) == 26
    # a later mining finds a new area first: the known ones keep their ids
    p[0, 0, 0] = 0.01
    p[0, 2, 3] = 0.9
    (later,) = extract_area_arrays(p[None], 0.5, stride=8)
    ids = {a.cells: a.area_id for a in later.areas(CLASSES, "img-1", "a" * 64)}
    assert ids[((5, 5),)] == first[1].area_id  # the same cells: the same id...
    assert ids[((2, 3),)] not in {a.area_id for a in first}  # ...and a new area, a new one
    # the cells' order does not matter; the image's bytes, the class and the cells do
    cells = ((1, 2), (1, 3))
    assert content_area_id("i", "s", "stain", cells) == content_area_id(
        "i", "s", "stain", cells[::-1]
    )
    assert content_area_id("i", "t", "stain", cells) != content_area_id("i", "s", "stain", cells)
    assert content_area_id("i", "s", "crack", cells) != content_area_id("i", "s", "stain", cells)
    assert content_area_id("i", "s", "stain", cells[:1]) != content_area_id(
        "i", "s", "stain", cells
    )


def test_no_detection_no_area() -> None:
    assert extract_areas(_probs(), CLASSES, 0.5, stride=8, image_id="img") == []


# ---------------------------------------------------------------- heuristics


def _batch() -> np.ndarray:
    """Five images: none detected, max 0.9, max 0.6, uncertain everywhere, confident healthy."""
    p = np.full((5, 2, 4, 4), 0.001, dtype=np.float32)
    p[0, 0, 0, 0] = 0.45  # below 0.5: no detection
    p[1, 1, 2, 2] = 0.9
    p[1, 0, 1, 1] = 0.55
    p[2, 0, 3, 3] = 0.6
    p[3] = 0.5
    return p


def test_detections_scores_zero_without_detection_and_ranks_by_max_prob() -> None:
    s = Detections(0.5).score(_batch())
    assert s[0] == 0.0
    assert s[1] == pytest.approx(0.9)
    assert s[2] == pytest.approx(0.6)
    assert list(mine(_batch(), Detections(0.5))) == [1, 2, 3]


def test_detections_per_class_threshold() -> None:
    p = _batch()
    s = Detections([0.95, 0.5]).score(p)  # scratch needs 0.95: image 2's 0.6 no longer counts
    assert s[2] == 0.0
    assert s[1] == pytest.approx(0.9)  # the stain at 0.9 still does


def test_uncertainty_counts_entries_within_margin() -> None:
    p = np.full((2, 1, 3, 3), 0.01, dtype=np.float32)
    p[0, 0, 0, :] = [0.35, 0.5, 0.62]  # 3 within 0.5 +- 0.2
    p[0, 0, 1, 0] = 0.75  # outside
    p[1, 0, 2, 2] = 0.69  # 1 within
    s = Uncertainty(0.5, 0.2).score(p)
    assert list(s) == [3.0, 1.0]
    assert list(Uncertainty(0.5, 0.05).score(p)) == [1.0, 0.0]


def test_entropy_ranks_undecided_above_confident() -> None:
    p = np.full((3, 1, 4, 4), 0.001, dtype=np.float32)  # image 0: confident healthy
    p[1, 0, 0, 0] = 0.5  # image 1: one undecided entry
    p[2] = 0.999  # image 2: confident defect everywhere
    s = Entropy().score(p)
    assert s[1] > s[0]
    assert s[1] > s[2]
    assert s[1] == pytest.approx(1.0, abs=1e-6)  # one bit
    assert list(mine(p, Entropy())) == [1]  # confident images score 0 and are dropped


@pytest.mark.parametrize(
    "heuristic", [Detections(0.5), Uncertainty(0.5, 0.2), Entropy()], ids=lambda h: h.name
)
def test_mine_drops_zero_scores_orders_by_score_and_respects_budget(
    heuristic: Heuristic,
) -> None:
    p = _batch()
    scores = heuristic.score(p)
    picked = mine(p, heuristic)
    assert set(picked.tolist()) == {i for i in range(len(p)) if scores[i] > 0}
    assert all(scores[a] >= scores[b] for a, b in itertools.pairwise(picked))
    assert scores[4] == 0.0  # image 4 is confidently healthy: of no interest to any heuristic
    assert 4 not in picked.tolist()
    for budget in (1, 2):
        assert list(mine(p, heuristic, budget=budget)) == list(picked[:budget])


def test_mine_ties_are_deterministic_for_a_seed() -> None:
    p = np.full((12, 1, 2, 2), 0.001, dtype=np.float32)
    p[:, 0, 0, 0] = 0.8  # all tied
    p[5, 0, 0, 0] = 0.9  # one clear winner
    a = mine(p, Detections(0.5), budget=5, seed=3)
    b = mine(p, Detections(0.5), budget=5, seed=3)
    assert np.array_equal(a, b)
    assert a[0] == 5
    assert len(a) == 5
    picks = {tuple(mine(p, Detections(0.5), budget=5, seed=s).tolist()) for s in range(6)}
    assert len(picks) > 1  # the tie-break really depends on the seed
    assert all(t[0] == 5 for t in picks)


@pytest.mark.parametrize("name", ["detections", "uncertainty", "entropy", "random"])
def test_make_heuristic_known_names(name: str) -> None:
    h = make_heuristic(name, 0.5, 0.2)
    assert h.name == name


def test_make_heuristic_rejects_unknown_name() -> None:
    with pytest.raises(ValueError, match="bogus"):
        make_heuristic("bogus", 0.5, 0.2)


def test_tie_break_follows_ids_not_input_order() -> None:
    probs = np.full((6, 1, 2, 2), 0.7, np.float32)  # six images with the same score
    ids = [f"img-{k}" for k in range(6)]
    picked = mine(probs, Detections(0.5), budget=3, seed=4, ids=ids)
    rev = mine(probs[::-1], Detections(0.5), budget=3, seed=4, ids=ids[::-1])
    assert {ids[i] for i in picked} == {ids[::-1][i] for i in rev}


def test_random_picks_a_seeded_sample_of_any_images() -> None:
    rng = np.random.default_rng(0)
    probs = rng.random((40, 2, 3, 3)).astype(np.float32)
    probs[:20] = 0.0  # images without any detection are as likely as the others
    ids = [f"img-{k}" for k in range(40)]
    a = mine(probs, Random(), budget=10, seed=1, ids=ids)
    assert len(a) == 10 and list(a) == list(mine(probs, Random(), budget=10, seed=1, ids=ids))
    assert list(a) != list(mine(probs, Random(), budget=10, seed=2, ids=ids))
    # the order is not the score's: the sample mixes detected and undetected images
    picks = set(
        np.concatenate([mine(probs, Random(), budget=10, seed=s, ids=ids) for s in range(5)])
    )
    assert picks & set(range(20)) and picks & set(range(20, 40))
    assert len(mine(probs, Random(), ids=ids)) == 40  # no budget: every image


def _per_label_reference(
    p: np.ndarray, thresholds: tuple[float, ...], image_id: str
) -> list[tuple[object, ...]]:
    """A plain per-label pass over each class's grid: the areas extraction must give."""
    from scipy import ndimage

    want: list[tuple[object, ...]] = []
    for k, t in enumerate(thresholds):
        labels, n = ndimage.label(p[k] >= t, structure=np.ones((3, 3), bool))
        for lab in range(1, n + 1):
            rows, cols = np.nonzero(labels == lab)
            want.append(
                (
                    f"{image_id}/{CLASSES[k]}/{lab - 1}",
                    list(zip(rows.tolist(), cols.tolist(), strict=True)),
                    (cols.min() * 8, rows.min() * 8, (cols.max() + 1) * 8, (rows.max() + 1) * 8),
                    float(p[k][rows, cols].max()),
                )
            )
    return want


def _fields(areas: list[Area]) -> list[tuple[object, ...]]:
    return [(a.area_id, list(a.cells), a.bbox, a.score) for a in areas]


def test_extraction_matches_a_whole_grid_pass_per_area_on_random_maps() -> None:
    """The extraction gives the areas a plain per-label pass over the grid gives: same ids,
    cells in row-major order, boxes and scores (interleaved, touching, nested areas)."""
    rng = np.random.default_rng(3)
    for _ in range(20):
        p = rng.random((2, 16, 16)).astype(np.float32)
        got = extract_areas(p, CLASSES, [0.6, 0.4], stride=8, image_id="img")
        want = _per_label_reference(p, (0.6, 0.4), "img")
        assert _fields(got) == want
        assert len(want) > 3  # the maps do have several areas per class


def test_batch_extraction_is_each_image_s_own_areas() -> None:
    """One labelling of an (N, C, h, w) batch gives each image the areas of its own per-label
    pass: no area joins cells of two images or two classes (the planes touch in the array),
    ids count from 0 per image and class, images without a detection get none."""
    rng = np.random.default_rng(4)
    p = rng.random((6, 2, 16, 16)).astype(np.float32)
    p[2] = 0.0  # an image with nothing detected, between images with areas
    p[4, 0] = 0.9  # one class's whole plane detected: a single area covering the grid
    ids = [f"new-pool-{i:06d}" for i in range(6)]
    got = extract_areas_batch(p, CLASSES, [0.7, 0.45], stride=8, image_ids=ids)
    assert len(got) == 6 and got[2] == []
    for i in range(6):
        assert _fields(got[i]) == _per_label_reference(p[i], (0.7, 0.45), ids[i])
    whole = [a for a in got[4] if a.cls == CLASSES[0]]
    assert len(whole) == 1 and len(whole[0].cells) == 256 and whole[0].bbox == (0, 0, 128, 128)
    assert extract_areas_batch(np.zeros((3, 2, 4, 4), np.float32), CLASSES, 0.5, 8, "abc") == [
        [],
        [],
        [],
    ]
