"""The ``mentor`` stage with ``mentor.draw_missed_rate``, on a tiny generated line (~2 s)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from mentoring.config import Params, load_params, parse_params
from mentoring.data.cells import mask_to_cells
from mentoring.data.dataset import read_mask
from mentoring.feedback.schema import dump
from mentoring.line.generate import generate_line
from mentoring.stages import mentor
from tests.factories import area, make_tasks

REPO = Path(__file__).resolve().parents[3]
TINY = {"base.profile": "tiny", "line.workers": 1}


@pytest.fixture(scope="module")
def line(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(manifest, tasks.json): every defective new-pool image mined; on every other one of them
    an area of the right class sits on its first ground-truth cell (that defect is detected)."""
    root = tmp_path_factory.mktemp("draw-line") / "data"
    params = load_params(REPO / "params.yaml", TINY)
    manifest = generate_line(params, root)
    df = pd.read_parquet(manifest)
    pool = df[(df["domain"] == "new") & (df["split"] == "pool") & (df["n_defects"] > 0)]
    classes = list(params.line.classes)
    images = {}
    for n, row in enumerate(pool.itertuples()):
        mask = read_mask(root / str(row.mask_path), (int(row.height), int(row.width)))
        truth = mask_to_cells(mask, len(classes), 8, params.line.cell_min_coverage)
        if not truth.any():  # defects too small to make a ground-truth cell
            continue
        c, r, q = (int(v[0]) for v in np.nonzero(truth))
        areas = [area(f"{row.image_id}/{classes[c]}/0", classes[c], [(r, q)])] if n % 2 else []
        images[str(row.image_id)] = areas
    tasks = make_tasks(
        images,
        classes,
        grid=(16, 16),
        paths={str(r.image_id): str(r.path) for r in pool.itertuples()},
    )
    tasks_path = root / "mining" / "tasks.json"
    tasks_path.parent.mkdir(parents=True)
    tasks_path.write_text(dump(tasks))
    return manifest, tasks_path


def _params(**mentor_keys: object) -> Params:
    """params.yaml (tiny) with ``mentor.draw_missed_rate`` removed, then ``mentor_keys`` set."""
    data = yaml.safe_load((REPO / "params.yaml").read_text())
    data["base"]["profile"] = "tiny"
    data["mentor"].pop("draw_missed_rate", None)
    data["mentor"].update(mentor_keys)
    return parse_params(data)


def _mentor(tmp: Path, line: tuple[Path, Path], params: Params) -> tuple[bytes, dict, dict]:
    manifest, tasks = line
    labels = tmp / "partial_labels.npz"
    metrics = mentor.run(params, manifest, tasks, tmp / "feedback", labels, tmp / "results")
    with np.load(labels) as z:
        arrays = {k: z[k] for k in z.files}
    return (tmp / "simulated.json").read_bytes(), metrics, arrays


def test_rate_zero_is_byte_identical_to_the_param_absent(
    line: tuple[Path, Path], tmp_path: Path
) -> None:
    absent = _mentor(tmp_path / "absent", line, _params())
    zero = _mentor(tmp_path / "zero", line, _params(draw_missed_rate=0.0))
    assert zero[0] == absent[0]
    assert b'"drawn"' not in zero[0]
    assert zero[1]["n_drawn"] == absent[1]["n_drawn"] == 0
    for key in absent[2]:
        assert np.array_equal(zero[2][key], absent[2][key]), key


def test_rate_one_draws_the_missed_defects_and_counts_them(
    line: tuple[Path, Path], tmp_path: Path
) -> None:
    _, zero_metrics, zero = _mentor(tmp_path / "zero", line, _params())
    text, metrics, one = _mentor(tmp_path / "one", line, _params(draw_missed_rate=1.0))
    fb = json.loads(text)
    n_drawn = sum(len(it.get("drawn", [])) for it in fb["items"])
    assert metrics["n_drawn"] == n_drawn > 0
    # images without any detected area: every one of their defects is drawn
    undetected = [it for it in fb["items"] if not it["areas"]]
    assert undetected and all(it.get("drawn") for it in undetected)
    # drawing adds confirmed defect cells and takes none away
    assert one["annotated"].sum() > zero["annotated"].sum()
    assert (one["targets"] == 1).sum() > (zero["targets"] == 1).sum()
    assert metrics["annotated_fraction"] > zero_metrics["annotated_fraction"]
