"""Money rules and the conservation of supply."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlbc_ray import crypto
from dlbc_ray.consensus import process_block, propose_tx_block, validate_block
from dlbc_ray.consensus.validation import compute_block_hash
from dlbc_ray.errors import InvalidBlock
from dlbc_ray.schema import PostTaskTx, Transfer, TransferTx
from tests.builders import T0, World


def transfer(world: World, sender_index: int, recipient_index: int, amount: int, nonce: int) -> TransferTx:
    people = [world.requester, *world.miners]
    sender, recipient = people[sender_index], people[recipient_index]
    message = Transfer(sender=sender.public_key, recipient=recipient.public_key, amount=amount, nonce=nonce)
    return TransferTx(transfer=world.sign(sender, message))


def apply_txs(world: World, txs: list) -> None:
    block = propose_tx_block(world.state, txs, world.proposer, T0 + 100 * (world.state.height + 1))
    validate_block(block, world.state)
    world.state = process_block(world.state, block, compute_block_hash(block.header))


def reason_of(world: World, txs: list) -> str:
    with pytest.raises(InvalidBlock) as info:
        apply_txs(world, txs)
    return info.value.reason


def test_transfer_needs_the_next_nonce() -> None:
    world = World()
    apply_txs(world, [transfer(world, 0, 1, 5, 0)])
    assert reason_of(world, [transfer(world, 0, 1, 5, 0)]) == "nonce"  # a replay


def test_transfer_cannot_overdraw() -> None:
    world = World()
    assert reason_of(world, [transfer(world, 1, 2, 501, 0)]) == "balance"


def test_transfer_must_be_signed_by_its_sender() -> None:
    world = World()
    forged = Transfer(sender=world.requester.public_key, recipient=world.miners[0].public_key, amount=5, nonce=0)
    assert reason_of(world, [TransferTx(transfer=world.sign(world.miners[0], forged))]) == "transfer_signature"


def test_posting_a_task_escrows_its_reward_once() -> None:
    world = World()
    task = world.task(reward=300)
    apply_txs(world, [PostTaskTx(task=task)])
    task_id = crypto.message_hash(task.message)
    assert world.state.escrow[task_id] == 300 and world.state.tasks[task_id].status == "open"
    assert reason_of(world, [PostTaskTx(task=task)]) == "task_replay"


def test_expired_task_cannot_be_posted() -> None:
    world = World()
    assert reason_of(world, [PostTaskTx(task=world.task(deadline_ms=T0))]) == "deadline"


def test_a_task_posted_earlier_is_mined_later_and_closed() -> None:
    world = World()
    task = world.task()
    apply_txs(world, [PostTaskTx(task=task)])
    block, _ = world.round({0: [9000] * 4, 1: [8000] * 4}, task=task)
    validate_block(block, world.state)
    world.apply(block)
    task_id = crypto.message_hash(task.message)
    assert world.state.tasks[task_id].status == "done" and task_id not in world.state.escrow
    assert world.state.won_models[block.header.model_hash or ""] == block.height


@settings(max_examples=60, deadline=None)
@given(ops=st.lists(st.tuples(st.sampled_from(["transfer", "task"]), st.integers(0, 3), st.integers(0, 3),
                              st.integers(1, 2_000)), min_size=1, max_size=12))
def test_total_supply_is_conserved(ops: list[tuple[str, int, int, int]]) -> None:
    world = World()
    supply = world.state.total_supply
    nonces = [0, 0, 0, 0]
    for kind, a, b, amount in ops:
        if kind == "transfer":
            people = [world.requester, *world.miners]
            if world.state.balance(people[a].public_key) < amount:
                continue
            apply_txs(world, [transfer(world, a, b, amount, nonces[a])])
            nonces[a] += 1
        else:
            scores = {0: [9000, 8000, 8500, 100], 1: [amount % 10_000] * 4}
            block, _ = world.round(scores, task=world.task(reward=amount, target=b * 2_000))
            validate_block(block, world.state)
            world.apply(block)
        assert world.state.total_supply == supply
