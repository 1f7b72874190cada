"""Property: change any one value anywhere in a valid block, and the chain refuses it by name.

Every leaf of the block's JSON (header fields, each transaction, vote and submission,
their signers, chain ids and signatures) is a candidate. A mutated block must either be
refused by the wire types, be refused by ``validate_block``/``process_block`` with a named
reason, or encode to exactly the same canonical bytes (a no-op change).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from dlbc_ray import crypto
from dlbc_ray.consensus import process_block, validate_block
from dlbc_ray.consensus.validation import compute_block_hash
from dlbc_ray.errors import InvalidBlock
from dlbc_ray.schema import Block, PostTaskTx, Transfer, TransferTx
from tests.builders import World

SCORES = {0: [9000, 9000, 9000, 9000], 1: [8000, 8100, 7900, 8000], 2: [7000] * 4}


def _good() -> tuple[World, Block]:
    world = World()
    block, _ = world.round(SCORES)
    return world, block


def _leaves(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in _leaves(v, (*path, k))]
    if isinstance(node, list):
        return [p for i, v in enumerate(node) for p in _leaves(v, (*path, i))]
    return [path]


def _get(node: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        node = node[key]
    return node


def _set(node: Any, path: tuple[Any, ...], value: Any) -> None:
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


def _mutations(value: Any) -> st.SearchStrategy[Any]:
    """Values a forger would try in place of ``value``: nearby, same-shaped, or of another type."""
    if isinstance(value, bool):
        return st.just(not value)
    if isinstance(value, int):
        return st.one_of(st.integers(value - 3, value + 3), st.integers(-2**70, 2**70), st.just(str(value)))
    if isinstance(value, float):
        return st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.just(value * 2 + 1))
    if isinstance(value, str) and value and all(c in "0123456789abcdef" for c in value):
        return st.one_of(
            st.integers(0, len(value) - 1).flatmap(
                lambda i: st.sampled_from("0123456789abcdef").map(lambda c: value[:i] + c + value[i + 1:])),
            st.text("0123456789abcdef", min_size=len(value), max_size=len(value)),
            st.just(value.upper()), st.just(value[:-1]))
    if value is None:
        return st.one_of(st.just(0), st.just("0" * 64), st.just(True))
    return st.one_of(st.text(max_size=20), st.just(None), st.integers())


WORLD, GOOD = _good()
JSON = GOOD.model_dump(mode="json")
PATHS = _leaves(JSON)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_single_change_to_a_valid_block_is_refused_or_changes_nothing(data: st.DataObject) -> None:
    path = data.draw(st.sampled_from(PATHS), label="path")
    value = data.draw(_mutations(_get(JSON, path)), label="value")
    mutated = copy.deepcopy(JSON)
    _set(mutated, path, value)
    try:
        block = Block.model_validate(mutated)
    except ValidationError:
        return  # the wire types refuse it: it never reaches a rule
    if crypto.canonical_bytes(block) == crypto.canonical_bytes(GOOD):
        return
    with pytest.raises(InvalidBlock) as refused:
        validate_block(block, WORLD.state)
        process_block(WORLD.state, block, compute_block_hash(block.header))
    assert refused.value.reason and refused.value.height == block.height


def test_the_unmutated_block_is_valid() -> None:
    validate_block(GOOD, WORLD.state)
    process_block(WORLD.state, GOOD, compute_block_hash(GOOD.header))


# ---------------------------------------------------------------- accounting


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(st.tuples(st.sampled_from(["transfer", "task", "mine", "expire"]), st.integers(0, 3),
                                st.integers(1, 3_000)), min_size=1, max_size=12))
def test_random_transfers_and_tasks_conserve_supply_and_strand_no_escrow(steps: list[tuple[str, int, int]]) -> None:
    """Whatever mix of transfers, postings, mined rounds and expiries the chain accepts, supply is constant
    and every task past its deadline ends closed once its refund block is in."""
    from dlbc_ray.consensus import propose_tx_block
    from dlbc_ray.errors import DLBCError
    from tests.builders import T0

    world = World()
    supply = world.state.total_supply
    people = [world.requester, *world.miners]
    now = T0
    for kind, who, amount in steps:
        now += 1_000
        sender = people[who]
        try:
            if kind == "transfer":
                nonce = world.state.nonces.get(sender.public_key, 0)
                transfer = world.sign(sender, Transfer(sender=sender.public_key, recipient=people[(who + 1) % 4]
                                                       .public_key, amount=amount, nonce=nonce))
                block = propose_tx_block(world.state, [TransferTx(transfer=transfer)], world.proposer, now)
            elif kind == "task":
                task = world.task(reward=amount, deadline_ms=now + 5_000)
                block = propose_tx_block(world.state, [PostTaskTx(task=task)], world.proposer, now)
            elif kind == "mine" and world.state.open_tasks():
                record = world.state.open_tasks()[0]
                signed = world.sign(world.requester, record.task)
                block, _ = world.round(SCORES, task=signed, at_ms=now)
            elif kind == "expire" and world.state.open_tasks():
                record = world.state.open_tasks()[0]
                now = max(now, record.task.deadline_ms)
                block, _ = world.round({}, task=world.sign(world.requester, record.task), at_ms=now)
            else:
                continue
            validate_block(block, world.state)
            world.apply(block)
        except DLBCError:
            continue  # refused as a whole: nothing moved
        assert world.state.total_supply == supply
    for record in world.state.open_tasks():  # settle what is left, past every deadline
        now = max(now + 1_000, record.task.deadline_ms)
        block, _ = world.round({}, task=world.sign(world.requester, record.task), at_ms=now)
        validate_block(block, world.state)
        world.apply(block)
    assert world.state.total_supply == supply
    assert not world.state.escrow and not world.state.open_tasks()


# ------------------------------------------------ what the proposer itself may sign
# The proposer signs any header it likes, so a leaf change above mostly meets the
# signature. Here the proposer re-seals (roots and signature made anew) after changing one
# header field or re-ordering, dropping or repeating one body item: every such block must
# be refused by a rule. What stays the proposer's choice: the timestamp, and which whole
# ballots beyond a quorum to carry (so dropping an equivocator's evidence, whose ballot
# is out already, or one fusion vote of a quorum, is not tried here).


def _honest_blocks() -> list[tuple[str, World, Block]]:
    from dlbc_ray.consensus import propose_tx_block
    from dlbc_ray.schema import Verdict
    from tests.builders import T0

    out = [("winner", WORLD, GOOD)]
    refund = World()
    task = refund.task(deadline_ms=T0 + 5_000)
    refund.apply(propose_tx_block(refund.state, [PostTaskTx(task=task)], refund.proposer, T0 + 1_000))
    out.append(("refund", refund, refund.round({}, task=task, at_ms=T0 + 6_000)[0]))
    rejected = World(theft_penalty=100)
    verdicts = {(0, j): Verdict.STOLEN for j in range(4)}
    out.append(("penalty", rejected, rejected.round(SCORES, verdicts=verdicts)[0]))
    from tests.consensus.test_validation_rules import _equivocating_block

    liar = World()
    out.append(("evidence", liar, _equivocating_block(liar)))
    from tests.consensus.test_baas import fusion_round

    fused = World()
    out.append(("fusion", fused, fusion_round(fused, fused_score=9_000, without=(8_000, 8_600, 9_000))[0]))
    twice = World()
    out.append(("fusion evidence", twice, _double_fusion_vote_block(twice)))
    return out


def _double_fusion_vote_block(world: World) -> Block:
    """A BaaS block whose last validator signed two different fusion votes: named, and left out."""
    from dlbc_ray.consensus import propose_task_block
    from tests.consensus.test_baas import fusion_round

    block, _ = fusion_round(world, fused_score=9_000, without=(8_000, 8_600, 9_000))
    task = next(tx.task for tx in block.txs if isinstance(tx, PostTaskTx))
    liar = block.fusion_votes[-1]
    other = world.resign_ballot(liar, score=liar.message.score - 1)  # type: ignore[arg-type]
    fused, _ = propose_task_block(world.state, task, block.submissions, block.ballots, world.proposer,
                                  block.header.timestamp_ms, block.header.round_id or "", [*block.fusion_votes, other])
    assert [e.kind for e in fused.evidence] == ["fusion_equivocation"]
    return fused


HONEST = _honest_blocks()
HEADER_FIELDS = ["height", "prev_hash", "task_id", "round_id", "winner", "model_hash", "score", "difficulty", "fused",
                 "chain_id", "proposer"]
BODY_FIELDS = ["submissions", "ballots", "txs", "evidence", "fusion_votes"]


def _header_values(world: World, honest: Block) -> st.SearchStrategy[Any]:
    """Values of the right shapes, including every key, hash and number the block itself holds."""
    keys = [world.proposer.public_key, *(m.public_key for m in world.miners), world.requester.public_key]
    hashes = [v for v in honest.header.model_dump().values() if isinstance(v, str)]
    hashes += [s.message.model_hash for s in honest.submissions]
    numbers = [v for v in honest.header.model_dump().values() if isinstance(v, int)]
    return st.one_of(st.none(), st.booleans(), st.integers(0, 10_001), st.sampled_from(keys + hashes + numbers),
                     st.text(max_size=4).map(lambda s: crypto.sha256_hex(s.encode())))


def _body_edit(items: tuple[Any, ...]) -> st.SearchStrategy[tuple[Any, ...]]:
    n = len(items)
    if not n:
        return st.nothing()
    return st.one_of(
        st.integers(0, n - 1).map(lambda i: items[:i] + items[i + 1:]),  # drop one
        st.integers(0, n - 1).map(lambda i: items[:i] + (items[i],) + items[i:]),  # repeat one
        st.permutations(items).map(tuple),  # re-order
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_block_the_proposer_re_seals_with_one_change_is_refused(data: st.DataObject) -> None:
    from dlbc_ray.consensus.proposal import seal

    _, world, honest = data.draw(st.sampled_from(HONEST), label="block")
    if data.draw(st.booleans(), label="header?"):
        field = data.draw(st.sampled_from(HEADER_FIELDS), label="field")
        value = data.draw(_header_values(world, honest), label="value")
        try:
            header = type(honest.header).model_validate({**honest.header.model_dump(), field: value})
        except ValidationError:
            return
        body = honest
    else:
        field = data.draw(st.sampled_from([f for f in BODY_FIELDS if getattr(honest, f)]), label="field")
        items = data.draw(_body_edit(getattr(honest, field)), label="items")
        if field in ("evidence", "fusion_votes") and len(items) < len(getattr(honest, field)):
            return  # which ballots beyond a quorum to carry is the proposer's choice
        body = honest.model_copy(update={field: items})
        header = honest.header
    signer = world.proposer
    block = seal(header, body, signer)
    if crypto.canonical_bytes(block) == crypto.canonical_bytes(honest):
        return
    with pytest.raises(InvalidBlock) as refused:
        validate_block(block, world.state)
        process_block(world.state, block, compute_block_hash(block.header))
    assert refused.value.reason


@pytest.mark.parametrize("name", [name for name, _, _ in HONEST])
def test_each_honest_block_is_valid(name: str) -> None:
    _, world, block = next(h for h in HONEST if h[0] == name)
    validate_block(block, world.state)
    process_block(world.state, block, compute_block_hash(block.header))


# ------------------------------------------------ what a validator itself may sign
# A validator signs its own ballot, so it may say any verdict and score. What it cannot do
# is change the ballot's shape or binding: re-signed with one vote dropped, repeated or
# moved, or bound to another task, round, submission set, base or window, and the block
# (re-sealed by the proposer around it) is refused by a rule.

BALLOT_FIELDS = ["task_id", "round_id", "submissions_root", "base_hash", "close_ms"]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_ballot_its_validator_re_signs_with_one_structural_change_is_refused(data: st.DataObject) -> None:
    from dlbc_ray.consensus.proposal import seal

    _, world, honest = data.draw(st.sampled_from([h for h in HONEST if h[2].ballots]), label="block")
    index = data.draw(st.integers(0, len(honest.ballots) - 1), label="ballot")
    signed = honest.ballots[index]
    ballot = signed.message
    if data.draw(st.booleans(), label="binding?"):
        field = data.draw(st.sampled_from(BALLOT_FIELDS), label="field")
        old = getattr(ballot, field)
        value = data.draw(st.integers(0, old + 10) if isinstance(old, int) else
                          st.one_of(st.sampled_from(_header_values_of(honest)),
                                    st.text(max_size=4).map(lambda t: crypto.sha256_hex(t.encode()))), label="value")
        changes: dict[str, Any] = {field: value}
    else:
        votes = data.draw(_body_edit(ballot.votes), label="votes")
        if not votes:
            return  # a ballot with no vote is refused by the wire types
        changes = {"votes": votes}
    mine = world.resign_ballot(signed, **changes)
    if mine.message == ballot:
        return
    block = seal(honest.header, honest.model_copy(update={"ballots": (*honest.ballots[:index], mine,
                                                                        *honest.ballots[index + 1:])}), world.proposer)
    with pytest.raises(InvalidBlock) as refused:
        validate_block(block, world.state)
        process_block(world.state, block, compute_block_hash(block.header))
    assert refused.value.reason


def _header_values_of(block: Block) -> list[str]:
    """Every hash the block names: another round's, another set's, the parent's."""
    return [v for v in block.header.model_dump().values() if isinstance(v, str)] + [
        s.message.commit for s in block.submissions]
