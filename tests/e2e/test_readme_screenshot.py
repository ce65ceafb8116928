"""The README's screenshot of the mentoring web interface, made by the browser of the e2e tests on
the demo's own tasks.

The demo line is generated, a baseline trained briefly and the new domain mined, with the CLI
in a temporary folder (a few minutes on 2 cores: marked ``slow``); the page is served on those
tasks, an operator logs in and confirms one area (its mark, the highlight on the next area and
the progress show), and the page at 1280x800 is saved. To refresh the committed image::

    MENTORING_UPDATE_SCREENSHOT=1 .venv/bin/pytest -m slow tests/e2e/test_readme_screenshot.py

which writes ``docs/images/annotate.png``; otherwise it goes to the test's temporary folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from PIL import Image

from tests.e2e.helpers import login
from tests.servers import VENV_BIN, annotate_server

if TYPE_CHECKING:
    from playwright.sync_api import Browser

pytestmark = [pytest.mark.browser, pytest.mark.network, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
SCREENSHOT = REPO / "docs/images/annotate.png"
#: a baseline that detects areas on the new domain, trained in a few minutes on 2 CPU cores
TRAIN = ("-S", "train_baseline.epochs=3")


def _mentoring(*args: str, cwd: Path) -> None:
    exe = VENV_BIN / "mentoring"
    cli = (
        [str(exe)]
        if exe.exists()
        else [sys.executable, "-c", "from mentoring.cli import app; app()"]
    )
    cmd = [*cli, *args, "--params", str(REPO / "params.yaml")]
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, f"{' '.join(cmd)}:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"


def _demo_tasks(work: Path) -> Path:
    """The demo line, a briefly trained baseline and its mining tasks, all under ``work``."""
    data, results, models = work / "data", work / "results", work / "models"
    manifest = data / "manifests/line.parquet"
    _mentoring(
        "line", "generate", "--data", str(data), "--results", str(results / "line"), cwd=work
    )
    _mentoring(
        "train",
        *TRAIN,
        "--no-track",
        "--manifest", str(manifest),
        "--model", str(models / "baseline.pt"),
        "--results", str(results / "train_baseline"),
        "--checkpoint", str(models / "checkpoints/baseline.pt"),
        cwd=work,
    )  # fmt: skip
    tasks = data / "mining/tasks.json"
    _mentoring(
        "mine",
        "--manifest", str(manifest),
        "--model", str(models / "baseline.pt"),
        "--tasks", str(tasks),
        "--results", str(results / "mine"),
        cwd=work,
    )  # fmt: skip
    return tasks


def test_the_readme_screenshot(browser: Browser, tmp_path: Path) -> None:
    tasks = _demo_tasks(tmp_path)
    images = json.loads(tasks.read_text())["images"]
    n_areas = sum(len(i["areas"]) for i in images)
    assert n_areas > 0, "the baseline detected nothing on the new domain"
    # the first image with two areas or more, so that one confirmed area leaves another current
    skips = next(k for k, i in enumerate(images) if len(i["areas"]) >= 2)
    shown = images[skips]
    with annotate_server(tasks, tmp_path / "data/annotate/demo.sqlite") as server:
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        page = context.new_page()
        login(page, server.url, "operator-1")
        for image in images[:skips]:  # released for others: the page moves on to the next
            page.wait_for_selector(f'#canvas[data-image-id="{image["image_id"]}"]')
            page.keyboard.press("s")
        first, second = (a["area_id"] for a in shown["areas"][:2])
        page.wait_for_selector(f'#area-layer g.area.current[data-area-id="{first}"]')
        with page.expect_response("**/api/verdict"):
            page.keyboard.press("d")
        # reloaded: the same image (leased to operator-1), the progress from the server
        page.reload()
        page.wait_for_selector(f'#area-layer g.area.current[data-area-id="{second}"]')
        page.wait_for_selector(f'#area-layer g.area[data-area-id="{first}"][data-verdict="defect"]')
        page.wait_for_selector('#progress[data-done-areas="1"]')
        page.wait_for_selector('#operators li[data-operator="operator-1"]')
        page.wait_for_function(
            "() => Array.from(document.images).every((i) => i.complete && i.naturalWidth > 0)"
        )
        assert page.inner_text("#progress-areas") == f"1/{n_areas} areas"
        out = tmp_path / "annotate.png"
        page.screenshot(path=str(out))
        context.close()
    with Image.open(out) as png:
        assert png.size == (1280, 800)
        pixels = np.asarray(png.convert("L"), dtype=np.float32)
    assert pixels.std() > 10  # a page, not a blank
    if os.environ.get("MENTORING_UPDATE_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out, SCREENSHOT)
