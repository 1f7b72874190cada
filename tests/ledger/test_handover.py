"""The chain hands states over to ``process_block`` (no copies) only where nobody can read them again."""

from __future__ import annotations

from pathlib import Path

import pytest

from dlbc_ray.errors import InvalidBlock
from dlbc_ray.ledger import Chain, verify_chain
from dlbc_ray.ledger.snapshot import make_checkpoint
from tests.builders import World

SCORES = {0: [9000] * 4, 1: [8000] * 4}


def encoded(chain: Chain) -> bytes:
    return make_checkpoint(chain.state).state


def test_a_refused_batch_leaves_the_head_state_and_any_state_a_caller_holds_untouched(tmp_path: Path) -> None:
    world = World()
    chain = Chain.open(tmp_path / "l.sqlite")
    chain.import_block(world.genesis)
    held, before = chain.state, encoded(chain)
    good = []
    for _ in range(2):
        block, _ = world.round(SCORES, task=world.task(reward=10))
        world.apply(block)
        good.append(block)
    bad, _ = world.round(SCORES, task=world.task(reward=10))
    bad = bad.model_copy(update={"header": bad.header.model_copy(update={"height": 99})})
    with pytest.raises(InvalidBlock):
        chain.import_blocks([*good, bad])  # the 2nd block consumed the 1st's state; the head's was copied
    assert encoded(chain) == before and make_checkpoint(held).state == before and chain.height == 0
    chain.import_blocks(good)
    assert make_checkpoint(held).state == before  # a state a caller holds never moves
    assert chain.height == 2 and encoded(chain) != before


def test_replays_that_hand_states_over_reach_the_state_of_importing_one_by_one(tmp_path: Path) -> None:
    world, path = World(), tmp_path / "l.sqlite"
    chain = Chain.open(path)
    chain.import_block(world.genesis)
    for _ in range(5):
        block, _ = world.round(SCORES, task=world.task(reward=10))
        chain.import_block(block)
        world.apply(block)
    one_by_one = encoded(chain)
    chain.close()
    assert encoded(Chain.open(path, verify=True)) == encoded(Chain.open(path, verify=False)) == one_by_one
    assert make_checkpoint(verify_chain(path, workers=1)).state == one_by_one
