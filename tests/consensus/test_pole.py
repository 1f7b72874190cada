"""PoLe on the ledger: standing tasks carry the chain's difficulty, which retargets from block intervals."""

from __future__ import annotations

import pytest

from dlbc_ray.consensus import validate_block
from dlbc_ray.consensus.validation import expected_standing_target
from dlbc_ray.errors import InvalidBlock
from dlbc_ray.schema import RetargetParams, Verdict
from tests.builders import T0, World

PARAMS = RetargetParams(target_interval_s=2.0, window=3, initial=6_000, max_step=500, floor=1_000, ceiling=9_500)
WINNING = {0: [9_900] * 4, 1: [9_800] * 4}


def standing_block(world: World, interval_ms: int, target: int | None = None):
    target = expected_standing_target(world.state) if target is None else target
    task = world.task(reward=world.params.block_reward, target=target, standing=True)
    return world.round(WINNING, task=task, at_ms=world.state.timestamp_ms + interval_ms)[0]


def mine(world: World, interval_ms: int) -> int:
    block = standing_block(world, interval_ms)
    validate_block(block, world.state)
    world.apply(block)
    return block.header.difficulty or 0


def test_blocks_that_come_too_fast_raise_the_target_at_each_window() -> None:
    world = World(retarget=PARAMS)
    targets = [mine(world, 500) for _ in range(7)]  # 0.5 s against a 2 s target
    assert targets[:3] == [6_000] * 3
    assert targets[3] > 6_000 and targets[3:6] == [targets[3]] * 3  # changes only at heights k*window + 1
    assert targets[6] > targets[3] and world.state.pole.height == 7


def test_blocks_that_come_too_slowly_lower_it() -> None:
    world = World(retarget=PARAMS)
    targets = [mine(world, 8_000) for _ in range(4)]
    assert targets[3] < 6_000


def test_intervals_count_from_the_parent_block_of_any_kind() -> None:
    world = World(retarget=PARAMS)
    mine(world, 50_000)  # right after genesis: the network's start-up, not counted
    mine(world, 1_000)
    request, _ = world.round({0: [9000] * 4}, at_ms=world.state.timestamp_ms + 60_000)
    world.apply(request)  # a long requester round in between must not look like slow PoLe blocks
    mine(world, 1_000)
    assert world.state.pole.intervals_ms == (1_000, 1_000)


def test_an_outage_counts_as_at_most_a_few_slow_blocks() -> None:
    capped, uncapped = World(retarget=PARAMS), World(retarget=PARAMS)
    for w, outage in ((capped, 3_600_000), (uncapped, 4 * 2_000)):
        mine(w, 500)
        for gap in (500, outage, 500):
            mine(w, gap)
    assert capped.state.pole.difficulty == uncapped.state.pole.difficulty


@pytest.mark.parametrize(("change", "reason"), [("target", "difficulty"), ("reward", "standing_task"),
                                                ("requester", "standing_task"), ("no_winner", "standing_task")])
def test_standing_block_rules(change: str, reason: str) -> None:
    world = World(retarget=PARAMS)
    target = expected_standing_target(world.state)
    if change == "target":
        block = standing_block(world, 1_000, target=target + 1)
    elif change == "no_winner":
        task = world.task(reward=world.params.block_reward, target=target, standing=True)
        block = world.round(WINNING, task=task, verdicts={(i, j): Verdict.STOLEN for i in range(2) for j in range(4)},
                            at_ms=T0 + 1_000)[0]
    else:
        task = world.task(reward=world.params.block_reward + (change == "reward"), target=target,
                          standing=change == "reward")
        block = world.round(WINNING, task=task.model_copy(update={"message": task.message.model_copy(
            update={"kind": "standing"})}) if change == "requester" else task, at_ms=T0 + 1_000)[0]
    with pytest.raises(InvalidBlock) as info:
        validate_block(block, world.state)
    assert info.value.reason in {reason, "task_signature"} if change == "requester" else info.value.reason == reason


def test_a_chain_without_difficulty_has_no_standing_tasks() -> None:
    world = World()
    task = world.task(reward=world.params.block_reward, target=5_000, standing=True)
    block = world.round(WINNING, task=task)[0]
    with pytest.raises(InvalidBlock) as info:
        validate_block(block, world.state)
    assert info.value.reason == "standing_task"
