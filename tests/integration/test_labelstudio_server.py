"""The Label Studio round trip against a real Label Studio server on loopback.

Label Studio lives in its own venv (``make labelstudio-venv``: ``.venv-labelstudio``, about 1 GB);
this test skips only when that venv is absent (``make test-labelstudio`` creates it first). The
server runs as in :mod:`tests.servers`: its own process group, a bounded startup poll (its first
start migrates a fresh database: about 45 s), the log's tail on failure, SIGTERM then SIGKILL.

The round trip, through the real ``mentoring`` CLI and Label Studio's HTTP API (the test talks
HTTP: the SDK is in the other venv):

1. ``mentoring annotate export-labelstudio`` on a tiny line (one stored image, one padded from a
   64 x 48 original, one tile of a 48 x 32 original), uploading to a moto S3 bucket as well;
2. a project with the exported config; the tasks imported with their predictions; an operator's
   annotations (accept, reject, relabel, delete, keep without a verdict, draw a new box, flag an
   image healthy; one image left unannotated) posted as the frontend does, from the prediction;
3. Label Studio's JSON export -> ``mentoring mentor import-labelstudio`` -> the feedback file,
   checked entry by entry, then ``mentoring mentor import`` -> the partial labels, cell by cell;
4. a second project fed by a Label Studio S3 import storage on the uploaded prefix.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from mentoring.feedback.schema import read_feedback
from tests.integration.test_baseline_cli import REPO, mentoring
from tests.servers import HOST, ServerStartError, _http_ok, _log_tail, _stop, free_port
from tests.unit.formats.test_labelstudio import SIZE, healthy_image, make_line, rect, verdict

LS_VENV = REPO / ".venv-labelstudio"
LS_BIN = LS_VENV / "bin" / "label-studio"
TOKEN = "0123456789abcdef0123456789abcdef01234567"  # the admin's legacy API token
ADMIN = "operator@plant.example"
BUCKET = "ls-roundtrip"
SCRATCH, STAIN = 0, 1

pytestmark = [
    pytest.mark.labelstudio,
    pytest.mark.network,
    pytest.mark.skipif(
        not LS_BIN.exists(),
        reason=f"{LS_VENV.name} is absent: `make test-labelstudio` creates it (label-studio 1.23, "
        "about 1 GB) and runs this test",
    ),
]


@contextlib.contextmanager
def labelstudio_server(workdir: Path, *, timeout_s: float = 240.0) -> Iterator[str]:
    """Run ``label-studio start`` on a free loopback port with a fresh data dir; yield its URL.

    Label Studio silently moves to the next port when its own is busy (a race with
    :func:`free_port`): the log says so, and the start is retried on another port.
    """
    env = {
        **os.environ,
        "LABEL_STUDIO_BASE_DATA_DIR": str(workdir / "data"),  # even --help creates a data dir
        "XDG_DATA_HOME": str(workdir / "xdg"),
        "SENTRY_DSN": "",
        "FRONTEND_SENTRY_DSN": "",
        "COLLECT_ANALYTICS": "false",
        "LATEST_VERSION_CHECK": "false",
        "LABEL_STUDIO_USERNAME": ADMIN,
        "LABEL_STUDIO_PASSWORD": "round-trip-password",
        "LABEL_STUDIO_USER_TOKEN": TOKEN,
        # the S3 import storage's endpoint is moto on loopback, which SSRF protection refuses
        "SSRF_PROTECTION_ENABLED": "false",
    }
    log_path = workdir / "label-studio.log"
    errors: list[str] = []
    for _ in range(3):
        port = free_port()
        url = f"http://{HOST}:{port}"
        cmd = [str(LS_BIN), "start", "--internal-host", HOST, "--port", str(port), "--no-browser",
               "--enable-legacy-api-token"]  # fmt: skip
        with open(log_path, "ab") as log:
            start = log.tell()
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=workdir,
                start_new_session=True,  # its own process group: teardown reaches its workers
            )
        try:
            deadline = time.monotonic() + timeout_s
            moved = False
            while proc.poll() is None and time.monotonic() < deadline:
                if _http_ok(url + "/health"):
                    break
                moved = f"Port {port} is in use" in _log_tail(log_path, start, 100_000)
                if moved:
                    break
                time.sleep(0.5)
            else:
                if proc.poll() is not None:
                    errors.append(f"exited with {proc.returncode}:\n{_log_tail(log_path, start)}")
                    continue
                raise ServerStartError(
                    f"Label Studio did not answer {url}/health within {timeout_s:.0f} s; log:\n"
                    + _log_tail(log_path, start)
                )
            if moved:
                errors.append(f"port {port} was taken:\n{_log_tail(log_path, start)}")
                continue
            yield url
            return
        finally:
            _stop(proc)
    raise ServerStartError("Label Studio failed to start 3 times:\n" + "\n".join(errors))


class Api:
    """Label Studio's REST API with the admin's token; errors carry the response body."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {TOKEN}"

    def __call__(self, method: str, path: str, **kwargs: Any) -> Any:
        r = self.session.request(method, self.url + path, timeout=60, **kwargs)
        assert r.ok, f"{method} {path}: {r.status_code} {r.text[:2000]}"
        return r.json()


def _from_prediction(region: dict[str, Any]) -> dict[str, Any]:
    """A prediction's region as the frontend copies it into the operator's annotation."""
    return {k: v for k, v in region.items() if k != "score"} | {"origin": "prediction"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    t0 = time.monotonic()
    with labelstudio_server(tmp_path_factory.mktemp("label-studio")) as url:
        print(f"Label Studio answered after {time.monotonic() - t0:.0f} s")
        yield url


def test_round_trip_through_a_real_label_studio(
    server: str, s3_endpoint: str, tmp_path: Path
) -> None:
    import boto3

    from tests.servers import aws_client_kwargs

    line = make_line(tmp_path)
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, **aws_client_kwargs())
    s3.create_bucket(Bucket=BUCKET)
    prefix = f"s3://{BUCKET}/labelstudio/round-1"

    # 1) export through the CLI, uploaded as well
    out = mentoring(
        tmp_path, "annotate", "export-labelstudio", "--tasks", str(line.tasks_path),
        "--manifest", str(line.manifest), "--out", "ls-round-1", "--s3-prefix", prefix,
        "--endpoint-url", s3_endpoint,
    ).stdout  # fmt: skip
    assert "3 Label Studio tasks (2 showing the original image" in out
    export_dir = tmp_path / "ls-round-1"
    config = (export_dir / "config.xml").read_text()
    tasks = json.loads((export_dir / "tasks.json").read_text())

    # 2) the project, its tasks with their predictions
    api = Api(server)
    assert api("GET", "/api/current-user/whoami")["email"] == ADMIN
    first = {"title": "mentoring round 1", "label_config": config}
    pid = api("POST", "/api/projects", json=first)["id"]
    imported = api("POST", f"/api/projects/{pid}/import", json=tasks)
    assert (imported["task_count"], imported["prediction_count"]) == (3, 3)
    ls_tasks = api("GET", "/api/tasks", params={"project": pid, "fields": "all"})["tasks"]
    by_image = {t["data"]["image_id"]: t for t in ls_tasks}
    assert set(by_image) == {"img-a", "img-p", "img-t"}
    for t in ls_tasks:
        (pred,) = t["predictions"]
        assert pred["model_version"] == "baseline@" + "ab" * 6
        assert t["data"]["image"] == next(
            x["data"]["image"] for x in tasks if x["data"]["image_id"] == t["data"]["image_id"]
        )

    def regions(image_id: str) -> dict[str, dict[str, Any]]:
        """area id -> its predicted region, as the operator's frontend copies it."""
        mapping = json.loads((export_dir / "mapping.json").read_text())["images"][image_id]
        (pred,) = by_image[image_id]["predictions"]
        return {mapping["regions"][r["id"]]["area_id"]: _from_prediction(r) for r in pred["result"]}

    a, p = regions("img-a"), regions("img-p")
    relabelled = a["img-a/scratch/1"] | {
        "value": a["img-a/scratch/1"]["value"] | {"rectanglelabels": ["stain"]}
    }
    annotations = {
        "img-a": [
            a["img-a/scratch/0"],
            verdict(a["img-a/scratch/0"], "defect"),  # accepted
            a["img-a/stain/0"],  # kept without a verdict
            a["img-a/stain/1"],
            verdict(a["img-a/stain/1"], "healthy"),  # rejected
            relabelled,  # scratch -> stain
            # img-a/stain/2 deleted
            rect("NewScratch", "scratch", (8, 16, 24, 24), (SIZE, SIZE)),  # drawn
        ],
        "img-p": [
            p["img-p/stain/0"],
            rect("NewStain01", "stain", (32, 16, 48, 40), (64, 48)),  # drawn on the original
            healthy_image(),
        ],
        # img-t: not annotated
    }
    for image_id, result in annotations.items():
        t = by_image[image_id]
        body = {"result": result, "parent_prediction": t["predictions"][0]["id"], "lead_time": 4.2}
        api("POST", f"/api/tasks/{t['id']}/annotations/", json=body)

    # 3) Label Studio's JSON export -> the feedback file
    r = api.session.get(
        f"{server}/api/projects/{pid}/export",
        params={"exportType": "JSON", "download_all_tasks": "true"},
        timeout=60,
    )
    assert r.ok, r.text[:2000]
    export_path = tmp_path / "project-1-export.json"
    export_path.write_bytes(r.content)
    exported = json.loads(r.content)
    assert len(exported) == 3
    # what the import relies on: the verdict is a second result with the region's id, and the
    # annotation embeds the prediction it started from
    ann_a = next(t for t in exported if t["data"]["image_id"] == "img-a")["annotations"][0]
    ids = [x["id"] for x in ann_a["result"]]
    assert ids.count(a["img-a/stain/1"]["id"]) == 2
    assert len(ann_a["prediction"]["result"]) == 5 and ann_a["parent_prediction"] is not None

    feedback_dir = tmp_path / "feedback"
    fb_path = feedback_dir / "labelstudio-round-1.json"
    out = mentoring(
        tmp_path, "mentor", "import-labelstudio", str(export_path), "--export-dir",
        str(export_dir), "--out", str(fb_path),
    ).stdout  # fmt: skip
    assert (
        "2 images from 3 tasks: 4 areas confirmed (1 with a corrected class), 2 rejected, 2 drawn, "
        "1 images flagged healthy; 1 tasks without annotation, 0 skipped, 0 exported images not "
        "in this export"
    ) in out
    fb = read_feedback(fb_path)
    assert fb.tasks_sha256 == json.loads((export_dir / "mapping.json").read_text())["tasks_sha256"]
    item_a, item_p = fb.items
    operator = f"labelstudio:{api('GET', '/api/current-user/whoami')['id']}"
    assert (item_a.image_id, item_a.operator, item_a.healthy) == ("img-a", operator, None)
    assert {v.area_id: (v.verdict, v.corrected_class) for v in item_a.areas} == {
        "img-a/scratch/0": ("defect", None),
        "img-a/stain/0": ("defect", None),
        "img-a/stain/1": ("healthy", None),
        "img-a/scratch/1": ("defect", "stain"),
        "img-a/stain/2": ("healthy", None),
    }
    assert [(d.area_id, d.cls, d.bbox) for d in item_a.drawn] == [
        ("labelstudio/NewScratch", "scratch", (8, 16, 24, 24))
    ]
    assert (item_p.image_id, item_p.healthy) == ("img-p", True)
    assert [(v.area_id, v.verdict) for v in item_p.areas] == [("img-p/stain/0", "defect")]
    # (32, 16, 48, 40) of the 64 x 48 original -> (16, 12, 24, 24) of the padded 32 x 32
    assert [(d.area_id, d.cls, d.bbox) for d in item_p.drawn] == [
        ("labelstudio/NewStain01", "stain", (16, 12, 24, 24))
    ]

    # ... -> the partial labels, through the mentor stage (line.cell_min_coverage of params.yaml)
    labels_path = tmp_path / "partial_labels.npz"
    out = mentoring(
        tmp_path, "mentor", "import", "--manifest", str(line.manifest), "--tasks",
        str(line.tasks_path), "--feedback", str(feedback_dir), "--labels", str(labels_path),
        "--results", str(tmp_path / "results"),
    ).stdout  # fmt: skip
    assert "2 images: 4 areas confirmed (1 with a corrected class), 2 infirmed" in out
    with np.load(labels_path) as z:
        ids, healthy = list(z["ids"]), z["healthy"]
        targets, annotated = z["targets"], z["annotated"]
    assert ids == ["img-a", "img-p"] and healthy.tolist() == [False, True]
    want_t = np.zeros((2, 2, 4, 4), np.uint8)
    want_a = np.zeros((2, 2, 4, 4), bool)
    for ch in (SCRATCH, STAIN):  # rejected and deleted: every channel annotated 0
        want_a[0, ch, 0, 2] = want_a[0, ch, 3, 0] = True
    want_a[0, SCRATCH, 0, 0] = want_t[0, SCRATCH, 0, 0] = True  # accepted scratch
    want_a[0, STAIN, 0, 1] = want_t[0, STAIN, 0, 1] = True  # kept stain
    want_a[0, STAIN, 0, 3] = want_t[0, STAIN, 0, 3] = True  # relabelled to stain ...
    want_a[0, SCRATCH, 0, 3] = True  # ... and not scratch
    want_a[0, SCRATCH, 2, 1:3] = want_t[0, SCRATCH, 2, 1:3] = True  # drawn scratch
    want_a[1, STAIN, 1, 1] = want_t[1, STAIN, 1, 1] = True  # img-p's kept stain
    want_a[1, STAIN, 1:3, 2] = want_t[1, STAIN, 1:3, 2] = True  # drawn: rows 12..24, cols 16..24
    assert np.array_equal(annotated, want_a), np.argwhere(annotated != want_a)
    assert np.array_equal(targets, want_t), np.argwhere(targets != want_t)
    metrics = json.loads((tmp_path / "results/metrics.json").read_text())
    assert (metrics["n_drawn"], metrics["drawn_without_cells"]) == (2, [])
    assert any("img-p" in c and "flagged healthy" in c for c in metrics["conflicts"])

    # 4) a Label Studio S3 import storage on the uploaded prefix gives the same tasks
    second = api("POST", "/api/projects", json={"title": "from the bucket", "label_config": config})
    storage = api(
        "POST",
        "/api/storages/s3",
        json={
            "project": second["id"], "title": "plant bucket", "bucket": BUCKET,
            "prefix": "labelstudio/round-1/tasks", "regex_filter": r".*\.json",
            "use_blob_urls": False, "s3_endpoint": s3_endpoint, "region_name": "us-east-1",
            "aws_access_key_id": "testing", "aws_secret_access_key": "testing",
        },
    )  # fmt: skip
    api("POST", f"/api/storages/s3/{storage['id']}/sync")
    deadline = time.monotonic() + 60
    while (state := api("GET", f"/api/storages/s3/{storage['id']}"))["status"] not in (
        "completed",
        "failed",
    ) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert state["status"] == "completed", state
    synced = api("GET", "/api/tasks", params={"project": second["id"], "fields": "all"})["tasks"]
    assert sorted(t["data"]["image_id"] for t in synced) == ["img-a", "img-p", "img-t"]
    assert all(len(t["predictions"]) == 1 for t in synced)
