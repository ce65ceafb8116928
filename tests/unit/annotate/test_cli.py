"""`mentoring annotate serve | export | status`: refusals before anything is bound, default
database and export paths, status output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mentoring.annotate.db import AnnotationDB
from mentoring.cli import app
from mentoring.cli_annotate import TOKEN_ENV, default_db, is_loopback
from mentoring.feedback.schema import dump
from mentoring.io import sha256_file
from tests.factories import area, make_tasks
from tests.unit.annotate.conftest import small_tasks

runner = CliRunner()


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    (tmp_path / "data/mining").mkdir(parents=True)
    (tmp_path / "data/mining/tasks.json").write_text(dump(small_tasks()))
    return tmp_path


def test_loopback_hosts() -> None:
    assert all(map(is_loopback, ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "10.1.2.3", "line-7.plant", ""]))


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "::"])
def test_serving_off_loopback_needs_a_token(workdir: Path, host: str) -> None:
    res = runner.invoke(app, ["annotate", "serve", "--host", host])
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())  # the error line is wrapped to the terminal
    assert "without a token" in text and TOKEN_ENV in text
    assert not (workdir / "data/annotate").exists()  # refused before anything was written


def test_a_short_token_is_refused(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, "short")
    res = runner.invoke(app, ["annotate", "serve", "--host", "0.0.0.0"])
    assert res.exit_code == 2 and "at least 16 characters" in " ".join(res.output.split())


def test_serving_other_tasks_on_a_database_names_both_sha256(workdir: Path) -> None:
    tasks = workdir / "data/mining/tasks.json"
    db = AnnotationDB(workdir / "held.sqlite")
    db.load_tasks(small_tasks(), sha256_file(tasks), str(tasks))
    db.close()
    other = workdir / "other.json"
    other.write_text(dump(make_tasks({"img-z": [area("img-z/stain/0", "stain", [(0, 0)])]})))
    res = runner.invoke(app, ["annotate", "serve", "--tasks", str(other), "--db", "held.sqlite"])
    assert res.exit_code == 2
    text = " ".join(res.output.split())
    assert sha256_file(tasks) in text and sha256_file(other) in text


def test_export_and_status_find_the_task_sets_database(workdir: Path) -> None:
    tasks = workdir / "data/mining/tasks.json"
    res = runner.invoke(app, ["annotate", "status"])
    assert res.exit_code == 2 and "run `mentoring annotate serve`" in " ".join(res.output.split())
    db_path = default_db(sha256_file(tasks))
    assert db_path.parent == Path("data/annotate") and db_path.name.startswith("annotate-")
    db = AnnotationDB(db_path)
    db.load_tasks(small_tasks(), sha256_file(tasks), str(tasks))
    image = db.next_image("op-1").image
    assert image is not None
    db.verdict("op-1", "r-000001", image.image_id, image.areas[0].area_id, "defect")
    db.close()
    res = runner.invoke(app, ["annotate", "status", "--json"])
    assert res.exit_code == 0, res.output
    status = json.loads(res.output)
    assert status["areas"]["done"] == 1 and status["operators"][0]["operator"] == "op-1"
    res = runner.invoke(app, ["annotate", "status"])
    assert res.exit_code == 0 and "op-1" in res.output and "1/5 areas answered" in res.output
    res = runner.invoke(app, ["annotate", "export"])
    assert res.exit_code == 0, res.output
    out = workdir / "data/feedback" / f"{db_path.stem}.json"
    assert "1 area verdicts" in res.output and out.exists()
    assert json.loads(out.read_text())["tasks_sha256"] == sha256_file(tasks)
    res = runner.invoke(app, ["annotate", "export", "--db", str(db_path), "--out", "x.json"])
    assert res.exit_code == 0 and (workdir / "x.json").read_bytes() == out.read_bytes()
