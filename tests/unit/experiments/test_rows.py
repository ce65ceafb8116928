"""Experiment rows (src/mentoring/experiments/rows.py): parsing, checks, shared data keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from mentoring.config import ConfigError, Params
from mentoring.experiments.rows import Row, check_rows, load_rows, strategy_rows


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rows.yaml"
    path.write_text(text)
    return path


def test_load_rows_reads_names_strategies_overrides_and_labels(tmp_path: Path) -> None:
    rows = load_rows(
        _write(
            tmp_path,
            """
rows:
  - name: scratch
  - name: scratch-exclusive
    strategy: scratch
    set: {train.confirm_exclusive: true}
    label: exclusive
  - name: drawn
    strategy: transfer+omnia
    set: {mentor.draw_missed_rate: 0.5, train.lambda_w: 0.5}
""",
        )
    )
    assert [r.name for r in rows] == ["scratch", "scratch-exclusive", "drawn"]
    assert rows[0].strategy == "scratch" and rows[0].set == {}
    assert rows[1].label == "exclusive"
    p = rows[1].params(Params())
    assert p.train.confirm_exclusive is True and Params().train.confirm_exclusive is False
    # training overrides share the default mining and operator; mentor overrides do not
    assert rows[0].data_key() == rows[1].data_key() == "default"
    assert rows[2].data_key() != "default"
    assert rows[2].data_key() == Row("x", "scratch", {"mentor.draw_missed_rate": 0.5}).data_key()


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("rows: []", "non-empty"),
        ("rows:\n  - strategy: scratch", "name"),
        ("rows:\n  - name: a\n    strategy: scratch\n    colour: red", "colour"),
        ("rows:\n  - name: a b\n    strategy: scratch", "a b"),
        ("rows:\n  - name: a\n    strategy: magic", "magic"),
        ("rows:\n  - name: a\n    strategy: scratch\n  - name: a\n    strategy: transfer", "twice"),
        ("rows:\n  - name: a\n    strategy: scratch\n    set: {model.width: 8}", "model.width"),
        ("rows:\n  - name: baseline\n    strategy: scratch", "baseline"),
        ("rows: [", "YAML"),
    ],
)
def test_bad_rows_are_errors_naming_the_row(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_rows(_write(tmp_path, text))


def test_an_invalid_override_value_names_the_row() -> None:
    row = check_rows([Row("r", "scratch", {"train.lw_normalisation": "pixel"})])[0]
    with pytest.raises(ConfigError, match="row 'r'"):
        row.params(Params())
    with pytest.raises(ConfigError, match="no section"):
        Row("s", "scratch", {"train.nothing.deep": 1}).params(Params())


def test_strategy_rows_follow_the_params() -> None:
    p = Params()
    assert [r.name for r in strategy_rows(p)] == list(p.train.strategies)


def test_the_repository_s_experiment_files_are_valid() -> None:
    root = Path(__file__).resolve().parents[3] / "experiments"
    files = sorted(root.glob("*.yaml"))
    assert files
    for f in files:
        assert load_rows(f), f
