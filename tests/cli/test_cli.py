"""The CLI through CliRunner: help, keys, chain, and every bad input of the demo (no Ray needed)."""

from __future__ import annotations

import json
import sqlite3
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dlbc_ray.cli.app import app
from dlbc_ray.runtime.home import open_home
from dlbc_ray.runtime.keystore import create_key, key_path
from dlbc_ray.ledger import Chain
from tests.builders import World

runner = CliRunner()


def run(*args: str, **kwargs):
    return runner.invoke(app, list(args), catch_exceptions=False, **kwargs)


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()} if root.exists() else {}


def one_line_error(result, code: int, *words: str) -> None:
    assert result.exit_code == code, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error"), result.stderr
    assert "Traceback" not in result.output
    for word in words:
        assert word in lines[0], lines[0]


@pytest.mark.parametrize("command", [[], ["demo"], ["chain"], ["chain", "show"], ["chain", "verify"], ["keys"],
                                     ["keys", "new"], ["keys", "show"], ["attack"]])
def test_every_command_has_help(command: list[str]) -> None:
    result = run(*command, "--help")
    assert result.exit_code == 0 and "Usage" in result.output


def test_keys_new_and_show_print_public_keys_only(tmp_path: Path) -> None:
    result = run("keys", "new", "--name", "alice", "--home", str(tmp_path), "--json")
    info = json.loads(result.output)
    path = Path(info["path"])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    secret = json.loads(path.read_text())["secret_key"]
    shown = run("keys", "show", "--home", str(tmp_path))
    assert info["public_key"] in shown.output and secret not in shown.output + result.output
    one_line_error(run("keys", "new", "--name", "alice", "--home", str(tmp_path)), 3, "already exists")


@pytest.mark.parametrize(("args", "code", "words"), [
    (["--miners", "0"], 2, ["miners"]),
    (["--validators", "2"], 2, ["validators", "3f + 1"]),
    (["--blocks", "0"], 2, ["--blocks"]),
    (["--epochs", "0"], 2, ["--epochs"]),
    (["--preset", "huge"], 2, ["--preset"]),
])
def test_bad_demo_options_write_nothing(tmp_path: Path, args: list[str], code: int, words: list[str]) -> None:
    home = tmp_path / "home"
    one_line_error(run("demo", "--home", str(home), *args), code, *words)
    assert not home.exists()


def test_corrupt_ledger_is_refused_and_left_alone(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "ledger.sqlite").write_bytes(b"garbage" * 1000)
    before = snapshot(home)
    one_line_error(run("demo", "--home", str(home)), 5, "not a dlbc-ray ledger")
    assert snapshot(home) == before


def test_home_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    one_line_error(run("demo", "--home", str(tmp_path / "file")), 2, "not a directory")


def test_key_with_loose_permissions_stops_everything_before_any_write(tmp_path: Path) -> None:
    home = open_home(tmp_path / "home")
    create_key(home, "validator-3")
    key_path(home, "validator-3").chmod(0o644)
    before = snapshot(home.root)
    one_line_error(run("demo", "--home", str(home.root)), 3, "mode 0644", "chmod 600")
    assert snapshot(home.root) == before


def test_key_with_wrong_content_is_refused(tmp_path: Path) -> None:
    home = open_home(tmp_path / "home")
    create_key(home, "consensus")
    key_path(home, "consensus").write_text('{"secret_key": "abcd"}')
    one_line_error(run("demo", "--home", str(home.root), "--new-chain"), 3, "2-byte secret")


def write_chain(home_dir: Path, blocks: int = 2) -> World:
    world = World()
    chain = Chain.open(home_dir / "ledger.sqlite")
    chain.import_block(world.genesis)
    for _ in range(blocks):
        block, _ = world.round({0: [9000] * 4, 1: [8000] * 4})
        chain.import_block(block)
        world.apply(block)
    chain.close()
    return world


def test_chain_show_json_and_verify(tmp_path: Path) -> None:
    world = write_chain(tmp_path)
    rows = json.loads(run("chain", "show", "--home", str(tmp_path), "--json").output)
    assert [r["height"] for r in rows] == [0, 1, 2]
    assert rows[2]["prev_hash"] == rows[1]["hash"] and rows[1]["winner"] == world.miners[0].public_key
    assert {"timestamp", "task_id", "model_hash", "score"} <= set(rows[1])
    result = run("chain", "verify", "--home", str(tmp_path))
    assert result.exit_code == 0 and result.output.startswith("chain valid: 3 blocks")


def test_chain_verify_names_the_altered_height(tmp_path: Path) -> None:
    write_chain(tmp_path)
    con = sqlite3.connect(tmp_path / "ledger.sqlite")
    (body,) = con.execute("SELECT body FROM blocks WHERE height=1").fetchone()
    con.execute("UPDATE blocks SET body=? WHERE height=1", (body.replace(b'"score":9000', b'"score":9900', 1),))
    con.commit()
    con.close()
    one_line_error(run("chain", "verify", "--home", str(tmp_path)), 5, "height 1")


def test_chain_commands_without_a_ledger(tmp_path: Path) -> None:
    one_line_error(run("chain", "show", "--home", str(tmp_path)), 2, "no ledger")
    one_line_error(run("chain", "verify", "--home", str(tmp_path / "nope")), 2, "does not exist")
