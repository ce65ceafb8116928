"""Tests of the tasks/feedback JSON schemas (src/mentoring/feedback/schema.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mentoring.feedback.schema import (
    AreaVerdict,
    FeedbackError,
    FeedbackFile,
    ImageFeedback,
    MiningTasks,
    TaskArea,
    dump,
    read_feedback,
    read_tasks,
    write_tasks,
)
from tests.factories import area, make_tasks


def _tasks() -> MiningTasks:
    return make_tasks(
        {"img-0": [area("img-0/stain/0", "stain", [(1, 1), (1, 2)], bbox=(8, 8, 24, 16))]},
        paths={"img-0": "line/new/pool/images/img-0.png"},
        model_path="models/baseline.pt",
        model_sha256="ab" * 32,
    )


def _feedback() -> FeedbackFile:
    return FeedbackFile(
        tasks_sha256="cd" * 32,
        items=[
            ImageFeedback(
                image_id="img-0",
                operator="op-7",
                timestamp=datetime(2026, 3, 2, 10, 0, tzinfo=UTC),
                healthy=None,
                areas=[
                    AreaVerdict(
                        area_id="img-0/stain/0", verdict="defect", corrected_class="scratch"
                    )
                ],
            )
        ],
    )


def test_tasks_round_trip(tmp_path: Path) -> None:
    tasks = _tasks()
    path = tmp_path / "tasks.json"
    path.write_text(dump(tasks))
    back = read_tasks(path)
    assert back == tasks
    assert dump(back) == dump(tasks)
    assert back.images[0].areas[0].cells == [(1, 1), (1, 2)]


def test_feedback_round_trip(tmp_path: Path) -> None:
    fb = _feedback()
    path = tmp_path / "fb.json"
    path.write_text(dump(fb))
    back = read_feedback(path)
    assert back == fb
    assert back.items[0].areas[0].corrected_class == "scratch"
    assert back.items[0].timestamp == datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def test_class_alias_in_json() -> None:
    data = json.loads(dump(_tasks()))
    area = data["images"][0]["areas"][0]
    assert area["class"] == "stain"
    assert "cls" not in area
    # both the alias and the field name are accepted on input
    by_alias = TaskArea.model_validate(
        {"area_id": "a", "class": "scratch", "cells": [[0, 0]], "bbox": [0, 0, 8, 8], "score": 1}
    )
    by_name = TaskArea(area_id="a", cls="scratch", cells=[(0, 0)], bbox=(0, 0, 8, 8), score=1)
    assert by_alias == by_name
    assert by_alias.cls == "scratch"


def _write(tmp_path: Path, data: object, name: str = "fb.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data, indent=1))
    return path


def test_invalid_verdict_names_the_file(tmp_path: Path) -> None:
    data = json.loads(dump(_feedback()))
    data["items"][0]["areas"][0]["verdict"] = "maybe"
    path = _write(tmp_path, data, "bad-verdict.json")
    with pytest.raises(FeedbackError, match=r"bad-verdict\.json") as exc:
        read_feedback(path)
    assert "verdict" in str(exc.value)


def test_unknown_extra_key_is_rejected(tmp_path: Path) -> None:
    data = json.loads(dump(_feedback()))
    data["items"][0]["comment"] = "looks fine"
    path = _write(tmp_path, data, "extra.json")
    with pytest.raises(FeedbackError, match=r"extra\.json") as exc:
        read_feedback(path)
    assert "comment" in str(exc.value)


def test_unknown_extra_key_in_tasks_is_rejected(tmp_path: Path) -> None:
    data = json.loads(dump(_tasks()))
    data["images"][0]["areas"][0]["colour"] = "red"
    path = _write(tmp_path, data, "tasks.json")
    with pytest.raises(FeedbackError, match=r"tasks\.json") as exc:
        read_tasks(path)
    assert "colour" in str(exc.value)


def test_bad_json_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{\n "schema_version": 1,\n "items": [\n  {"image_id": }\n ]\n}\n')
    with pytest.raises(FeedbackError, match=r"broken\.json") as exc:
        read_feedback(path)
    assert "line 4" in str(exc.value)


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.json"
    with pytest.raises(FeedbackError, match=r"nowhere\.json"):
        read_feedback(path)
    with pytest.raises(FeedbackError, match=r"nowhere\.json"):
        read_tasks(path)


def test_wrong_schema_version_is_rejected(tmp_path: Path) -> None:
    data = json.loads(dump(_feedback()))
    data["schema_version"] = 2
    with pytest.raises(FeedbackError, match="schema_version"):
        read_feedback(_write(tmp_path, data))


@pytest.mark.parametrize("n_images", [0, 1, 3])
def test_streamed_tasks_read_back_one_image_a_line(tmp_path: Path, n_images: int) -> None:
    """write_tasks (image by image, from a generator) writes the tasks dump() holds, each image
    on a line of its own."""
    images = {
        f"img-{k}": [
            area(f"img-{k}/stain/{j}", "stain", [(j, 1), (j, 2)], bbox=(8, 8 * j, 24, 8 * j + 8))
            for j in range(k + 1)
        ]
        for k in range(n_images)
    }
    tasks = make_tasks(images, paths={i: f"line/{i}.png" for i in images})
    out = tmp_path / "tasks.json"
    write_tasks(out, tasks.model_copy(update={"images": []}), (im for im in tasks.images))
    assert read_tasks(out) == tasks
    assert json.loads(out.read_text()) == json.loads(dump(tasks))
    lines = [ln.strip().rstrip(",") for ln in out.read_text().splitlines()]
    items = [json.loads(ln) for ln in lines if ln.startswith('{"image_id"')]
    # each image whole (id, path, areas) on a line of its own, in order
    assert items == [im.model_dump(mode="json", by_alias=True) for im in tasks.images]


def test_non_utf8_file_names_the_file_and_byte_offset(tmp_path: Path) -> None:
    path = tmp_path / "latin1.json"
    path.write_bytes(b'{"schema_version": 1,\n "items": [{"operator": "J\xe9r\xf4me"}]}')
    with pytest.raises(FeedbackError, match=r"latin1\.json: not UTF-8") as exc:
        read_feedback(path)
    assert "byte offset 48" in str(exc.value) and "line 2" in str(exc.value)


def test_too_deeply_nested_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(FeedbackError, match=r"deep\.json: .*nested deeper"):
        read_feedback(path)
    with pytest.raises(FeedbackError, match=r"deep\.json"):
        read_tasks(path)


def test_invalid_item_names_its_index_and_image(tmp_path: Path) -> None:
    data = json.loads(dump(_feedback()))
    data["items"][0]["timestamp"] = "yesterday"
    with pytest.raises(FeedbackError, match=r"items\.0\.timestamp \(image "):
        read_feedback(_write(tmp_path, data))
