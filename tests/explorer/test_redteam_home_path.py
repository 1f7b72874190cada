"""The explorer never tells a visitor where the home lives on this machine: not on a 404 (a task without a
delivered model, an unknown block, task or account), a 503 (no ledger), a 500 (a damaged ledger), nor in the
network panel's detail; in HTML and in JSON alike."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from dlbc_ray.explorer import LiveState, create_app
from dlbc_ray.runtime.home import Home, open_home
from tests.explorer.test_api import world_home  # noqa: F401 -- the module fixture: a ledger of real blocks

PATHS = ["/tasks/{task}/model", "/blocks/99", "/tasks/" + "ab" * 32, "/accounts/nobody", "/", "/network",
         "/no/such/page"]


def places(home: Home) -> list[str]:
    return [str(home.root), str(Path(home.root).resolve()), home.root.name]


def leaks(client: TestClient, home: Home, task: str) -> list[str]:
    found = []
    for path in PATHS:
        for prefix in ("", "/api"):
            response = client.get(prefix + path.format(task=task))
            found += [f"{prefix + path} ({response.status_code}) shows {p}" for p in places(home) if p in response.text]
    return found


def test_no_page_of_a_good_ledger_shows_the_home(world_home: tuple[Home, object, list[str]]) -> None:  # noqa: F811
    home, _, task_ids = world_home
    live = LiveState()
    live.observe_network(None, f"no network is up for {home.root} (network.json missing)")  # a detail that names it
    client = TestClient(create_app(home, live), raise_server_exceptions=False)
    assert client.get(f"/api/tasks/{task_ids[0]}/model").status_code == 404  # no artifact stored in this home
    assert not leaks(client, home, task_ids[0])


def test_no_error_page_shows_the_home_when_the_ledger_is_missing_or_damaged(tmp_path: Path) -> None:
    home = open_home(tmp_path / "private-home-name")
    client = TestClient(create_app(home), raise_server_exceptions=False)
    assert client.get("/api/chain").status_code == 503
    assert not leaks(client, home, "ab" * 32)
    home.ledger.write_bytes(b"not a database" * 512)
    assert client.get("/api/chain").status_code == 500
    assert not leaks(client, home, "ab" * 32)


@pytest.mark.parametrize("detail", ["{root}", "{root}/ledger.sqlite: disk I/O error", "at {root}/keys and {root}"])
def test_scrub_removes_every_mention_of_the_home(tmp_path: Path, detail: str) -> None:
    from dlbc_ray.explorer.errors import scrub

    home = open_home(tmp_path / "h")
    text = scrub(detail.format(root=home.root), home)
    assert str(home.root) not in text and "<home>" in text
