"""Tests of writing a synthetic line to disk (src/mentoring/line/generate.py)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mentoring.config import Params, parse_params
from mentoring.data.manifest import COLUMNS, OPTIONAL_COLUMNS, data_root, read_manifest
from mentoring.line.generate import SPLITS, generate_line


def _params(workers: int) -> Params:
    return parse_params({"base": {"profile": "tiny"}, "line": {"workers": workers}})


@pytest.fixture(scope="module")
def line_one(tmp_path_factory: pytest.TempPathFactory) -> tuple[Params, Path, pd.DataFrame]:
    params = _params(1)
    root = tmp_path_factory.mktemp("line_w1")
    calls: list[tuple[int, int]] = []
    manifest = generate_line(params, root, progress=lambda done, total: calls.append((done, total)))
    assert calls, "progress was never called"
    total = sum(getattr(params.sizes, field) for _, _, field in SPLITS)
    assert calls[-1] == (total, total)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    return params, manifest, read_manifest(manifest)


@pytest.fixture(scope="module")
def line_two(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    manifest = generate_line(_params(2), tmp_path_factory.mktemp("line_w2"))
    return read_manifest(manifest)


def test_manifest_location_and_columns(line_one) -> None:
    _, manifest, df = line_one
    assert manifest.name == "line.parquet"
    assert manifest.parent.name == "manifests"
    assert list(df.columns) == list(COLUMNS) + list(OPTIONAL_COLUMNS)


def test_image_ids_unique_and_sorted(line_one) -> None:
    _, _, df = line_one
    assert df["image_id"].is_unique
    assert list(df["image_id"]) == sorted(df["image_id"])


def test_counts_per_split_match_profile(line_one) -> None:
    params, _, df = line_one
    sizes = params.line.profiles["tiny"]
    counts = df.groupby(["domain", "split"]).size().to_dict()
    expected = {(domain, split): getattr(sizes, field) for domain, split, field in SPLITS}
    assert counts == expected
    assert len(df) == 48 + 16 + 32 + 16


def test_files_exist_and_sha256_matches(line_one) -> None:
    _, manifest, df = line_one
    root = data_root(manifest)
    for row in df.itertuples():
        img_path, mask_path = root / row.path, root / row.mask_path
        assert img_path.is_file(), img_path
        assert mask_path.is_file(), mask_path
        assert hashlib.sha256(img_path.read_bytes()).hexdigest() == row.sha256
        assert row.path == f"line/{row.domain}/{row.split}/images/{row.image_id}.png"
        assert row.mask_path == f"line/{row.domain}/{row.split}/masks/{row.image_id}.png"
    assert df["sha256"].is_unique


def test_rows_describe_their_files(line_one) -> None:
    params, manifest, df = line_one
    root = data_root(manifest)
    line = params.line
    assert set(df["part_ref"]) <= set(line.part_refs)
    assert (df["width"] == line.image_size).all()
    assert (df["height"] == line.image_size).all()
    assert (df["channels"] == line.channels).all()
    assert (df["n_defects"] >= 0).all() and (df["n_defects"] <= line.max_defects).all()
    # healthy rows list no classes, defective rows list what the mask holds
    for row in df.head(40).itertuples():
        with Image.open(root / row.path) as im:
            assert im.size == (line.image_size, line.image_size)
            assert im.mode == "L"
        mask = np.asarray(Image.open(root / row.mask_path))
        present = [line.classes[k - 1] for k in np.unique(mask) if k > 0]
        assert row.defect_classes == ",".join(present)
        if row.n_defects == 0:
            assert row.defect_classes == ""
    assert (df["defect_classes"] != "").any()
    assert (df["defect_classes"] == "").any()


def test_workers_do_not_change_images(line_one, line_two) -> None:
    _, _, df1 = line_one
    df2 = line_two
    sha1 = dict(zip(df1["image_id"], df1["sha256"], strict=True))
    sha2 = dict(zip(df2["image_id"], df2["sha256"], strict=True))
    assert sha1 == sha2
    cols = [c for c in COLUMNS if c != "sha256"]
    pd.testing.assert_frame_equal(df1[cols], df2[cols])


def test_growing_a_split_keeps_existing_images(tmp_path: Path, line_one) -> None:
    _, _, df_tiny = line_one
    sizes = {"original_train": 4, "original_eval": 2, "new_pool": 0, "new_eval": 1}
    params = parse_params(
        {
            "base": {"profile": "small"},
            "line": {"workers": 1, "profiles": {"small": sizes}},
        }
    )
    df = read_manifest(generate_line(params, tmp_path))
    assert len(df) == 7
    assert (df["domain"] == "new").sum() == 1
    tiny = dict(zip(df_tiny["image_id"], df_tiny["sha256"], strict=True))
    for image_id, sha in zip(df["image_id"], df["sha256"], strict=True):
        assert tiny[image_id] == sha


def test_seed_changes_images(tmp_path: Path, line_one) -> None:
    _, _, df_tiny = line_one
    sizes = {"original_train": 3, "original_eval": 0, "new_pool": 0, "new_eval": 0}
    params = parse_params(
        {
            "base": {"profile": "small"},
            "line": {"seed": 1, "workers": 1, "profiles": {"small": sizes}},
        }
    )
    df = read_manifest(generate_line(params, tmp_path))
    tiny = dict(zip(df_tiny["image_id"], df_tiny["sha256"], strict=True))
    assert all(tiny[i] != s for i, s in zip(df["image_id"], df["sha256"], strict=True))
