"""The explorer as a person uses it: `dlbc-ray demo --explorer` mines while headless Chromium watches.

One short demo (one miner, two blocks); the page is opened before the first round and
must show that round's progress and its block without a reload. The screenshot it
saves is the README's (docs/explorer.png) when refreshed on purpose.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
# The screenshot goes to build/ (ignored) so a test run leaves the tree clean; the README's copy is
# refreshed on purpose: DLBC_SCREENSHOT=docs/explorer.png pytest tests/explorer/test_browser.py
SCREENSHOT = REPO / os.environ.get("DLBC_SCREENSHOT", "build/explorer.png")
START_TIMEOUT_S = 240  # Ray, torch and four actors on a loaded two-core machine
# Not `slow`: CI (.ci/run installs Chromium) runs the browser test on every change (about 75 s).


@dataclass
class Site:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path
    errors: list[str] = field(default_factory=list)

    def live(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + "api/live", timeout=5) as r:
            return json.loads(r.read())

    def wait(self, what: str, ok: Any, timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"the demo exited ({self.proc.returncode}) before {what}: {self.log.read_text()[-2000:]}")
            try:
                live = self.live()
                if ok(live):
                    return live
            except OSError:
                pass
            time.sleep(0.3)
        pytest.fail(f"timed out waiting for {what}: {self.log.read_text()[-2000:]}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    home, port = tmp_path_factory.mktemp("explorer-demo"), free_port()
    log = home.parent / "demo.log"
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    command = [str(Path(sys.executable).parent / "dlbc-ray"), "demo", "--preset", "minimal", "--miners", "1", "--blocks", "2",
               "--epochs", "15", "--home", str(home), "--explorer", "--explorer-port", str(port)]
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    site = Site(f"http://127.0.0.1:{port}/", proc, log)
    try:
        site.wait("the genesis block", lambda live: live["head"] is not None, START_TIMEOUT_S)
        yield site
    finally:
        finished = "explorer still at" in log.read_text(errors="replace")
        proc.send_signal(signal.SIGTERM if finished else signal.SIGINT)  # mid-demo, Ctrl-C tears the network down
        try:
            assert proc.wait(timeout=150) == 0 or not finished, "the demo did not stop cleanly after SIGTERM"
        except subprocess.TimeoutExpired:
            proc.kill()
            raise


def expect(locator: Any) -> Any:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


def new_page(browser: Any, site: Site) -> Any:
    page = browser.new_page(viewport={"width": 1100, "height": 760})
    page.on("console", lambda m: site.errors.append(f"{page.url}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: site.errors.append(f"{page.url}: {e}"))
    return page


def test_a_running_round_updates_without_reload(browser: Any, site: Site) -> None:
    page = new_page(browser, site)
    page.goto(site.url)
    page.evaluate("window.__sameDocument = true")
    rounds = page.locator("#live-rounds")
    expect(rounds).to_contain_text("epoch", timeout=120_000)
    before = rounds.inner_text()
    expect(rounds).not_to_have_text(before, timeout=30_000)
    page.wait_for_selector("#chain tr[data-height='1']", timeout=120_000)
    assert page.evaluate("window.__sameDocument === true"), "the page reloaded instead of updating itself"
    assert site.errors == []
    page.close()


def test_chain_lists_the_blocks_and_a_block_shows_its_votes(browser: Any, site: Site) -> None:
    site.wait("the second block", lambda live: live["head"]["height"] >= 2 and not live["rounds"], 180)
    page = new_page(browser, site)
    page.goto(site.url)
    page.wait_for_selector("#chain tr[data-height='2']")
    assert page.locator("#chain tbody tr").count() == 3  # genesis and two mined blocks
    page.click("#chain tr[data-height='2'] td:first-child a")
    page.wait_for_url("**/blocks/2")
    assert page.locator("tr.vote").count() == 4  # one miner, four validators
    assert "re-verifies" in page.inner_text("#verifies")
    page.click("main a[href^='/tasks/']")
    page.wait_for_url("**/tasks/*")
    page.wait_for_selector("#curve circle.pt", timeout=10_000)
    assert page.locator("#curve circle.pt").count() >= 2, "the task's validation curve has no points"
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT))
    assert site.errors == []
    page.close()


def test_accounts_network_and_charts_pages_render_without_errors(browser: Any, site: Site) -> None:
    page = new_page(browser, site)
    page.goto(site.url + "charts")
    expect(page.locator("#chart-accuracy circle.pt")).to_have_count(2)
    expect(page.locator("#chart-times rect.pt")).to_have_count(6)  # training, evaluation, other per block
    page.goto(site.url + "accounts")
    page.click("#accounts a >> nth=0")
    page.wait_for_url("**/accounts/*")
    page.goto(site.url + "network")
    assert "demo" in page.inner_text("#live-source")
    assert site.errors == []
    page.close()


def test_a_wrong_url_gives_a_404_page(browser: Any, site: Site) -> None:
    page = browser.new_page()
    response = page.goto(site.url + "no/such/page")
    assert response is not None and response.status == 404
    assert "404 Not found" in page.inner_text("h1") and "Traceback" not in page.content()
    page.close()
