"""Real headless Chromium for the explorer's browser test: found on this machine, never downloaded."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium_path() -> str:
    """$CHROMIUM, else the first Chromium on PATH; the test FAILS (never skips) without one."""
    path = os.environ.get("CHROMIUM") or next((p for p in map(shutil.which, BROWSERS) if p), None)
    if not path or not os.access(path, os.X_OK):
        pytest.fail("the explorer's browser test needs Chromium and found none: install Debian's package "
                    "(`apt-get install -y chromium`, which .ci/run does) or set CHROMIUM=/path/to/chromium",
                    pytrace=False)
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the explorer's browser test needs Playwright's Python API: pip install -e '.[dev]'",
                    pytrace=False)
    executable = chromium_path()
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=executable, args=["--no-sandbox", "--disable-gpu"])
        yield chromium
        chromium.close()
