"""A home is whole or absent (finding 10); a vanished ledger is never silently replaced; corrupt values name their height."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dlbc_ray.actors.ledger import Ledger
from dlbc_ray.cli.app import app
from dlbc_ray.config import network_config
from dlbc_ray.errors import ConfigError, CorruptLedger
from dlbc_ray.runtime.home import check_chain_choice, open_home
from dlbc_ray.runtime.keystore import create_key
from dlbc_ray.ledger import Chain, ledger_status, verify_chain
from dlbc_ray.ledger.store import SCHEMA_VERSION
from dlbc_ray.schema import RetargetParams
from tests.builders import World

runner = CliRunner()
OLD_SCHEMA = ["CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
              "CREATE TABLE blocks (height INTEGER PRIMARY KEY, hash TEXT NOT NULL UNIQUE, "
              "prev_hash TEXT NOT NULL, body BLOB NOT NULL)",
              f"INSERT INTO meta VALUES ('schema_version', '{SCHEMA_VERSION}')"]


def half_made(path: Path, statements: int) -> Path:
    """What a kill between creating the file and committing genesis left behind (before this fix)."""
    path.touch()
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    for statement in OLD_SCHEMA[:statements]:
        con.execute(statement)
    con.commit()
    con.close()
    return path


KILLED = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, os.getcwd())
    import dlbc_ray.ledger.store as store
    from dlbc_ray.ledger import Chain
    from tests.builders import World
    store.os.replace = lambda *a: os._exit(9)  # killed after genesis is written aside, before it is in place
    Chain.open(sys.argv[1]).import_block(World().genesis)
""")


def test_a_kill_while_the_ledger_is_made_leaves_no_ledger(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    done = subprocess.run([sys.executable, "-c", KILLED, str(path)], cwd=Path(__file__).parents[2])
    assert done.returncode == 9 and ledger_status(path) == "absent"
    chain = Chain.open(path)
    assert not path.exists()  # opening writes nothing; the first block makes the file, whole
    chain.import_block(World().genesis)
    assert ledger_status(path) == "chain" and verify_chain(path).height == 0


@pytest.mark.parametrize("statements", [0, 1, 2, 3])
def test_ledger_actor_repairs_a_half_made_ledger(tmp_path: Path, statements: int) -> None:
    path = half_made(tmp_path / "ledger.sqlite", statements)
    assert ledger_status(path) == "empty"
    world = World()
    ledger = Ledger(str(path), genesis=world.genesis)
    assert ledger.head()["height"] == 0 and verify_chain(path).chain_id == world.genesis.header.chain_id


def test_half_made_ledger_is_refused_with_the_command_that_repairs_it(tmp_path: Path) -> None:
    path = half_made(tmp_path / "ledger.sqlite", 3)
    with pytest.raises(CorruptLedger) as info:
        verify_chain(path)
    assert info.value.reason == "empty" and "dlbc-ray up" in str(info.value)
    with pytest.raises(ConfigError):
        Ledger(str(path))
    for command in (["chain", "verify"], ["chain", "show"]):
        result = runner.invoke(app, [*command, "--home", str(tmp_path)])
        assert result.exit_code == CorruptLedger.exit_code and "dlbc-ray up" in result.output, result.output
        assert "Traceback" not in result.output


def test_demo_and_up_accept_a_half_made_home_and_write_genesis_into_it(tmp_path: Path) -> None:
    from dlbc_ray.runtime.network import check_home

    home = open_home(tmp_path)
    create_key(home, "consensus")
    half_made(home.ledger, 3)
    assert check_home(home, network_config()) is None  # no chain yet: the ledger actor is handed a genesis


def test_a_vanished_ledger_needs_new_chain(tmp_path: Path) -> None:
    from dlbc_ray.runtime.network import check_home

    home = open_home(tmp_path)
    check_chain_choice(home, new_chain=False)  # a fresh home: a new chain silently
    create_key(home, "consensus")
    with pytest.raises(ConfigError) as info:
        check_home(home, network_config())
    assert info.value.reason == "ledger_missing" and "--new-chain" in str(info.value)
    check_home(home, network_config(), new_chain=True)
    Chain.open(home.ledger).import_block(World().genesis)
    with pytest.raises(ConfigError) as info:
        check_chain_choice(home, new_chain=True)
    assert info.value.reason == "new_chain"


def test_cli_up_and_demo_ask_for_new_chain(tmp_path: Path) -> None:
    home = open_home(tmp_path)
    create_key(home, "consensus")
    for command in (["demo", "--blocks", "1"], ["up", "--address", "local"]):
        result = runner.invoke(app, [*command, "--home", str(tmp_path)])
        assert result.exit_code == ConfigError.exit_code and "--new-chain" in result.output, result.output
    assert not home.ledger.exists()


PARAMS = RetargetParams(target_interval_s=5.0, window=4, initial=5000, max_step=500, floor=1000, ceiling=9000,
                        gain_bps=100, interval_cap=4)


@pytest.mark.parametrize("value", [b"NaN", b"Infinity", b"-Infinity", b"1e999"])
def test_a_corrupt_stored_number_is_named_by_its_height(tmp_path: Path, value: bytes) -> None:
    path = tmp_path / "ledger.sqlite"
    Chain.open(path).import_block(World(retarget=PARAMS).genesis)
    con = sqlite3.connect(path)
    (body,) = con.execute("SELECT body FROM blocks WHERE height=0").fetchone()
    assert b'"target_interval_s":5.0' in body
    con.execute("UPDATE blocks SET body=? WHERE height=0",
                (body.replace(b'"target_interval_s":5.0', b'"target_interval_s":' + value),))
    con.commit()
    con.close()
    with pytest.raises(CorruptLedger) as info:
        verify_chain(path)
    assert info.value.height == 0 and info.value.reason == "unreadable"
    result = runner.invoke(app, ["chain", "verify", "--home", str(tmp_path)])
    assert result.exit_code == CorruptLedger.exit_code and "block 0" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_the_chain_id_of_a_ledger_file_is_read_without_replay_and_a_half_made_one_is_named(tmp_path: Path) -> None:
    """What the assembler hands miners and validators (only rounds of this chain): the file's genesis chain id."""
    from dlbc_ray.ledger import stored_chain_id

    world, path = World(), tmp_path / "ledger.sqlite"
    Chain.open(path).import_block(world.genesis)
    assert stored_chain_id(path) == world.chain_id == world.genesis.header.chain_id
    with pytest.raises(CorruptLedger) as e:
        stored_chain_id(half_made(tmp_path / "half.sqlite", 3))
    assert e.value.reason == "empty"
