"""Persistence, replay and tamper detection on a real SQLite file."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from dlbc_ray.errors import CorruptLedger, InvalidBlock, InvalidModelFile
from dlbc_ray.ledger import ArtifactStore, Chain, verify_chain
from dlbc_ray.ledger.artifacts import load_safetensors
from tests.builders import World

SCORES = {0: [9000] * 4, 1: [8000] * 4}


def build(path: Path, blocks: int = 3) -> tuple[Chain, World]:
    world = World()
    chain = Chain.open(path)
    chain.import_block(world.genesis)
    for _ in range(blocks):
        block, _ = world.round(SCORES)
        chain.import_block(block)
        world.apply(block)
    return chain, world


def test_chain_survives_reopen_with_the_same_state(tmp_path: Path) -> None:
    chain, world = build(tmp_path / "l.sqlite")
    head, balances = chain.head, dict(chain.state.balances)
    chain.close()
    again = Chain.open(tmp_path / "l.sqlite")
    assert again.head == head and dict(again.state.balances) == balances and again.height == 3


def test_invalid_block_is_not_persisted(tmp_path: Path) -> None:
    chain, world = build(tmp_path / "l.sqlite", blocks=1)
    block, _ = world.round(SCORES)
    stale = block.model_copy(update={"header": block.header.model_copy(update={"height": 9})})
    with pytest.raises(InvalidBlock):
        chain.import_block(stale)
    chain.close()
    assert Chain.open(tmp_path / "l.sqlite").height == 1


def _tamper(path: Path, height: int, old: bytes, new: bytes) -> None:
    con = sqlite3.connect(path)
    (body,) = con.execute("SELECT body FROM blocks WHERE height=?", (height,)).fetchone()
    assert old in body
    con.execute("UPDATE blocks SET body=? WHERE height=?", (body.replace(old, new, 1), height))
    con.commit()
    con.close()


def test_altered_header_bytes_fail_verify_at_that_height(tmp_path: Path) -> None:
    chain, world = build(tmp_path / "l.sqlite")
    ts = str(chain.block(2).header.timestamp_ms).encode()
    chain.close()
    _tamper(tmp_path / "l.sqlite", 2, ts, str(int(ts) + 1).encode())
    with pytest.raises(CorruptLedger) as info:
        verify_chain(tmp_path / "l.sqlite")
    assert info.value.height == 2 and info.value.reason == "block_hash"


def test_altered_body_bytes_fail_verify_at_that_height(tmp_path: Path) -> None:
    chain, world = build(tmp_path / "l.sqlite")
    payout = chain.block(1).txs[-1]
    chain.close()
    _tamper(tmp_path / "l.sqlite", 1, f'"amount":{payout.amount}'.encode(), f'"amount":{payout.amount + 1}'.encode())
    with pytest.raises(InvalidBlock) as info:
        verify_chain(tmp_path / "l.sqlite")
    assert info.value.height == 1 and info.value.reason == "txs_root"


def test_a_file_that_is_not_a_ledger_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "junk.sqlite"
    path.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(CorruptLedger, match="is not a dlbc-ray ledger"):
        Chain.open(path)
    assert path.read_bytes() == b"this is not sqlite at all" * 100


CRASHER = textwrap.dedent("""
    import sys
    from dlbc_ray.ledger import Chain
    from tests.builders import World
    world = World()
    chain = Chain.open(sys.argv[1])
    chain.import_block(world.genesis)
    print("ready", flush=True)
    while True:
        block, _ = world.round({0: [9000] * 4, 1: [8000] * 4})
        chain.import_block(block)
        world.apply(block)
""")


@pytest.mark.parametrize("delay", [0.3, 0.55, 0.8])
def test_killed_mid_write_leaves_a_valid_chain(tmp_path: Path, delay: float) -> None:
    path = tmp_path / "crash.sqlite"
    proc = subprocess.Popen([sys.executable, "-c", CRASHER, str(path)], stdout=subprocess.PIPE,
                            cwd=Path(__file__).parents[2])
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    time.sleep(delay)
    proc.kill()  # SIGKILL: no cleanup, no rollback handler, mid-transaction or not
    proc.wait()
    state = verify_chain(path)
    assert state.height >= 1
    assert Chain.open(path).height == state.height


def test_artifacts_are_named_by_hash_and_verified(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "artifacts")
    w = {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}
    path = store.put(w)
    model_hash = path.stem
    assert np.array_equal(store.get(model_hash)["w"], w["w"])
    with pytest.raises(InvalidModelFile, match="hash"):
        store.put(w, model_hash="0" * 64)
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(InvalidModelFile):
        store.get(model_hash)
    (tmp_path / "x.safetensors").write_text("hello")
    with pytest.raises(InvalidModelFile, match="not a valid safetensors"):
        load_safetensors(tmp_path / "x.safetensors")
