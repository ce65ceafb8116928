"""What the browser tests and ``benchmarks/annotate.py`` share: Debian's Chromium driven by
Playwright, a tiny generated line for ``mentoring annotate serve``, the login.

Playwright never downloads a browser here: it launches ``/usr/bin/chromium`` (Debian's package,
which ``make test`` installs when it is missing and the user is root).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from mentoring.feedback.schema import TaskArea, dump
from tests.factories import make_tasks

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Playwright

#: Debian's Chromium; never a downloaded one
CHROMIUM = Path("/usr/bin/chromium")
# Playwright's own browser download must never run (pip's post-install does not, but its CLI
# would): the browser is Debian's.
os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")


def chromium_missing() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -e '.[dev]')"
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        return (
            f"no Chromium at {CHROMIUM}: `apt-get install chromium` as root "
            "(`make test` does it when it runs as root)"
        )
    return None


def launch(playwright: Playwright) -> Browser:
    """Headless Debian Chromium (without its sandbox when run as root, which it refuses)."""
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    return playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=args)


def write_png(path: Path, seed: int, size: tuple[int, int] = (32, 32)) -> None:
    """A gray noise image of ``size`` (width, height), like a stored line image."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pixels = rng.integers(40, 200, (size[1], size[0]), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def write_line(
    root: Path,
    images: dict[str, list[TaskArea]],
    classes: tuple[str, ...] = ("scratch", "stain"),
    grid: tuple[int, int] = (4, 4),
) -> Path:
    """A tiny line under ``root``: one PNG per image (stride 8) and ``mining/tasks.json``.

    ``root`` is the data root the server reads the images from (the folder above the tasks').
    Returns the tasks file.
    """
    paths = {}
    for k, image_id in enumerate(images):
        name = f"img-{k:04d}.png"  # file names apart from ids (an id may be hostile)
        write_png(root / "line/images" / name, k, (grid[1] * 8, grid[0] * 8))
        paths[image_id] = f"line/images/{name}"
    tasks = root / "mining/tasks.json"
    tasks.parent.mkdir(parents=True, exist_ok=True)
    tasks.write_text(dump(make_tasks(images, classes=classes, grid=grid, paths=paths)))
    return tasks


def login(page: Page, url: str, operator: str) -> None:
    """Log in through the form and wait until the page shows its first image."""
    page.goto(url + "/login")
    page.fill("#operator", operator)
    page.click("#login-button")
    page.wait_for_url(url + "/")
    page.wait_for_selector("#canvas:not([data-image-id=''])", state="attached")
