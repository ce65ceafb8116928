"""Fixtures of the browser tests: one headless Debian Chromium for the session.

Every module here is marked ``browser`` (and ``network``: it starts the real server on
loopback); without ``/usr/bin/chromium`` or the playwright package its tests skip, saying why.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from tests.e2e.helpers import chromium_missing, launch

if TYPE_CHECKING:
    from playwright.sync_api import Browser


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """Headless Chromium (``/usr/bin/chromium``), closed at the end of the session."""
    reason = chromium_missing()
    if reason is not None:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = launch(playwright)
        try:
            yield chromium
        finally:
            chromium.close()
