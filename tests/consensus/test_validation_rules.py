"""The rules the ledger re-checks beyond the body's signatures, each broken alone.

Chain binding, ballots bound to the round's submission set and window, settlement
times, weights that already won, standing tasks, genesis and the clock. Every test
hands ``validate_block`` a block that breaks exactly one rule and expects its name.
"""

from __future__ import annotations

import pytest

from dlbc_ray import crypto
from dlbc_ray.consensus import decide, propose_task_block, propose_tx_block, validate_block
from dlbc_ray.consensus.proposal import make_genesis, seal
from dlbc_ray.consensus.settlement import compute_settlement
from dlbc_ray.errors import InvalidBlock
from dlbc_ray.schema import Allocation, Block, EquivocationEvidence, PostTaskTx, Verdict
from dlbc_ray.schema.base import MAX_AMOUNT
from tests.builders import T0, World, fake_hash, resign

SCORES = {0: [9000] * 4, 1: [8000] * 4, 2: [7000] * 4}
OTHER_CHAIN = fake_hash("another chain with the same keys")


@pytest.fixture
def world() -> World:
    return World()


def reason(block: Block, world: World, **kwargs: object) -> str:
    with pytest.raises(InvalidBlock) as info:
        validate_block(block, world.state, **kwargs)  # type: ignore[arg-type]
    return info.value.reason


def with_body(world: World, block: Block, **body: object) -> Block:
    return seal(block.header, block.model_copy(update=body), world.proposer)


def posted(world: World, deadline_ms: int) -> object:
    """A task escrowed in its own block at T0 + 1 s, open until ``deadline_ms``."""
    task = world.task(deadline_ms=deadline_ms)
    world.apply(propose_tx_block(world.state, [PostTaskTx(task=task)], world.proposer, T0 + 1_000))
    return task


# ------------------------------------------------------------------ one chain


def test_a_submission_signed_for_another_chain_is_refused(world: World) -> None:
    good, _ = world.round(SCORES)
    replayed = crypto.sign(world.miners[0], good.submissions[0].message, OTHER_CHAIN)
    assert reason(with_body(world, good, submissions=(replayed, *good.submissions[1:])), world) == "submission_chain"


def test_a_ballot_signed_for_another_chain_is_refused(world: World) -> None:
    good, _ = world.round(SCORES)
    replayed = crypto.sign(world.validators[0], good.ballots[0].message, OTHER_CHAIN)
    assert reason(with_body(world, good, ballots=(replayed, *good.ballots[1:])), world) == "ballot_chain"


def test_a_task_and_a_transfer_from_another_chain_are_refused(world: World) -> None:
    other = World(proposer=crypto.Identity.from_seed("other", b"other"))  # same requester key, new genesis
    task = other.task()
    block = propose_tx_block(world.state, [PostTaskTx(task=task)], world.proposer, T0 + 10)
    validate_block(block, world.state)  # the body's rules pass; the money rules refuse it
    from dlbc_ray.consensus import process_block

    with pytest.raises(InvalidBlock) as info:
        process_block(world.state, block, "00" * 32)
    assert info.value.reason == "task_chain"


# ---------------------------------------------------------------- ballots


def test_a_proposer_cannot_drop_the_best_submission_after_the_ballots(world: World) -> None:
    good, _ = world.round(SCORES)
    assert reason(with_body(world, good, submissions=good.submissions[1:]), world) == "ballot_set"


def test_a_ballot_on_another_submission_set_of_the_round_is_refused(world: World) -> None:
    """Signed over the block's commits minus one: a ballot from an earlier wave of the round, say."""
    good, _ = world.round(SCORES)
    from dlbc_ray.consensus.ballot import compute_submissions_root

    root = compute_submissions_root([s.message.commit for s in good.submissions[:2]])
    moved = world.resign_ballot(good.ballots[0], submissions_root=root)
    assert reason(with_body(world, good, ballots=(moved, *good.ballots[1:])), world) == "ballot_set"


def test_ballots_from_a_round_on_an_old_base_are_stale(world: World) -> None:
    good, _ = world.round(SCORES)
    old = tuple(world.resign_ballot(b, base_hash=fake_hash("a block long gone")) for b in good.ballots)
    assert reason(with_body(world, good, ballots=old), world) == "stale_round"


def test_votes_expire_after_the_round_ttl(world: World) -> None:
    ttl = world.params.round_ttl_ms
    good, _ = world.round(SCORES, at_ms=T0 + 1_000)
    late = resign(good, world.proposer, timestamp_ms=T0 + 1_000 + ttl + 1)
    assert reason(late, world) == "stale_round"


def test_ballots_of_two_windows_cannot_mix(world: World) -> None:
    good, _ = world.round(SCORES)
    first = good.ballots[0]
    moved = world.resign_ballot(first, close_ms=first.message.close_ms - 1)
    assert reason(with_body(world, good, ballots=(moved, *good.ballots[1:])), world) == "ballot_round"


def test_one_validator_signing_another_window_does_not_spoil_the_block(world: World) -> None:
    """The proposer keeps the window most validators signed; the odd ballot stays out (or the block would fail)."""
    task = world.task()
    subs = [world.submission(m, task) for m in world.miners]
    ballots = [world.ballot(v, subs, [9000, 8000, 7000], close_ms=T0 + 100) for v in world.validators]
    ballots[0] = world.resign_ballot(ballots[0], close_ms=T0 + 99)
    block, decision = propose_task_block(world.state, task, subs, ballots, world.proposer, T0 + 5_000,
                                         world.round_id(crypto.message_hash(task.message)))
    validate_block(block, world.state)
    assert world.validators[0].public_key not in decision.voters and len(block.ballots) == 3


# ----------------------------------------------------------- settlement time


def test_a_task_is_not_refunded_before_its_deadline(world: World) -> None:
    task = posted(world, deadline_ms=T0 + 60_000)
    rejected = {(i, j): Verdict.HASH_MISMATCH for i in SCORES for j in range(4)}
    block, _ = world.round(SCORES, task=task, verdicts=rejected, at_ms=T0 + 2_000)  # type: ignore[arg-type]
    assert block.header.model_hash is None
    assert reason(block, world) == "early_refund"


def test_a_winner_is_not_paid_long_after_the_deadline(world: World) -> None:
    task = posted(world, deadline_ms=T0 + 5_000)
    when = T0 + 5_000 + world.params.settle_grace_ms + 1
    block, _ = world.round(SCORES, task=task, at_ms=when)  # type: ignore[arg-type]
    assert block.header.winner is not None
    assert reason(block, world) == "late_settlement"


def test_a_refund_after_the_deadline_and_a_winner_within_the_grace_are_valid(world: World) -> None:
    task = posted(world, deadline_ms=T0 + 5_000)
    block, _ = world.round(SCORES, task=task, at_ms=T0 + 5_000 + world.params.settle_grace_ms)  # type: ignore
    validate_block(block, world.state)


# ------------------------------------------------------------ reused weights


def test_weights_that_won_never_win_again(world: World) -> None:
    first, _ = world.round(SCORES)
    world.apply(first)
    reused = first.header.model_hash
    task = world.task()
    subs = [world.submission(world.miners[0], task, model_hash=reused), world.submission(world.miners[1], task)]
    ballots = [world.ballot(v, subs, [9500, 8000], close_ms=T0 + 1_000) for v in world.validators]
    task_id = crypto.message_hash(task.message)
    honest, decision = propose_task_block(world.state, task, subs, ballots, world.proposer, T0 + 2_000,
                                          world.round_id(task_id))
    validate_block(honest, world.state)
    assert decision.winner is not None and decision.winner.miner == world.miners[1].public_key
    cheat = resign(honest, world.proposer, winner=world.miners[0].public_key, model_hash=reused, score=9500)
    assert reason(cheat, world) == "model_reused"


# ----------------------------------------------------------- standing tasks


@pytest.mark.parametrize("standing_signer", ["requester", "treasury"])
def test_only_its_own_block_may_post_a_standing_task(world: World, standing_signer: str) -> None:
    task = world.task(standing=True)
    if standing_signer == "requester":
        task = world.sign(world.requester, task.message.model_copy(update={"requester": world.requester.public_key}))
    block = propose_tx_block(world.state, [PostTaskTx(task=task)], world.proposer, T0 + 10)
    assert reason(block, world) == "standing_task"


# ------------------------------------------------------------- clock, genesis


def test_a_block_from_the_future_is_refused_on_import_but_not_on_replay(world: World) -> None:
    block = propose_tx_block(world.state, [], world.proposer, T0 + 60_000)
    assert reason(block, world, now_ms=T0 + 60_000 - world.params.max_clock_drift_ms - 1) == "future_timestamp"
    validate_block(block, world.state, now_ms=T0 + 60_000 - world.params.max_clock_drift_ms)
    validate_block(block, world.state)


@pytest.mark.parametrize("field", ["winner", "score", "difficulty", "fused", "round_id", "model_hash"])
def test_genesis_names_no_winner_round_or_difficulty(world: World, field: str) -> None:
    value = {"winner": world.miners[0].public_key, "score": 1, "difficulty": 1, "fused": True,
             "round_id": fake_hash("r"), "model_hash": fake_hash("m")}[field]
    bad = resign(world.genesis, world.proposer, **{field: value})
    with pytest.raises(InvalidBlock) as info:
        validate_block(bad, None)
    assert info.value.reason == "genesis"


def test_genesis_cannot_mint_past_the_supply_cap(world: World) -> None:
    allocations = (Allocation(account=world.requester.public_key, amount=MAX_AMOUNT),
                   Allocation(account=world.miners[0].public_key, amount=1))
    params = world.params.model_copy(update={"allocations": allocations})
    bad = make_genesis(params, world.proposer, T0)
    with pytest.raises(InvalidBlock) as info:
        validate_block(bad, None)
    assert info.value.reason == "supply"


# ------------------------------------------------- one honest encoding per block
# A proposer signs whatever it likes: each rule below is broken by a block the proposer
# re-seals itself, so only the rule (never the signature) can refuse it.


def _equivocating_block(world: World) -> Block:
    task = world.task()
    subs = [world.submission(m, task) for m in world.miners[:2]]
    ballots = [world.ballot(v, subs, [9000, 8000]) for v in world.validators]
    for scores in ([10_000, 10_000], [0, 10_000]):  # validator 3 signs two more, different ballots for the round
        ballots.append(world.ballot(world.validators[3], subs, scores))
    block, _ = propose_task_block(world.state, task, subs, ballots, world.proposer, T0 + 5_000,
                                  world.round_id(crypto.message_hash(task.message)))
    validate_block(block, world.state)
    assert len(block.evidence) == 1  # one pair per equivocating validator is proof enough
    return block


@pytest.mark.parametrize("malformed", ["ghost vote", "vote twice"])
def test_a_malformed_second_ballot_is_no_evidence_and_does_not_spoil_the_block(world: World, malformed: str) -> None:
    """The ledger refuses a malformed ballot even as evidence, so the proposer never offers one."""
    task = world.task()
    subs = [world.submission(m, task) for m in world.miners]
    ballots = [world.ballot(v, subs, [9000, 8000, 7000]) for v in world.validators]
    votes = ballots[3].message.votes
    bad = (votes[0].model_copy(update={"commit": fake_hash("ghost")}), *votes[1:]) if malformed == "ghost vote" \
        else (votes[0], votes[0], *votes[1:])
    ballots.append(world.resign_ballot(ballots[3], votes=bad))
    block, _ = propose_task_block(world.state, task, subs, ballots, world.proposer, T0 + 5_000,
                                  world.round_id(crypto.message_hash(task.message)))
    validate_block(block, world.state)
    assert not block.evidence and len(block.ballots) == 4


def test_a_partial_ballot_is_refused(world: World) -> None:
    """A validator's ballot that leaves out one submission (quorum still holds) would cost it its fee, unseen.

    The validator itself signed the short ballot over the whole set: only the rule, not a signature, refuses it.
    """
    task = world.task()
    subs = [world.submission(m, task) for m in world.miners]
    ballots = [world.ballot(v, subs, [9000] * 3) for v in world.validators]
    honest, _ = propose_task_block(world.state, task, subs, ballots, world.proposer, T0 + 5_000,
                                   world.round_id(crypto.message_hash(task.message)))
    last = honest.ballots[3]
    short = world.resign_ballot(last, votes=last.message.votes[:2])
    partial = (*honest.ballots[:3], short)
    decision = decide([s.message for s in subs], [b.message for b in partial], world.params.validators, 5_000)
    assert last.message.validator not in decision.voters  # the decision stands without that vote
    balances = {**world.state.balances, world.requester.public_key: world.state.balance(world.requester.public_key)
                - task.message.reward}
    paid = compute_settlement(honest.header.task_id or "", task.message, [s.message for s in subs], decision,
                              world.params, balances)
    cheat = with_body(world, honest, ballots=partial, txs=(honest.txs[0], *paid))
    assert reason(cheat, world) == "partial_ballot"


def test_the_proposer_keeps_only_whole_ballots(world: World) -> None:
    from dlbc_ray.consensus.ballot import select_ballots

    task = world.task()
    subs = [world.submission(m, task) for m in world.miners]
    commits = [s.message.commit for s in subs]
    ballots = [world.ballot(v, subs, [9000] * 3) for v in world.validators]
    ballots[3] = world.resign_ballot(ballots[3], votes=ballots[3].message.votes[:2])
    chosen = select_ballots(ballots, world.round_id(subs[0].message.task_id), commits, world.params.validators)
    assert [b.message.validator for b in chosen] == sorted(v.public_key for v in world.validators[:3])


def test_ballots_out_of_their_canonical_order_are_refused(world: World) -> None:
    good, _ = world.round(SCORES)
    swapped = (good.ballots[1], good.ballots[0], *good.ballots[2:])
    assert reason(with_body(world, good, ballots=swapped), world) == "vote_order"


def test_votes_out_of_arrival_order_within_a_ballot_are_refused(world: World) -> None:
    good, _ = world.round(SCORES)
    first = good.ballots[0]
    shuffled = world.resign_ballot(first, votes=first.message.votes[::-1])
    assert reason(with_body(world, good, ballots=(shuffled, *good.ballots[1:])), world) == "vote_order"


def test_fusion_votes_out_of_order_are_refused() -> None:
    from dlbc_ray.consensus.ballot import find_ballot_fault
    from dlbc_ray.schema import FusionVote

    world = World()
    good, _ = world.round(SCORES)
    commits = [s.message.commit for s in good.submissions[:2]]
    fused = [world.sign(v, FusionVote(task_id=good.header.task_id, round_id=good.header.round_id,
                                      validator=v.public_key, rule="fedavg", contributors=tuple(commits),
                                      fused_hash=fake_hash("fused"), score=9500, without=(9000, 8000)))
             for v in world.validators]
    ordered = tuple(sorted(fused, key=lambda s: s.message.validator))
    assert find_ballot_fault(good.model_copy(update={"fusion_votes": ordered})) is None
    fault = find_ballot_fault(good.model_copy(update={"fusion_votes": ordered[::-1]}))
    assert fault is not None and fault[0] == "vote_order"


def test_evidence_is_one_pair_per_validator(world: World) -> None:
    block = _equivocating_block(world)
    ev = block.evidence[0]
    liar = world.validators[3]
    subs = list(block.submissions)
    pair = sorted((world.ballot(liar, subs, [9000, 8000]), world.ballot(liar, subs, [0, 10_000])),
                  key=lambda s: crypto.message_hash(s.message))
    second = ev.model_copy(update={"first": pair[0], "second": pair[1]})
    assert reason(with_body(world, block, evidence=(ev, second)), world) == "evidence_order"
    assert reason(with_body(world, block, evidence=(ev, ev)), world) == "evidence_order"


def test_an_equivocating_pair_has_one_order(world: World) -> None:
    block = _equivocating_block(world)
    ev = block.evidence[0]
    flipped = ev.model_copy(update={"first": ev.second, "second": ev.first})
    assert reason(with_body(world, block, evidence=(flipped, *block.evidence[1:])), world) == "evidence_order"


def test_an_equivocators_ballot_stays_out_of_the_certificate(world: World) -> None:
    block = _equivocating_block(world)
    liar = block.evidence[0].first.message.validator
    theirs = world.ballot(world.validators[3], list(block.submissions), [9000, 8000])  # its first ballot
    ballots = tuple(sorted((*block.ballots, theirs), key=lambda s: s.message.validator))
    assert any(b.message.validator == liar for b in ballots)
    assert reason(with_body(world, block, ballots=ballots), world) == "evidence"


def test_a_block_without_submissions_names_no_round(world: World) -> None:
    task = posted(world, deadline_ms=T0 + 5_000)
    refund, _ = world.round({}, task=task, at_ms=T0 + 6_000)  # type: ignore[arg-type]
    assert refund.header.round_id is None
    validate_block(refund, world.state)
    assert reason(resign(refund, world.proposer, round_id=fake_hash("any round")), world) == "round_id"


def test_a_round_whose_window_outlives_the_task_deadline_is_refused(world: World) -> None:
    task = posted(world, deadline_ms=T0 + 5_000)
    subs = [world.submission(m, task) for m in world.miners]  # type: ignore[arg-type]
    late = [world.ballot(v, subs, [9000] * 3, close_ms=T0 + 5_001) for v in world.validators]
    task_id = crypto.message_hash(task.message)  # type: ignore[attr-defined]
    block, _ = propose_task_block(world.state, task, subs, late, world.proposer, T0 + 6_000,  # type: ignore
                                  world.round_id(task_id))
    assert reason(block, world) == "late_round"
    on_time = [world.ballot(v, subs, [9000] * 3, close_ms=T0 + 5_000) for v in world.validators]
    block, _ = propose_task_block(world.state, task, subs, on_time, world.proposer, T0 + 6_000,  # type: ignore
                                  world.round_id(task_id))
    validate_block(block, world.state)


# ------------------------------------------------------ fusion votes, transfers, body


def _fusion_block(world: World) -> Block:
    from tests.consensus.test_baas import fusion_round

    block, _ = fusion_round(world, fused_score=9_000, without=(8_000, 8_600, 9_000))
    validate_block(block, world.state)
    return block


def _swap_fusion_vote(world: World, block: Block, signed: object) -> Block:
    return with_body(world, block, fusion_votes=(signed, *block.fusion_votes[1:]))


def test_a_fusion_vote_from_another_chain_is_refused(world: World) -> None:
    block = _fusion_block(world)
    replayed = crypto.sign(world.validators[0], block.fusion_votes[0].message, OTHER_CHAIN)
    assert reason(_swap_fusion_vote(world, block, replayed), world) == "fusion_vote_chain"


def test_a_fusion_vote_signed_by_someone_else_is_refused(world: World) -> None:
    block = _fusion_block(world)
    forged = world.sign(world.miners[0], block.fusion_votes[0].message)
    assert reason(_swap_fusion_vote(world, block, forged), world) == "fusion_vote_signer"


def test_a_fusion_vote_whose_signature_does_not_verify_is_refused(world: World) -> None:
    block = _fusion_block(world)
    first = block.fusion_votes[0]
    bad = first.model_copy(update={"signature": block.fusion_votes[1].signature})
    assert reason(_swap_fusion_vote(world, block, bad), world) == "fusion_vote_signature"


def test_a_fusion_vote_of_another_round_is_refused(world: World) -> None:
    block = _fusion_block(world)
    first = block.fusion_votes[0]
    signer = next(v for v in world.validators if v.public_key == first.message.validator)
    moved = world.sign(signer, first.message.model_copy(update={"round_id": fake_hash("another round")}))
    assert reason(_swap_fusion_vote(world, block, moved), world) == "fusion_vote_round"


def test_an_equivocators_fusion_vote_stays_out_of_the_block(world: World) -> None:
    """BaaS too: once a validator is proven to equivocate, neither its ballot nor its fusion vote may count."""
    block = _fusion_block(world)
    liar = block.ballots[-1]
    other = world.resign_ballot(liar, votes=tuple(v.model_copy(update={"score": v.score + 1})
                                                  for v in liar.message.votes))
    pair = sorted((liar, other), key=lambda s: crypto.message_hash(s.message))
    proof = EquivocationEvidence(first=pair[0], second=pair[1])
    assert any(f.message.validator == liar.message.validator for f in block.fusion_votes)
    cheat = with_body(world, block, ballots=block.ballots[:-1], evidence=(proof,))
    assert reason(cheat, world) == "evidence"


def test_a_validator_that_signs_two_fusion_votes_is_named_and_left_out(world: World) -> None:
    """BaaS: two different fusion votes of one validator for the round are equivocation, as two ballots are."""
    block = _fusion_block(world)
    task = next(tx.task for tx in block.txs if isinstance(tx, PostTaskTx))
    liar = block.fusion_votes[-1]
    other = world.resign_ballot(liar, score=liar.message.score - 1)  # type: ignore[arg-type]
    fused, _ = propose_task_block(world.state, task, block.submissions, block.ballots, world.proposer,
                                  block.header.timestamp_ms, block.header.round_id or "",
                                  [*block.fusion_votes, other])
    validate_block(fused, world.state)
    assert [e.kind for e in fused.evidence] == ["fusion_equivocation"]
    culprit = liar.message.validator
    assert culprit not in {b.message.validator for b in fused.ballots} | {v.message.validator for v in
                                                                        fused.fusion_votes}
    assert fused.header.fused  # three honest fusion votes of four are still a quorum


def test_fusion_votes_that_do_not_conflict_are_no_evidence(world: World) -> None:
    from dlbc_ray.schema import FusionEquivocationEvidence

    block = _fusion_block(world)
    same = FusionEquivocationEvidence(first=block.fusion_votes[0], second=block.fusion_votes[0])
    assert reason(with_body(world, block, evidence=(same,)), world) == "evidence"


def test_a_transfer_signed_for_another_chain_is_refused(world: World) -> None:
    from dlbc_ray.consensus import process_block
    from dlbc_ray.schema import Transfer, TransferTx

    transfer = Transfer(sender=world.requester.public_key, recipient=world.miners[0].public_key, amount=5, nonce=0)
    replayed = crypto.sign(world.requester, transfer, OTHER_CHAIN)
    block = propose_tx_block(world.state, [TransferTx(transfer=replayed)], world.proposer, T0 + 10)
    with pytest.raises(InvalidBlock) as info:
        process_block(world.state, block, "00" * 32)
    assert info.value.reason == "transfer_chain"


def test_a_block_without_a_task_carries_no_submissions_or_ballots(world: World) -> None:
    good, _ = world.round(SCORES)
    tx_block = propose_tx_block(world.state, [], world.proposer, T0 + 10)
    assert reason(with_body(world, tx_block, submissions=good.submissions[:1]), world) == "body"


def test_the_money_rules_hold_on_their_own(world: World) -> None:
    """``process_block`` re-checks money even for a block whose other rules were skipped."""
    from dlbc_ray.consensus import process_block
    from dlbc_ray.schema import MintTx

    minted = with_body(world, propose_tx_block(world.state, [], world.proposer, T0 + 10),
                       txs=(MintTx(recipient=world.miners[0].public_key, amount=1),))
    with pytest.raises(InvalidBlock) as info:
        process_block(world.state, minted, "00" * 32)
    assert info.value.reason == "mint"
    good, _ = world.round(SCORES)
    short = with_body(world, good, txs=good.txs[:-1])  # the winner's payout left in escrow
    with pytest.raises(InvalidBlock) as info:
        process_block(world.state, short, "00" * 32)
    assert info.value.reason == "escrow"


# ---------------------------------------------------------------- the list of rules


def test_every_named_reason_has_a_test_that_expects_it() -> None:
    """A rule added to the ledger without a test naming its reason fails here (the class, not the case)."""
    import re
    from pathlib import Path

    import dlbc_ray.consensus as package

    root = Path(package.__file__).parent
    sources = "".join((root / name).read_text() for name in ("validation.py", "task_rules.py", "state.py", "ballot.py",
                                                                  "verdicts.py"))
    reasons = set(re.findall(r'_fail\(\s*(?:[a-z_.]+,\s*)?"([a-z_]+)"', sources))
    reasons |= set(re.findall(r'^\s*return "([a-z_]+)", (?:Verdict\.[A-Z_]+, )?f?"', sources, re.M))
    reasons |= set(re.findall(r'\(.*?, "([a-z_]+)", "', sources))
    assert {"partial_ballot", "late_round", "transfer_chain", "fusion_vote_round", "body",
            "submission_chain", "commit"} <= reasons  # the scan works
    tests = "".join(p.read_text() for p in Path(__file__).parent.glob("test_*.py"))
    untested = sorted(r for r in reasons if f'"{r}"' not in tests)
    assert not untested, f"reasons no test in tests/consensus expects: {untested}"
