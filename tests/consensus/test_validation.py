"""Each block rule: break exactly one thing, expect exactly its named reason."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from dlbc_ray import crypto
from dlbc_ray.consensus import process_block, propose_tx_block, validate_block
from dlbc_ray.consensus.proposal import make_genesis, seal
from dlbc_ray.consensus.validation import compute_block_hash
from dlbc_ray.crypto import Identity
from dlbc_ray.errors import InvalidBlock
from dlbc_ray.schema import (
    Block,
    EquivocationEvidence,
    PayoutTx,
    PostTaskTx,
    Transfer,
    TransferTx,
    Verdict,
)
from tests.builders import T0, World, fake_hash, resign

SCORES = {0: [9000, 9000, 9000, 9000], 1: [8000, 8000, 8000, 8000], 2: [7000, 7000, 7000, 7000]}


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
def good(world: World) -> Block:
    block, _ = world.round(SCORES)
    return block


def test_a_proposed_block_is_valid_and_pays_the_best(world: World, good: Block) -> None:
    validate_block(good, world.state)
    state = world.apply(good)
    assert good.header.winner == world.miners[0].public_key
    assert good.header.score == 9000
    assert state.total_supply == sum(a.amount for a in world.params.allocations)


def _with_body(world: World, good: Block, **body: object) -> Block:
    return seal(good.header, good.model_copy(update=body), world.proposer)


def _other_task_submission(world: World, good: Block) -> Block:
    other = world.submission(world.miners[0], world.task(), "x")
    return _with_body(world, good, submissions=(other, *good.submissions[1:]))


def _wrong_commit(world: World, good: Block) -> Block:
    sub = good.submissions[0].message.model_copy(update={"commit": fake_hash("nope")})
    return _with_body(world, good, submissions=(world.sign(world.miners[0], sub), *good.submissions[1:]))


def _foreign_ballot(world: World, good: Block) -> Block:
    stranger = Identity.from_seed("stranger", b"stranger")
    ballot = good.ballots[0].message.model_copy(update={"validator": stranger.public_key})
    return _with_body(world, good, ballots=(world.sign(stranger, ballot), *good.ballots[1:]))


def _ballot_by_other_signer(world: World, good: Block) -> Block:
    forged = world.sign(world.validators[1], good.ballots[0].message)
    return _with_body(world, good, ballots=(forged, *good.ballots[1:]))


def _flip_signature(signature: str) -> str:
    return ("1" if signature[0] == "0" else "0") + signature[1:]


def _bad_ballot_signature(world: World, good: Block) -> Block:
    bad = good.ballots[0].model_copy(update={"signature": _flip_signature(good.ballots[0].signature)})
    return _with_body(world, good, ballots=(bad, *good.ballots[1:]))


def _ballot_for_other_round(world: World, good: Block) -> Block:
    moved = world.resign_ballot(good.ballots[0], round_id=fake_hash("another round"))
    return _with_body(world, good, ballots=(moved, *good.ballots[1:]))


def _vote_on_unknown_commit(world: World, good: Block) -> Block:
    first = good.ballots[0].message
    votes = (first.votes[0].model_copy(update={"commit": fake_hash("ghost")}), *first.votes[1:])
    return _with_body(world, good, ballots=(world.resign_ballot(good.ballots[0], votes=votes), *good.ballots[1:]))


def _vote_twice_in_a_ballot(world: World, good: Block) -> Block:
    first = good.ballots[0].message
    votes = (first.votes[0], first.votes[0], *first.votes[1:])
    return _with_body(world, good, ballots=(world.resign_ballot(good.ballots[0], votes=votes), *good.ballots[1:]))


def _non_conflicting_evidence(world: World, good: Block) -> Block:
    return _with_body(world, good, evidence=(EquivocationEvidence(first=good.ballots[0], second=good.ballots[0]),))


def _too_few_voters(world: World, good: Block) -> Block:
    keep = {world.validators[0].public_key, world.validators[1].public_key}
    return _with_body(world, good, ballots=tuple(b for b in good.ballots if b.message.validator in keep))


def _stray_transfer(world: World, good: Block) -> Block:
    transfer = world.sign(world.requester, Transfer(sender=world.requester.public_key,
                                                     recipient=world.miners[0].public_key, amount=1, nonce=0))
    return _with_body(world, good, txs=(*good.txs, TransferTx(transfer=transfer)))


def _inflated_payout(world: World, good: Block) -> Block:
    *rest, last = good.txs
    assert isinstance(last, PayoutTx)
    return _with_body(world, good, txs=(*rest, last.model_copy(update={"amount": last.amount + 1})))


def _unposted_task(world: World, good: Block) -> Block:
    return _with_body(world, good, txs=good.txs[1:])


CASES: dict[str, Callable[[World, Block], Block]] = {
    "chain_id": lambda w, b: resign(b, w.proposer, chain_id=fake_hash("other chain")),
    "height": lambda w, b: resign(b, w.proposer, height=b.height + 1),
    "prev_hash": lambda w, b: resign(b, w.proposer, prev_hash=fake_hash("elsewhere")),
    "timestamp": lambda w, b: resign(b, w.proposer, timestamp_ms=w.state.timestamp_ms),
    "proposer": lambda w, b: resign(b, w.miners[0], proposer=w.miners[0].public_key),
    "block_signature": lambda w, b: b.model_copy(update={"signature": _flip_signature(b.signature)}),
    "submissions_root": lambda w, b: resign(b, w.proposer, submissions_root=fake_hash("s")),
    "ballots_root": lambda w, b: resign(b, w.proposer, ballots_root=fake_hash("v")),
    "txs_root": lambda w, b: resign(b, w.proposer, txs_root=fake_hash("t")),
    "evidence_root": lambda w, b: resign(b, w.proposer, evidence_root=fake_hash("e")),
    "submission_signer": lambda w, b: _with_body(
        w, b, submissions=(w.sign(w.miners[1], b.submissions[0].message), *b.submissions[1:])),
    "submission_signature": lambda w, b: _with_body(w, b, submissions=(
        b.submissions[0].model_copy(update={"signature": _flip_signature(b.submissions[0].signature)}),
        *b.submissions[1:])),
    "submission_task": _other_task_submission,
    "commit": _wrong_commit,
    "duplicate_submission": lambda w, b: _with_body(w, b, submissions=(*b.submissions, b.submissions[0])),
    "ballot_signer": _ballot_by_other_signer,
    "ballot_validator": _foreign_ballot,
    "ballot_signature": _bad_ballot_signature,
    "ballot_round": _ballot_for_other_round,
    "vote_commit": _vote_on_unknown_commit,
    "duplicate_vote": lambda w, b: _with_body(w, b, ballots=(*b.ballots, b.ballots[0])),
    "evidence": _non_conflicting_evidence,
    "quorum": _too_few_voters,
    "txs": _stray_transfer,
    "task": _unposted_task,
    "winner": lambda w, b: resign(b, w.proposer, winner=w.miners[1].public_key),
    "model_hash": lambda w, b: resign(b, w.proposer, model_hash=fake_hash("other model")),
    "score": lambda w, b: resign(b, w.proposer, score=9999),
    "difficulty": lambda w, b: resign(b, w.proposer, difficulty=1),
    "settlement": _inflated_payout,
    "genesis": lambda w, b: b.model_copy(update={"params": w.params}),
}


@pytest.mark.parametrize("reason", sorted(CASES))
def test_each_rule_rejects_exactly_its_breakage(world: World, good: Block, reason: str) -> None:
    bad = CASES[reason](world, good)
    with pytest.raises(InvalidBlock) as info:
        validate_block(bad, world.state)
    assert info.value.reason == reason
    assert info.value.height == bad.header.height


def test_money_rules_are_checked_when_the_block_is_applied(world: World) -> None:
    block, _ = world.round(SCORES, task=world.task(reward=10**9))
    validate_block(block, world.state)  # the decision is right; the requester just cannot pay
    with pytest.raises(InvalidBlock) as info:
        process_block(world.state, block, compute_block_hash(block.header))
    assert info.value.reason == "balance"


def test_a_ballot_that_votes_twice_on_one_submission_is_refused(world: World, good: Block) -> None:
    with pytest.raises(InvalidBlock) as info:
        validate_block(_vote_twice_in_a_ballot(world, good), world.state)
    assert info.value.reason == "duplicate_vote"


def test_equivocating_validator_is_recorded_and_ignored(world: World) -> None:
    task = world.task()
    subs = [world.submission(m, task) for m in world.miners[:2]]
    ballots = [world.ballot(v, subs, [9000, 8000]) for v in world.validators]
    liar = world.validators[3]
    ballots.append(world.ballot(liar, subs, [9000, 10_000]))  # a second, different ballot for the same round
    from dlbc_ray.consensus import propose_task_block

    round_id = world.round_id(crypto.message_hash(task.message))
    block, decision = propose_task_block(world.state, task, subs, ballots, world.proposer, T0 + 5000, round_id)
    validate_block(block, world.state)
    assert [e.first.message.validator for e in block.evidence] == [liar.public_key]
    assert liar.public_key not in decision.voters
    assert all(b.message.validator != liar.public_key for b in block.ballots)
    assert block.header.winner == world.miners[0].public_key


def test_a_block_carries_one_signature_per_validator_not_per_vote(world: World, good: Block) -> None:
    """3 submissions x 4 validators: 4 ballot signatures, each ballot holding its 3 votes in arrival order."""
    commits = [s.message.commit for s in good.submissions]
    assert len(good.ballots) == 4 and all([v.commit for v in b.message.votes] == commits for b in good.ballots)


# ------------------------------------------------------------------ genesis


def test_genesis_is_valid(world: World) -> None:
    validate_block(world.genesis, None)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda w, g: g.model_copy(update={"params": None}), "genesis"),
        (lambda w, g: resign(g, w.proposer, height=1), "height"),
        (lambda w, g: resign(g, w.proposer, prev_hash=fake_hash("x")), "prev_hash"),
        (lambda w, g: resign(g, w.proposer, chain_id=fake_hash("x")), "chain_id"),
        (lambda w, g: seal(g.header, g.model_copy(update={"txs": g.txs[1:]}), w.proposer), "txs"),
        (lambda w, g: resign(g, w.miners[0], proposer=w.miners[0].public_key), "proposer"),
        (lambda w, g: g.model_copy(update={"signature": _flip_signature(g.signature)}), "block_signature"),
    ],
)
def test_genesis_rules(world: World, change: Callable[[World, Block], Block], reason: str) -> None:
    with pytest.raises(InvalidBlock) as info:
        validate_block(change(world, world.genesis), None)
    assert info.value.reason == reason


def test_genesis_refuses_a_validator_set_without_safe_quorum() -> None:
    small = World(n_validators=3)  # f = 1 needs 4
    genesis = make_genesis(small.params, small.proposer, T0)
    with pytest.raises(InvalidBlock) as info:
        validate_block(genesis, None)
    assert info.value.reason == "validator_set"


# --------------------------------------------------------------- tx blocks


def test_transfer_block_is_valid_and_moves_money(world: World) -> None:
    transfer = world.sign(world.requester, Transfer(sender=world.requester.public_key,
                                                     recipient=world.miners[2].public_key, amount=7, nonce=0))
    block = propose_tx_block(world.state, [TransferTx(transfer=transfer)], world.proposer, T0 + 10)
    validate_block(block, world.state)
    state = world.apply(block)
    assert state.balance(world.miners[2].public_key) == 507


def test_tx_block_cannot_pay_out(world: World) -> None:
    payout = PayoutTx(task_id=fake_hash("t"), recipient=world.miners[0].public_key, amount=1, role="winner")
    block = propose_tx_block(world.state, [payout], world.proposer, T0 + 10)
    with pytest.raises(InvalidBlock) as info:
        validate_block(block, world.state)
    assert info.value.reason == "txs"


def test_tx_block_cannot_name_a_winner(world: World) -> None:
    block = propose_tx_block(world.state, [], world.proposer, T0 + 10)
    with pytest.raises(InvalidBlock) as info:
        validate_block(resign(block, world.proposer, winner=world.miners[0].public_key), world.state)
    assert info.value.reason == "winner"


def test_rejected_votes_leave_no_winner_and_refund(world: World) -> None:
    verdicts = {(i, j): Verdict.HASH_MISMATCH for i in range(3) for j in range(4)}
    task = world.task(deadline_ms=T0 + 5_000)
    before = world.state.balance(world.requester.public_key)
    world.apply(propose_tx_block(world.state, [PostTaskTx(task=task)], world.proposer, T0 + 1_000))
    block, task = world.round(SCORES, task=task, verdicts=verdicts, at_ms=T0 + 6_000)
    validate_block(block, world.state)
    state = world.apply(block)
    assert block.header.winner is None and block.header.score is None
    fees = sum(tx.amount for tx in block.txs if isinstance(tx, PayoutTx) and tx.role == "validator")
    assert state.balance(world.requester.public_key) == before - fees
    assert state.tasks[crypto.message_hash(task.message)].status == "refunded"
