"""The mentoring web interface in a real browser: headless Chromium (Playwright) against the real
server (``mentoring annotate serve``, uvicorn on a free loopback port).

- an operator's session by keyboard and mouse on a generated line: confirm, reject, move,
  change a class, flag an image healthy, draw a missed defect, undo across images, the help,
  a reload (the state is the server's), the Export button; the export imported by the real
  ``mentor`` stage and the partial labels checked entry by entry against what was clicked;
- a task whose id and class are markup is shown as text (no script runs, no element is made);
- the layout at 1280x800 and 1920x1080: the image and the area list fit, nothing scrolls;
- keys on the prefetched next image, leased ahead with the current one: sent at once; on a
  prefetched image further on, before its lease came back: applied once it is the operator's,
  dropped when another operator took it first.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pytest

from mentoring.annotate.db import AnnotationDB
from mentoring.config import load_params
from mentoring.data.manifest import write_manifest
from mentoring.feedback.partial import PartialLabels
from mentoring.feedback.schema import FeedbackFile
from mentoring.stages import mentor
from tests.e2e.helpers import login, write_line
from tests.factories import area
from tests.servers import StartedServer, annotate_server

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Route

pytestmark = [pytest.mark.browser, pytest.mark.network]

REPO = Path(__file__).resolve().parents[2]
SCRATCH, STAIN = 0, 1  # class channels of the labels
#: 4 x 4 grid of 8 px cells (32 x 32 px); cells are (row, col), boxes (x0, y0, x1, y1)
LINE = {
    "img-a": [
        area("img-a/scratch/0", "scratch", [(0, 0)], (0, 0, 8, 8)),
        area("img-a/stain/0", "stain", [(2, 2), (2, 3)], (16, 16, 32, 24)),
    ],
    "img-b": [area("img-b/stain/0", "stain", [(1, 1)], (8, 8, 16, 16))],
    "img-c": [
        area("img-c/scratch/0", "scratch", [(0, 3)], (24, 0, 32, 8)),
        area("img-c/stain/0", "stain", [(3, 3)], (24, 24, 32, 32)),
    ],
    "img-d": [area("img-d/scratch/0", "scratch", [(0, 0)], (0, 0, 8, 8))],
    "img-e": [area("img-e/stain/0", "stain", [(1, 2)], (16, 8, 24, 16))],
}
#: the markup a hostile task carries in its id and class
SCRIPT_ID = "<script>window.__pwned = 'id'</script>"
SCRIPT_CLASS = "<img src=x onerror=\"window.__pwned = 'class'\"><script>window.__pwned = 1</script>"


@dataclass
class Served:
    server: StartedServer
    root: Path
    tasks: Path
    export: Path


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    root = tmp_path / "data"
    tasks = write_line(root, LINE)
    export = root / "feedback/annotate.json"
    db = root / "annotate/e2e.sqlite"
    with annotate_server(tasks, db, args=("--out", str(export))) as server:
        yield Served(server, root, tasks, export)


def _page(browser: Browser, width: int = 1280, height: int = 800) -> Page:
    context = browser.new_context(viewport={"width": width, "height": height})
    context.set_default_timeout(15_000)
    return context.new_page()


def _shown(page: Page) -> str:
    return str(page.get_attribute("#canvas", "data-image-id"))


def _wait_image(page: Page, image_id: str) -> None:
    page.wait_for_selector(f'#canvas[data-image-id="{image_id}"]', state="attached")


def _wait_current(page: Page, area_id: str) -> None:
    """The area is the current one, on the image and in the list."""
    page.wait_for_selector(
        f'#area-layer g.area.current[data-area-id="{area_id}"]', state="attached"
    )
    page.wait_for_selector(f'#areas li.current[data-area-id="{area_id}"]', state="attached")


def _verdict(page: Page, area_id: str) -> str | None:
    return page.get_attribute(f'#area-layer g.area[data-area-id="{area_id}"]', "data-verdict")


def _drag(page: Page, box: tuple[float, float, float, float]) -> None:
    """Drag on the overlay from stored pixel (x0, y0) to (x1, y1) of the 32 x 32 image."""
    bounds = page.locator("#overlay").bounding_box()
    assert bounds is not None
    scale_x, scale_y = bounds["width"] / 32, bounds["height"] / 32
    x0, y0, x1, y1 = box
    page.mouse.move(bounds["x"] + x0 * scale_x, bounds["y"] + y0 * scale_y)
    page.mouse.down()
    page.mouse.move(bounds["x"] + x1 * scale_x, bounds["y"] + y1 * scale_y, steps=8)
    page.mouse.up()


def _manifest(root: Path, ids: list[str]) -> Path:
    rows = [
        {
            "image_id": i,
            "path": f"line/images/img-{k:04d}.png",
            "mask_path": "",
            "domain": "new",
            "split": "pool",
            "part_ref": "p1",
            "width": 32,
            "height": 32,
            "channels": 1,
            "sha256": "0" * 64,
            "defect_classes": "",
            "n_defects": 0,
            "n_nuisances": 0,
        }
        for k, i in enumerate(ids)
    ]
    path = root / "manifests/line.parquet"
    write_manifest(pd.DataFrame(rows), path)
    return path


def test_an_operator_session_ends_in_the_partial_labels(
    browser: Browser, served: Served, tmp_path: Path
) -> None:
    page = _page(browser)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    login(page, served.server.url, "ana")
    _wait_image(page, "img-a")
    _wait_current(page, "img-a/scratch/0")
    assert page.locator("#areas li").count() == 2
    # img-a: confirm the scratch (d): the stain becomes current; back (k) and forth (j); then
    # confirm the stain as a scratch (1): a class correction, and the image is done
    page.keyboard.press("d")
    _wait_current(page, "img-a/stain/0")
    assert _verdict(page, "img-a/scratch/0") == "defect"
    page.keyboard.press("k")
    _wait_current(page, "img-a/scratch/0")
    page.keyboard.press("j")
    _wait_current(page, "img-a/stain/0")
    page.keyboard.press("1")
    _wait_image(page, "img-b")  # the page moved on by itself
    # img-b: reject its stain (h)
    _wait_current(page, "img-b/stain/0")
    page.keyboard.press("h")
    # img-c: flag the whole image healthy (f): its two areas count as rejected
    _wait_image(page, "img-c")
    _wait_current(page, "img-c/scratch/0")
    page.keyboard.press("f")
    # img-d: draw a missed stain over cells rows 2-3, cols 0-1 (pixels 0-16 x 16-32), class 2
    _wait_image(page, "img-d")
    _wait_current(page, "img-d/scratch/0")
    _drag(page, (0.5, 16.5, 15.5, 31.5))
    page.wait_for_selector("#class-picker", state="visible")
    page.keyboard.press("2")
    page.wait_for_selector("#class-picker", state="hidden")
    drawn = page.locator('#drawn-list li[data-area-id="img-d/drawn/0"]')
    drawn.wait_for(state="attached")
    assert "stain (drawn, 4 cells)" in drawn.inner_text()
    assert page.locator('#area-layer g.area.drawn[data-class="stain"]').count() == 1
    # confirm its scratch (d): done, on to img-e; undo (u): img-d comes back, the scratch open
    page.keyboard.press("d")
    _wait_image(page, "img-e")
    page.keyboard.press("u")
    _wait_image(page, "img-d")
    _wait_current(page, "img-d/scratch/0")
    page.wait_for_selector('#area-layer g.area[data-area-id="img-d/scratch/0"][data-verdict=""]')
    assert page.locator("#drawn-list li").count() == 1  # the undo took the verdict only
    page.wait_for_selector("#message:has-text('Undone: verdict defect on img-d/scratch/0')")
    # reject it instead (h): done again, on to img-e
    page.keyboard.press("h")
    _wait_image(page, "img-e")
    # every action acknowledged: the server's progress (sent after them, in key order)
    progress = '#progress[data-done-areas="6"][data-done-images="4"]'
    page.wait_for_selector(progress, state="attached")
    assert page.get_attribute("#progress", "data-total-areas") == "7"
    # a reload shows the server's state: img-e (the image this operator holds), same progress
    page.reload()
    _wait_image(page, "img-e")
    _wait_current(page, "img-e/stain/0")
    page.wait_for_selector(progress, state="attached")
    assert page.inner_text("#progress-areas") == "6/7 areas"
    assert page.locator('#operators li[data-operator="ana"]').count() == 1
    state = page.request.get(served.server.url + "/api/images/img-d").json()
    assert [a["verdict"] for a in state["areas"]] == ["healthy"]
    assert [(d["class"], d["bbox"]) for d in state["drawn"]] == [("stain", [0, 16, 16, 32])]
    # the help overlay (?), closed by Esc
    assert page.locator("#help").is_hidden()
    page.keyboard.press("?")
    page.wait_for_selector("#help", state="visible")
    assert "flag the whole image healthy" in page.inner_text("#help")
    page.keyboard.press("Escape")
    page.wait_for_selector("#help", state="hidden")
    # the Export button writes the feedback file
    page.click("#export-button")
    page.wait_for_selector("#message:has-text('Exported 4 items (6 areas, 1 drawn)')")
    assert errors == []
    page.context.close()

    exported = FeedbackFile.model_validate_json(served.export.read_text())
    got = [
        (
            i.image_id,
            i.operator,
            i.healthy,
            [(a.area_id, a.verdict, a.corrected_class) for a in i.areas],
            [(d.area_id, d.cls, d.bbox) for d in i.drawn],
        )
        for i in exported.items
    ]
    assert got == [
        ("img-a", "ana", None,
         [("img-a/scratch/0", "defect", None), ("img-a/stain/0", "defect", "scratch")], []),
        ("img-b", "ana", None, [("img-b/stain/0", "healthy", None)], []),
        ("img-c", "ana", True,
         [("img-c/scratch/0", "healthy", None), ("img-c/stain/0", "healthy", None)], []),
        ("img-d", "ana", None, [("img-d/scratch/0", "healthy", None)],
         [("img-d/drawn/0", "stain", (0, 16, 16, 32))]),
    ]  # fmt: skip

    # the real mentor stage imports it; the partial labels, entry by entry
    manifest = _manifest(served.root, list(LINE))
    params = load_params(REPO / "params.yaml", {"mentor.source": "import"})
    labels_path = served.root / "mentor/partial_labels.npz"
    metrics: dict[str, Any] = mentor.run(
        params,
        manifest,
        served.tasks,
        served.export.parent,
        labels_path,
        tmp_path / "results/mentor",
    )
    assert metrics["stale_files"] == [] and metrics["conflicts"] == []
    assert (metrics["n_confirmed"], metrics["n_corrected"], metrics["n_infirmed"]) == (2, 1, 4)
    assert (metrics["n_drawn"], metrics["n_healthy_images"]) == (1, 1)
    labels = PartialLabels.load(labels_path)
    assert labels.ids == ["img-a", "img-b", "img-c", "img-d"]  # img-e: nothing answered
    targets = np.zeros((4, 2, 4, 4), np.uint8)
    annotated = np.zeros((4, 2, 4, 4), bool)
    # img-a: the scratch at (0, 0) confirmed; the stain at (2, 2-3) confirmed as a scratch
    # (the stain channel annotated healthy there)
    targets[0, SCRATCH, 0, 0] = 1
    annotated[0, SCRATCH, 0, 0] = True
    targets[0, SCRATCH, 2, 2:4] = 1
    annotated[0, :, 2, 2:4] = True
    # img-b: the stain at (1, 1) rejected, on every channel
    annotated[1, :, 1, 1] = True
    # img-c: flagged healthy: both areas rejected
    annotated[2, :, 0, 3] = True
    annotated[2, :, 3, 3] = True
    # img-d: the scratch at (0, 0) rejected (after the undo); the drawn stain, rows 2-3 x cols 0-1
    annotated[3, :, 0, 0] = True
    targets[3, STAIN, 2:4, 0:2] = 1
    annotated[3, STAIN, 2:4, 0:2] = True
    assert np.array_equal(labels.annotated, annotated)
    assert np.array_equal(labels.targets * labels.annotated, targets)
    assert labels.healthy.tolist() == [False, False, True, False]
    validation = json.loads((tmp_path / "results/mentor/validation.json").read_text())
    assert validation["success"] is True


def test_a_task_with_markup_is_shown_as_text(browser: Browser, tmp_path: Path) -> None:
    root = tmp_path / "data"
    line = {
        SCRIPT_ID: [area(f"{SCRIPT_ID}/0", SCRIPT_CLASS, [(0, 0)], (0, 0, 8, 8))],
        "img-ok": [area("img-ok/scratch/0", "scratch", [(1, 1)], (8, 8, 16, 16))],
    }
    tasks = write_line(root, line, classes=(SCRIPT_CLASS, "scratch"))
    with annotate_server(tasks, root / "annotate/xss.sqlite") as server:
        page = _page(browser)
        dialogs: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        # a script injected as markup would be blocked by the CSP, which reports it here
        page.add_init_script(
            "window.__violations = [];"
            "document.addEventListener('securitypolicyviolation',"
            " (e) => window.__violations.push(e.violatedDirective + ' ' + e.blockedURI));"
        )
        login(page, server.url, "eve")
        _wait_image(page, SCRIPT_ID)
        _wait_current(page, f"{SCRIPT_ID}/0")
        page.wait_for_load_state("load")
        assert page.inner_text("#image-title") == SCRIPT_ID
        label = page.locator("#area-layer g.area text").first.text_content() or ""
        assert label.startswith(SCRIPT_CLASS + " 0.90")
        assert SCRIPT_CLASS in page.inner_text("#areas li")
        assert page.inner_text('#legend li[data-class-index="1"] .class-name') == SCRIPT_CLASS
        assert page.locator("#strip .thumb figcaption").all_inner_texts() == ["img-ok"]
        found: dict[str, Any] = page.evaluate(
            """() => ({
                pwned: window.__pwned === undefined ? null : String(window.__pwned),
                violations: window.__violations,
                scripts: Array.from(document.scripts, (s) => s.id || s.getAttribute('src')),
                handlers: document.querySelectorAll('[onerror]').length,
                stray: document.querySelectorAll('img[src="x"], #areas script, svg script').length,
            })"""
        )
        assert found["pwned"] is None and dialogs == []
        assert found["violations"] == []
        assert found["scripts"][0] == "config" and len(found["scripts"]) == 2
        assert found["scripts"][1].startswith("/static/annotate.js?v=")
        assert found["handlers"] == 0 and found["stray"] == 0
        # its verdict goes through like any other
        page.keyboard.press("d")
        _wait_image(page, "img-ok")
        page.context.close()


@pytest.fixture(scope="module")
def layout_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("annotate-layout") / "data"
    classes = ("scratch", "crack", "dent", "stain", "hole", "chip")
    line = {
        f"line-{i:02d}/part-{i:04d}": [
            area(
                f"line-{i:02d}/part-{i:04d}/{c}/{k}",
                c,
                [(k, k)],
                (8 * k, 8 * k, 8 * k + 8, 8 * k + 8),
            )
            for k, c in enumerate(classes[i % 3 : i % 3 + 4])
        ]
        for i in range(8)
    }  # long ids, 4 areas per image, 6 classes: a full side panel
    tasks = write_line(root, line, classes=classes, grid=(16, 16))
    with annotate_server(tasks, root / "annotate/layout.sqlite") as server:
        yield server.url


def _inside(box: dict[str, float] | None, width: int, height: int) -> bool:
    assert box is not None
    return (
        box["x"] >= 0
        and box["y"] >= 0
        and box["x"] + box["width"] <= width
        and box["y"] + box["height"] <= height
    )


@pytest.mark.parametrize("size", [(1280, 800), (1920, 1080)], ids=["1280x800", "1920x1080"])
def test_the_layout_fits_the_screen(
    browser: Browser, layout_server: str, size: tuple[int, int]
) -> None:
    width, height = size
    page = _page(browser, width, height)
    login(page, layout_server, f"op-{width}")
    page.wait_for_selector("#areas li.current", state="attached")
    page.wait_for_function("() => document.getElementById('image').complete")
    image = page.locator("#image").bounding_box()
    assert image is not None and _inside(image, width, height), image
    # the image is as large as the window allows: most of the height, square (128 px upscaled)
    assert image["height"] >= 0.7 * height and abs(image["width"] - image["height"]) <= 1
    assert _inside(page.locator("#overlay").bounding_box(), width, height)
    assert _inside(page.locator("#areas").bounding_box(), width, height)
    rows = page.locator("#areas li")
    assert rows.count() == 4
    for k in range(4):
        assert _inside(rows.nth(k).bounding_box(), width, height)
    for hook in ("#btn-defect", "#btn-healthy", "#btn-flag", "#btn-undo", "#progress", "#strip"):
        assert _inside(page.locator(hook).bounding_box(), width, height), hook
    scroll = page.evaluate(
        "() => [document.documentElement.scrollWidth, document.documentElement.scrollHeight]"
    )
    assert scroll == [width, height]  # nothing to scroll
    page.context.close()


class HeldAsks:
    """Holds the page's ``POST /api/next`` requests (the lease of the next image) until
    released, to play an operator faster than the server."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.routes: list[Route] = []
        page.route("**/api/next", lambda route: self.routes.append(route))

    def wait(self, n: int) -> None:
        deadline = time.monotonic() + 15
        while len(self.routes) < n and time.monotonic() < deadline:
            self.page.wait_for_timeout(20)
        assert len(self.routes) == n

    def release(self, k: int) -> None:
        self.routes[k].continue_()


def test_keys_on_a_prefetched_image_wait_for_its_lease(browser: Browser, tmp_path: Path) -> None:
    """The next image is shown at once. The one leased ahead with the current image is the
    operator's: its keys are sent at once. One further on is not leased yet: the keys pressed on
    it wait, are applied once it is the operator's, and dropped (with a message) when another
    operator took it first; either way each area is answered once, by its holder."""
    root = tmp_path / "data"
    line = {
        "img-a": [area("img-a/scratch/0", "scratch", [(0, 0)], (0, 0, 8, 8))],
        "img-b": [area("img-b/stain/0", "stain", [(1, 1)], (8, 8, 16, 16))],
        "img-c": [
            area("img-c/scratch/0", "scratch", [(2, 2)], (16, 16, 24, 24)),
            area("img-c/stain/0", "stain", [(3, 3)], (24, 24, 32, 32)),
        ],
        "img-d": [area("img-d/stain/0", "stain", [(0, 3)], (24, 0, 32, 8))],
        "img-e": [area("img-e/scratch/0", "scratch", [(3, 0)], (0, 24, 8, 32))],
        "img-f": [area("img-f/stain/0", "stain", [(1, 2)], (16, 8, 24, 16))],
        "img-g": [area("img-g/scratch/0", "scratch", [(2, 1)], (8, 16, 16, 24))],
    }
    tasks = write_line(root, line)
    with annotate_server(tasks, root / "annotate/held.sqlite") as server:
        page = _page(browser)
        login(page, server.url, "fast")  # img-a, and img-b leased ahead
        _wait_current(page, "img-a/scratch/0")
        held = HeldAsks(page)
        page.keyboard.press("d")  # img-a done: img-b (fast's, ahead) shown at once
        _wait_current(page, "img-b/stain/0")
        held.wait(1)
        page.keyboard.press("h")  # applied at once: img-b done, img-c (not leased) shown
        _wait_image(page, "img-c")
        page.keyboard.press("d")  # on img-c before its lease came back: the key waits
        page.wait_for_timeout(200)
        assert _shown(page) == "img-c" and _verdict(page, "img-c/scratch/0") == ""
        held.release(0)  # the first ask's answer is overtaken; img-b's verdict goes
        held.wait(2)
        held.release(1)  # img-c is fast's (img-d ahead): the key applies
        _wait_current(page, "img-c/stain/0")
        assert _verdict(page, "img-c/scratch/0") == "defect"
        # another operator takes img-e (and img-f ahead), the image after fast's img-d
        other = _page(browser)
        login(other, server.url, "other")
        _wait_image(other, "img-e")
        page.keyboard.press("h")  # img-c done: img-d (fast's, ahead) shown at once
        _wait_current(page, "img-d/stain/0")
        page.keyboard.press("d")  # img-d done: img-e (prefetched, not leased) shown
        _wait_image(page, "img-e")
        page.keyboard.press("d")  # on img-e, which is not fast's: waits
        held.wait(3)
        held.release(2)
        held.wait(4)
        held.release(3)  # the server gives fast img-g instead
        _wait_image(page, "img-g")
        _wait_current(page, "img-g/scratch/0")
        message = page.locator('#message[data-kind="error"]')
        assert "img-e went to another operator first" in message.inner_text()
        assert page.locator("#area-layer g.area[data-verdict='defect']").count() == 0
        page.unroute("**/api/next")
        page.keyboard.press("h")  # img-g is fast's: on with the work
        page.wait_for_selector('#progress[data-done-areas="6"]', state="attached")
        other.keyboard.press("d")
        _wait_image(other, "img-f")
        other.keyboard.press("d")
        _wait_image(other, "")  # nothing left
        other.context.close()
        page.context.close()
    db = AnnotationDB(root / "annotate/held.sqlite")
    try:
        answers = [(e.operator, e.area_id, e.value) for e in db.events() if e.kind == "verdict"]
    finally:
        db.close()
    assert answers == [
        ("fast", "img-a/scratch/0", "defect"),
        ("fast", "img-b/stain/0", "healthy"),
        ("fast", "img-c/scratch/0", "defect"),
        ("fast", "img-c/stain/0", "healthy"),
        ("fast", "img-d/stain/0", "defect"),
        ("fast", "img-g/scratch/0", "healthy"),
        ("other", "img-e/scratch/0", "defect"),
        ("other", "img-f/stain/0", "defect"),
    ]
