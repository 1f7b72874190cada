"""Escrow rules: which open tasks are owed a refund, how a pool differs from the chain, the run audit."""

from __future__ import annotations

import pytest

from dlbc_ray import crypto
from dlbc_ray.consensus import propose_task_block, propose_tx_block
from dlbc_ray.consensus.escrow import audit_escrow, compute_refunds, find_posting, get_posting, reconcile
from dlbc_ray.consensus.validation import compute_block_hash
from dlbc_ray.schema import PostTaskTx, Signed, Task
from tests.builders import T0, World


@pytest.fixture
def world() -> World:
    return World()


def post(world: World, *tasks: Signed[Task], at_ms: int | None = None) -> list[str]:
    when = at_ms if at_ms is not None else world.state.timestamp_ms + 1
    world.apply(propose_tx_block(world.state, [PostTaskTx(task=t) for t in tasks], world.proposer, when))
    return [crypto.message_hash(t.message) for t in tasks]


def refund(world: World, task: Signed[Task], at_ms: int) -> None:
    task_id = crypto.message_hash(task.message)
    world.apply(propose_task_block(world.state, task, [], [], world.proposer, at_ms, world.round_id(task_id))[0])


def test_a_task_is_new_then_open_then_refunded(world: World) -> None:
    task = world.task(deadline_ms=T0 + 5_000)
    task_id = crypto.message_hash(task.message)
    assert get_posting(world.state, task_id) == "new"
    post(world, task)
    assert get_posting(world.state, task_id) == "open"
    refund(world, task, T0 + 6_000)
    assert get_posting(world.state, task_id) == "refunded"


def test_only_open_tasks_strictly_past_their_deadline_are_refundable(world: World) -> None:
    early, late = world.task(deadline_ms=T0 + 5_000), world.task(deadline_ms=T0 + 9_000)
    early_id, late_id = post(world, early, late)
    assert compute_refunds(world.state, T0 + 5_000) == []  # at the deadline itself: not yet
    assert compute_refunds(world.state, T0 + 5_001) == [early_id]
    assert compute_refunds(world.state, T0 + 10_000) == sorted([early_id, late_id])  # one block posted both: by id
    assert compute_refunds(world.state, T0 + 10_000, busy={early_id}) == [late_id]
    refund(world, early, T0 + 10_000)
    assert compute_refunds(world.state, T0 + 10_001) == [late_id]  # a refunded task is owed nothing


def test_refunds_come_earliest_posting_first(world: World) -> None:
    first = post(world, world.task(deadline_ms=T0 + 9_000))
    second = post(world, world.task(deadline_ms=T0 + 5_000))
    assert compute_refunds(world.state, T0 + 10_000) == first + second


def test_reconcile_names_closed_unknown_and_missing_tasks(world: World) -> None:
    a, b, c = world.task(deadline_ms=T0 + 5_000), world.task(), world.task()
    a_id, b_id, c_id = post(world, a, b, c)
    refund(world, a, T0 + 6_000)
    diff = reconcile([a_id, b_id, "f" * 64], world.state)
    assert dict(diff.closed) == {a_id: "refunded"}
    assert diff.unknown == ("f" * 64,)
    assert diff.missing == (c_id,)


def test_a_pool_in_step_with_the_chain_needs_nothing(world: World) -> None:
    ids = post(world, world.task(), world.task())
    diff = reconcile(ids, world.state)
    assert not diff.closed and not diff.unknown and not diff.missing


def test_find_posting_returns_the_requesters_signed_task(world: World) -> None:
    task, other = world.task(), world.task()
    post(world, task, other)
    block = world.genesis  # a block that posts nothing
    assert find_posting(block, crypto.message_hash(task.message)) is None
    posting = propose_tx_block(world.state, [PostTaskTx(task=world.task())], world.proposer, T0 + 50)
    assert find_posting(posting, crypto.message_hash(task.message)) is None
    found = find_posting(propose_tx_block(world.state, [PostTaskTx(task=other), PostTaskTx(task=task)],
                                          world.proposer, T0 + 60), crypto.message_hash(task.message))
    assert found == task


class TestAudit:
    def run(self, world: World) -> tuple[list, list[str], dict[int, str]]:
        blocks = [world.genesis]
        submitted = []
        for deadline in (T0 + 5_000, T0 + 90_000):
            task = world.task(deadline_ms=deadline)
            block = propose_tx_block(world.state, [PostTaskTx(task=task)], world.proposer, world.state.timestamp_ms + 1)
            world.apply(block)
            blocks.append(block)
            submitted.append(crypto.message_hash(task.message))
        return blocks, submitted, {b.header.height: compute_block_hash(b.header) for b in blocks}

    def test_a_clean_run_passes(self, world: World) -> None:
        blocks, submitted, seen = self.run(world)
        audit = audit_escrow(world.state, blocks, submitted, {world.requester.public_key}, seen, T0 + 4_000)
        assert audit.unsettled == tuple(sorted(submitted)) and not audit.ok  # escrowed, not yet settled
        assert audit.supply == audit.genesis_supply and not audit.stuck and not audit.extra

    def test_an_open_task_past_its_deadline_is_stuck(self, world: World) -> None:
        blocks, submitted, seen = self.run(world)
        audit = audit_escrow(world.state, blocks, submitted, {world.requester.public_key}, seen, T0 + 6_000)
        assert audit.stuck == (submitted[0],)

    def test_an_escrow_nobody_submitted_is_a_double_escrow(self, world: World) -> None:
        blocks, submitted, seen = self.run(world)
        audit = audit_escrow(world.state, blocks, submitted[:1], {world.requester.public_key}, seen, T0)
        assert audit.extra == (submitted[1],)

    def test_a_submitted_task_never_posted_is_unposted(self, world: World) -> None:
        blocks, submitted, seen = self.run(world)
        audit = audit_escrow(world.state, blocks, [*submitted, "e" * 64], {world.requester.public_key}, seen, T0)
        assert audit.unposted == ("e" * 64,)

    def test_a_block_seen_committed_and_now_missing_is_lost(self, world: World) -> None:
        blocks, submitted, seen = self.run(world)
        audit = audit_escrow(world.state, blocks[:-1], submitted, {world.requester.public_key}, seen, T0)
        assert audit.lost_heights == (len(blocks) - 1,)
        forked = {**seen, 1: "0" * 64}
        assert audit_escrow(world.state, blocks, submitted, set(), forked, T0).lost_heights == (1,)

    def test_settled_tasks_pass(self, world: World) -> None:
        blocks, submitted, seen = self.run(world)
        for task_id in submitted:
            record = world.state.tasks[task_id]
            signed = find_posting(blocks[record.posted_height], task_id)
            assert signed is not None
            block = propose_task_block(world.state, signed, [], [], world.proposer, T0 + 100_000,
                                       world.round_id(task_id))[0]
            world.apply(block)
            blocks.append(block)
        audit = audit_escrow(world.state, blocks, submitted, {world.requester.public_key}, seen, T0 + 200_000)
        assert audit.ok, audit
