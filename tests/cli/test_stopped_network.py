"""A network that is not there: one line at once (Ray alone retries for minutes), naming what is wrong."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dlbc_ray.cli.app import app
from dlbc_ray.errors import ConfigError, NetworkNotRunning
from dlbc_ray.runtime.home import open_home
from dlbc_ray.runtime.keystore import create_key

runner = CliRunner()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


def record(home: Path, text: str) -> None:
    (home / "network.json").write_text(text)


@pytest.mark.parametrize("command", [["status"], ["down"], ["transfer", "alice", "1", "--as", "alice"]])
def test_a_recorded_network_that_stopped_is_one_line_at_once(tmp_path: Path, command: list[str]) -> None:
    home = open_home(tmp_path / "home")
    create_key(home, "alice")
    record(home.root, f'{{"address": "127.0.0.1:{closed_port()}", "miners": [], "validators": [], "groups": [], '
                      '"started_ms": 0}')
    t0 = time.monotonic()
    result = runner.invoke(app, [*command, "--home", str(home.root)])
    assert time.monotonic() - t0 < 30
    if command[0] == "down" and result.exit_code == 0:
        return  # down of a network that is gone has nothing to stop
    assert result.exit_code == NetworkNotRunning.exit_code, result.stderr
    (line,) = [x for x in result.stderr.splitlines() if x.strip()]
    assert "nothing answers" in line


@pytest.mark.parametrize("text", ["garbage{", '{"address": 5}', "[]", ""])
def test_a_damaged_network_record_is_named(tmp_path: Path, text: str) -> None:
    home = open_home(tmp_path / "home")
    record(home.root, text)
    result = runner.invoke(app, ["status", "--home", str(home.root)])
    assert result.exit_code == ConfigError.exit_code, result.stderr
    (line,) = [x for x in result.stderr.splitlines() if x.strip()]
    assert "network.json" in line


@pytest.mark.ray
@pytest.mark.parametrize("command", [["status"], ["transfer", "alice", "1", "--as", "alice"]])
def test_a_stopped_network_is_named_as_such_even_by_a_process_attached_to_another_cluster(
        ray_session: None, tmp_path: Path, command: list[str]) -> None:
    """An in-process caller already attached to some Ray cluster (this test session's) asks about a home whose
    recorded network stopped: the answer is that nothing answers at its address, not "no network on this
    cluster" about a cluster the home never used (it ran once, in one session, after a Ray test)."""
    home = open_home(tmp_path / "home")
    create_key(home, "alice")
    record(home.root, f'{{"address": "127.0.0.1:{closed_port()}", "miners": [], "validators": [], "groups": [], '
                      '"started_ms": 0}')
    result = runner.invoke(app, [*command, "--home", str(home.root)])
    assert result.exit_code == NetworkNotRunning.exit_code, result.stderr
    (line,) = [x for x in result.stderr.splitlines() if x.strip()]
    assert "nothing answers" in line
