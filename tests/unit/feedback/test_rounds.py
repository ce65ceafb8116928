"""A published mining round (mentoring.feedback.rounds) on moto's S3 server: its layout, its
checks, and the annotation CLI answering it from S3 with the export landing in its feedback/."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest
from typer.testing import CliRunner

from mentoring.annotate.db import AnnotationDB
from mentoring.annotate.images import ImageSource
from mentoring.cli import app
from mentoring.cli_annotate import TOKEN_ENV, default_db, task_set
from mentoring.feedback.rounds import (
    MiningRound,
    RoundError,
    publish_round,
    round_of,
    round_of_labelstudio,
)
from mentoring.feedback.schema import FeedbackFile, dump, read_feedback, read_tasks
from mentoring.io import sha256_file
from tests.factories import area, make_tasks
from tests.servers import aws_client_kwargs

runner = CliRunner()
PNG = b"\x89PNG\r\n\x1a\n" + b"0" * 32  # served by suffix; never decoded here


def _tasks_and_images(tmp_path: Path) -> tuple[Path, Path]:
    """A task set of two images (one without areas) and its data root."""
    root = tmp_path / "data"
    tasks = make_tasks(
        {
            "img-a": [area("img-a/scratch/0a1b2c3d4e5f", "scratch", [(0, 0)])],
            "img-b": [],
        },
        paths={"img-a": "line/new/pool/images/img-a.png", "img-b": "line/new/pool/images/b.png"},
    )
    for im in tasks.images:
        (root / im.path).parent.mkdir(parents=True, exist_ok=True)
        (root / im.path).write_bytes(PNG + im.image_id.encode())
    path = tmp_path / "tasks.json"
    path.write_text(dump(tasks))
    return path, root


@pytest.fixture
def bucket(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, **aws_client_kwargs())
    name = "plant-rounds"
    try:
        s3.create_bucket(Bucket=name)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)  # the standard chain, as in a pod
    return name


def _keys(bucket: str, prefix: str) -> list[str]:
    s3 = boto3.client("s3", **aws_client_kwargs())
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return sorted(o["Key"] for o in listed)


def test_a_round_is_named_by_its_tasks_and_holds_its_images(tmp_path: Path, bucket: str) -> None:
    tasks, root = _tasks_and_images(tmp_path)
    rnd = publish_round(tasks, root, f"s3://{bucket}/mining")
    sha12 = sha256_file(tasks)[:12]
    assert rnd.uri == f"s3://{bucket}/mining/{sha12}" and rnd.name == sha12
    assert _keys(bucket, "mining/") == [
        f"mining/{sha12}/images/line/new/pool/images/b.png",
        f"mining/{sha12}/images/line/new/pool/images/img-a.png",
        f"mining/{sha12}/tasks.json",
    ]
    assert rnd.read_tasks_bytes() == tasks.read_bytes()
    # its tasks.json or its prefix, with or without a slash: the same round
    for loc in (rnd.tasks_uri, rnd.uri + "/", rnd.uri):
        assert MiningRound.at(loc) == MiningRound(rnd.uri)
    assert round_of(tmp_path / "tasks.json") is None  # a plain tasks file is no round
    assert round_of_labelstudio(rnd.labelstudio_uri) == MiningRound(rnd.uri)
    assert round_of_labelstudio(f"{rnd.uri}/other") is None


def test_a_missing_image_publishes_nothing(tmp_path: Path, bucket: str) -> None:
    tasks, root = _tasks_and_images(tmp_path)
    (root / "line/new/pool/images/b.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"b\.png"):
        publish_round(tasks, root, f"s3://{bucket}/missing")
    assert _keys(bucket, "missing/") == []  # no tasks.json: no round that looks complete


def test_a_round_checks_its_name_and_says_what_is_missing(tmp_path: Path, bucket: str) -> None:
    with pytest.raises(RoundError, match="not a mining round"):
        MiningRound.at(f"s3://{bucket}/mining/latest")
    absent = MiningRound(f"s3://{bucket}/mining/0123456789ab")
    with pytest.raises(RoundError, match="incomplete"):
        absent.read_tasks_bytes()
    tasks, root = _tasks_and_images(tmp_path)
    rnd = publish_round(tasks, root, f"s3://{bucket}/changed")
    with pytest.raises(RoundError, match=r"no feedback yet.*annotate export --tasks"):
        rnd.fetch_feedback(tmp_path / "fb")
    s3 = boto3.client("s3", **aws_client_kwargs())
    s3.put_object(Bucket=bucket, Key=f"changed/{rnd.name}/tasks.json", Body=b"{}")
    with pytest.raises(RoundError, match="does not match the round's name"):
        rnd.read_tasks_bytes()
    with pytest.raises(RoundError, match="plain"):
        rnd.feedback_location("../x.json")


def test_the_annotation_cli_answers_a_round_from_s3(
    tmp_path: Path, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`annotate serve|status|export --tasks s3://<round>`: the tasks are fetched and checked,
    the images come from the round, and the export lands in the round's feedback/, which the
    round then lists; exporting again rewrites the same bytes."""
    tasks, root = _tasks_and_images(tmp_path)
    rnd = publish_round(tasks, root, f"s3://{bucket}/cli")
    work = tmp_path / "station"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    ts = task_set(rnd.tasks_uri)
    assert ts.path.read_bytes() == tasks.read_bytes() and ts.mining_round == rnd
    assert ts.data_root() == rnd.images_uri
    db_path = default_db(sha256_file(ts.path))
    assert ts.export_to(db_path) == f"{rnd.feedback_uri}/{db_path.stem}.json"
    # what the server would show: the round's copy of the image, through ImageSource
    data, media = ImageSource(ts.data_root()).read("line/new/pool/images/img-a.png")
    assert data == PNG + b"img-a" and media == "image/png"
    db = AnnotationDB(db_path)
    db.load_tasks(read_tasks(ts.path), sha256_file(ts.path), rnd.tasks_uri)
    image = db.next_image("op-1").image
    assert image is not None and image.image_id == "img-a"
    db.verdict("op-1", "r-000001", "img-a", "img-a/scratch/0a1b2c3d4e5f", "healthy")
    db.close()
    res = runner.invoke(app, ["annotate", "status", "--tasks", rnd.uri])
    assert res.exit_code == 0 and "1/1 areas answered" in res.output, res.output
    res = runner.invoke(app, ["annotate", "export", "--tasks", rnd.uri])
    assert res.exit_code == 0, res.output
    assert rnd.feedback_names() == [f"{db_path.stem}.json"]
    fetched = rnd.fetch_feedback(tmp_path / "fb")
    fb = read_feedback(fetched[0])
    assert isinstance(fb, FeedbackFile) and fb.tasks_sha256 == sha256_file(tasks)
    assert [(a.area_id, a.verdict) for a in fb.items[0].areas] == [
        ("img-a/scratch/0a1b2c3d4e5f", "healthy")
    ]
    first = fetched[0].read_bytes()
    res = runner.invoke(app, ["annotate", "export", "--tasks", rnd.tasks_uri])
    assert res.exit_code == 0 and rnd.fetch_feedback(tmp_path / "fb2")[0].read_bytes() == first
    # a round that is not there: one line naming it, exit code 2
    res = runner.invoke(app, ["annotate", "status", "--tasks", f"s3://{bucket}/cli/latest"])
    assert res.exit_code == 2 and "not a mining round" in " ".join(res.output.split())
    assert json.loads(first)["items"][0]["operator"] == "op-1"
