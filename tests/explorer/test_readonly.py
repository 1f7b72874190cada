"""The explorer's read-only ledger open, its loopback guard and its pollers, without a browser."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from dlbc_ray.errors import ConfigError
from dlbc_ray.explorer import ClusterPoller, LiveState, create_app
from dlbc_ray.explorer.server import allowed_hosts, is_loopback
from dlbc_ray.runtime.home import open_home
from dlbc_ray.ledger import Chain, LedgerStore
from tests.builders import World


def ledger(tmp_path: Path) -> Path:
    path = tmp_path / "ledger.sqlite"
    chain = Chain.open(path)
    chain.import_block(World().genesis)
    chain.close()
    return path


def test_a_read_only_store_refuses_every_write(tmp_path: Path) -> None:
    store = LedgerStore(ledger(tmp_path), read_only=True)
    assert store.count() == 1
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        store._conn.execute("DELETE FROM blocks")  # type: ignore[union-attr]
    store.close()


def test_a_read_only_store_never_creates_a_ledger(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no ledger"):
        LedgerStore(tmp_path / "absent.sqlite", read_only=True)
    assert not (tmp_path / "absent.sqlite").exists()


@pytest.mark.parametrize(("host", "loopback"), [("127.0.0.1", True), ("localhost", True), ("::1", True),
                                                ("0.0.0.0", False), ("192.168.1.5", False)])
def test_only_loopback_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
    assert (allowed_hosts(host) is not None) is loopback


def test_on_loopback_requests_for_other_hosts_are_refused(tmp_path: Path) -> None:
    """A page on another site that rebinds its name to 127.0.0.1 cannot read the explorer."""
    home = open_home(tmp_path / "home")
    app = create_app(home, allowed_hosts=allowed_hosts("127.0.0.1"))
    assert TestClient(app, base_url="http://evil.example").get("/api/live").status_code == 400
    assert TestClient(app, base_url="http://127.0.0.1:8080").get("/api/live").status_code == 200


def test_without_a_recorded_network_the_poller_says_so_and_starts_no_ray(tmp_path: Path) -> None:
    live = LiveState(source="cluster")
    ClusterPoller(open_home(tmp_path / "home"), live).poll()
    status, detail = live.network()
    assert status is None and "no network is up" in detail
