"""State checkpoints: a restart starts from one, and full verification proves every one (ledger speed)."""

from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dlbc_ray.ledger.snapshot as snapshot
from dlbc_ray.errors import CorruptLedger, InvalidBlock
from dlbc_ray.ledger import Chain, verify_chain
from dlbc_ray.ledger.snapshot import make_checkpoint
from dlbc_ray.ledger.store import LedgerStore
from dlbc_ray.ledger.verify import compute_stretches
from tests.builders import World

SCORES = {0: [9000] * 4, 1: [8000] * 4}


@pytest.fixture
def ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Ten blocks with a checkpoint after every third."""
    monkeypatch.setattr(snapshot, "CHECKPOINT_EVERY", 3)
    world, path = World(), tmp_path / "ledger.sqlite"
    chain = Chain.open(path)
    chain.import_block(world.genesis)
    for _ in range(10):
        block, _ = world.round(SCORES, task=world.task(reward=10))
        chain.import_block(block)
        world.apply(block)
    chain.close()
    return path


def _sql(path: Path, query: str, *args: object) -> None:
    con = sqlite3.connect(path)
    con.execute(query, args)
    con.commit()
    con.close()


def test_checkpoints_are_written_every_n_blocks_and_restart_matches_full_replay(ledger: Path) -> None:
    assert LedgerStore(ledger, create=False).checkpoints() == [3, 6, 9]
    fast, full = Chain.open(ledger, verify=False), Chain.open(ledger, verify=True)
    assert fast.state == full.state and fast.head == full.head and fast.height == 10


def test_restart_starts_from_the_checkpoint_and_verify_still_checks_before_it(ledger: Path) -> None:
    _sql(ledger, "UPDATE blocks SET body = CAST(replace(CAST(body AS TEXT), '\"score\":9000', '\"score\":9001') AS BLOB) "
                 "WHERE height=2")
    assert Chain.open(ledger, verify=False).height == 10  # blocks 0..9 are not decoded on restart
    for workers in (1, 2):
        with pytest.raises(InvalidBlock) as info:
            verify_chain(ledger, workers=workers)
        assert info.value.height == 2


def test_a_damaged_checkpoint_costs_replay_time_and_verify_names_it(ledger: Path) -> None:
    _sql(ledger, "UPDATE checkpoints SET state = state || X'20' WHERE height=9")  # parses, no longer hashes
    full = Chain.open(ledger, verify=True).state
    assert Chain.open(ledger, verify=False).state == full  # falls back to checkpoint 6
    with pytest.raises(CorruptLedger) as info:
        verify_chain(ledger, workers=1)
    assert (info.value.reason, info.value.height) == ("checkpoint", 9)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_forged_checkpoint_with_a_matching_hash_fails_verify(ledger: Path, workers: int) -> None:
    store = LedgerStore(ledger, create=False)
    cp = store.checkpoint(6)
    state = snapshot.load_checkpoint(cp, store.get(6))
    store.close()
    rich = next(iter(state.balances))
    forged = make_checkpoint(replace(state, balances={**state.balances, rich: state.balances[rich] + 10**6}))
    _sql(ledger, "UPDATE checkpoints SET state=?, state_hash=? WHERE height=6", forged.state, forged.state_hash)
    assert hashlib.sha256(forged.state).hexdigest() == forged.state_hash
    with pytest.raises(CorruptLedger) as info:
        verify_chain(ledger, workers=workers)
    assert (info.value.reason, info.value.height) == ("checkpoint", 6)


def test_parallel_verify_returns_the_head_state(ledger: Path) -> None:
    assert verify_chain(ledger, workers=2) == verify_chain(ledger, workers=1) == Chain.open(ledger).state


def test_stretches_cut_at_checkpoints() -> None:
    assert compute_stretches([500, 1000, 1500], 1999, 2) == [(0, 1000), (1000, 1999)]
    assert compute_stretches([500, 1000], 1000, 4) == [(0, 500), (500, 1000)]
    assert compute_stretches([], 10, 2) == [(0, 10)]


def test_later_blocks_on_a_larger_state_get_a_shorter_stretch() -> None:
    """The faster the state grows, the later the cut: the last stretch's blocks cost more, so it gets fewer."""
    heights = list(range(500, 10_000, 500))
    cuts = [compute_stretches(heights, 10_000, 2, {h: per_block * h for h in heights})[0][1]
            for per_block in (0, 800, 2_000, 4_000, 8_000)]
    assert cuts == [5000, 5000, 5500, 6000, 6500]  # at 0 the worker's late start pulls the cut from 5000 to 4800


@settings(max_examples=200, deadline=None)
@given(checkpoints=st.lists(st.integers(-5, 3000), max_size=12), head=st.integers(0, 3000),
       workers=st.integers(0, 6), sizes=st.dictionaries(st.integers(-5, 3000), st.integers(-(2**40), 2**40)))
def test_stretches_cover_every_block_once_whatever_the_sizes_say(checkpoints: list[int], head: int, workers: int,
                                                                   sizes: dict[int, int]) -> None:
    """A forged size can move a cut, never skip a block: contiguous from genesis to the head, cut at checkpoints."""
    stretches = compute_stretches(checkpoints, head, workers, sizes)
    assert stretches[0][0] == 0 and stretches[-1][1] == head and len(stretches) <= max(1, workers)
    assert all(a[1] == b[0] for a, b in zip(stretches, stretches[1:]))
    assert all(a in checkpoints and a < b for a, b in stretches[1:])


def test_a_batch_import_is_all_or_nothing(tmp_path: Path) -> None:
    world, path = World(), tmp_path / "ledger.sqlite"
    chain = Chain.open(path)
    chain.import_block(world.genesis)
    good, _ = world.round(SCORES)
    world.apply(good)
    bad, _ = world.round(SCORES)
    bad = bad.model_copy(update={"header": bad.header.model_copy(update={"height": 7})})
    with pytest.raises(InvalidBlock):
        chain.import_blocks([good, bad])
    chain.close()
    assert Chain.open(path).height == 0


@pytest.mark.parametrize("enabled", [True, False])
def test_verification_restores_the_cyclic_collector_even_when_a_block_is_bad(ledger: Path, enabled: bool) -> None:
    """verify pauses the cyclic GC while it replays (reference counting frees blocks); the caller's setting returns."""
    import gc

    _sql(ledger, "UPDATE blocks SET body = "
                 "CAST(replace(CAST(body AS TEXT), '\"score\":9000', '\"score\":9001') AS BLOB) WHERE height=5")
    was = gc.isenabled()
    try:
        (gc.enable if enabled else gc.disable)()
        with pytest.raises(InvalidBlock) as info:
            verify_chain(ledger, workers=1)
        assert info.value.height == 5 and gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()
