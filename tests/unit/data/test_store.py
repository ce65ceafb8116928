"""Training images read from the store per batch (src/mentoring/data/store.py): the same bytes,
the same digest and, trained on, the same model as the decoded set kept in memory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mentoring.config import load_params
from mentoring.data.dataset import load_images
from mentoring.data.manifest import data_root, read_manifest, select
from mentoring.data.store import StoredImages, digest, open_images
from mentoring.stages import line, mentor, mine, train, train_baseline
from mentoring.training.loop import tensor_digest

REPO = Path(__file__).resolve().parents[3]
TINY = {"base.profile": "tiny", "train_baseline.epochs": 2, "train.epochs": 1,
        "mine.threshold": 0.01, "model.prior": 0.3}  # fmt: skip


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    wd = tmp_path_factory.mktemp("store")
    line.run(load_params(REPO / "params.yaml", TINY), wd / "data", wd / "results/line")
    return wd


def test_stored_images_are_the_decoded_bytes(tiny: Path) -> None:
    manifest = tiny / "data/manifests/line.parquet"
    df = select(read_manifest(manifest), "original", "train")
    root = data_root(manifest)
    decoded = load_images(df, root)
    idx = torch.tensor([5, 0, 17, 5])
    for workers in (0, 3):
        stored = StoredImages(df, root, workers)
        assert len(stored) == len(df) and stored.shape == tuple(decoded.shape)
        assert torch.equal(stored[idx], decoded[idx])
        assert digest(stored) == tensor_digest(decoded) == digest(decoded)
    # the budget decides: in memory when it fits, read per batch when not
    assert isinstance(open_images(df, root, cache_mib=1), torch.Tensor)
    assert isinstance(open_images(df, root, cache_mib=0), StoredImages)


def test_a_missing_file_is_an_error_naming_it(tiny: Path, tmp_path: Path) -> None:
    manifest = tiny / "data/manifests/line.parquet"
    df = select(read_manifest(manifest), "original", "train").copy()
    df.loc[df.index[1], "path"] = "nowhere/gone.png"
    stored = StoredImages(df, data_root(manifest), workers=2)
    with pytest.raises(ValueError, match=r"gone\.png"):
        stored[torch.tensor([0, 1])]


def _weights(path: Path) -> tuple[str, dict[str, torch.Tensor]]:
    saved = torch.load(path, weights_only=True)
    return saved["meta"]["fingerprint"], saved["state_dict"]


def test_training_from_the_store_is_training_from_memory(tiny: Path, tmp_path: Path) -> None:
    """The baseline and a mentored strategy (its OMNIA-like pseudo-labels streamed from the
    store too) train the same weights with the sets in memory and read per batch."""
    manifest = tiny / "data/manifests/line.parquet"
    out = {}
    for name, sets in (
        ("memory", {}),
        # the decoding threads give the same bytes (above); num_workers is in the fingerprint
        ("store", {"base.train_cache_mib": 0}),
    ):
        p = load_params(REPO / "params.yaml", {**TINY, **sets})
        d = tmp_path / name
        base = train_baseline.run(p, manifest, d / "baseline.pt", d / "tb", show_progress=False,
                                  track=False)  # fmt: skip
        if name == "memory":  # the same partial labels for both
            mine.run(p, manifest, d / "baseline.pt", tmp_path / "tasks.json", d / "mine")
            mentor.run(p, manifest, tmp_path / "tasks.json", tmp_path / "fb",
                       tmp_path / "labels.npz", d / "mentor")  # fmt: skip
        m = train.run(p, "transfer+omnia", manifest, tmp_path / "labels.npz", d / "baseline.pt",
                      d / "model.pt", d / "train", show_progress=False, track=False)  # fmt: skip
        out[name] = (base, m, _weights(d / "baseline.pt"), _weights(d / "model.pt"))
    (b0, m0, wb0, wm0), (b1, m1, wb1, wm1) = out["memory"], out["store"]
    assert (b0["n_images"], m0["n_new"]) == (b1["n_images"], m1["n_new"])
    for (fa, a), (fb, b) in ((wb0, wb1), (wm0, wm1)):
        assert fa == fb  # a checkpoint resumes whichever way the images are read
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert (
        json.loads((tmp_path / "store/train/history.json").read_text())[-1]["loss"]
        == (json.loads((tmp_path / "memory/train/history.json").read_text())[-1]["loss"])
    )


@torch.no_grad()
def test_tsne_features_streamed_are_the_whole_split_features(tiny: Path, tmp_path: Path) -> None:
    """The t-SNE's defect features, read batch by batch, are those of the whole decoded split."""
    import numpy as np

    from mentoring.data.dataset import load_split
    from mentoring.models.segmenter import Segmenter
    from mentoring.models.store import save_model
    from mentoring.reporting import defect_features
    from mentoring.training.outputs import model_arch

    p = load_params(REPO / "params.yaml", TINY)
    torch.manual_seed(0)
    model = Segmenter(**model_arch(p)).eval()
    save_model(tmp_path / "m.pt", model, model_arch(p), p.line.classes)
    manifest = tiny / "data/manifests/line.parquet"
    f, dom, k = defect_features(tmp_path / "m.pt", p, manifest, per_domain=40, seed=3)
    rng = np.random.default_rng(3)
    want = []
    for domain in ("original", "new"):
        df = select(read_manifest(manifest), domain, "eval")
        split = load_split(df, data_root(manifest), p.line.classes, p.model.stride,
                           p.line.cell_min_coverage)  # fmt: skip
        images = split.images.float() / 255.0
        every = torch.cat([model.features(images[i : i + 64]) for i in range(0, len(df), 64)])
        every = every.numpy()
        n, r, c = np.nonzero(split.targets.numpy().any(axis=1))
        pick = rng.permutation(len(n))[:40]
        want.append(every[n[pick], :, r[pick], c[pick]])
    assert f.shape[0] == len(dom) == len(k) > 10
    np.testing.assert_array_equal(f, np.concatenate(want))
