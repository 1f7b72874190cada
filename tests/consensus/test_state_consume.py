"""``process_block(..., consume=True)`` applies a block in place and reaches the same state as a copy."""

from __future__ import annotations

from dlbc_ray.consensus.validation import compute_block_hash
from dlbc_ray.consensus.state import process_block
from dlbc_ray.schema import Block
from tests.builders import World


def _chain(rounds: int = 4) -> tuple[World, list[Block]]:
    world = World()
    blocks = []
    for i in range(rounds):
        block, _ = world.round({0: [9000 - i] * 4, 1: [8000] * 4})
        world.apply(block)
        blocks.append(block)
    return world, blocks


def test_a_consumed_replay_reaches_the_state_a_copying_one_does_and_copies_stay_untouched() -> None:
    world, blocks = _chain()
    copied = process_block(None, world.genesis, compute_block_hash(world.genesis.header))
    consumed = process_block(None, world.genesis, compute_block_hash(world.genesis.header))
    history = [copied]
    for block in blocks:
        copied = process_block(copied, block, compute_block_hash(block.header))
        history.append(copied)
        consumed = process_block(consumed, block, compute_block_hash(block.header), consume=True)
    assert consumed == copied == world.state
    # the copying path never wrote into an earlier state: each holds only the winners up to its height
    assert [len(s.won_models) for s in history] == list(range(len(blocks) + 1))


def test_consuming_from_no_state_starts_from_fresh_maps() -> None:
    world = World()
    genesis_hash = compute_block_hash(world.genesis.header)
    a = process_block(None, world.genesis, genesis_hash, consume=True)
    b = process_block(None, world.genesis, genesis_hash, consume=True)
    assert a == b and a.balances is not b.balances
