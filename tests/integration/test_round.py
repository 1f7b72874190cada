"""Full rounds on a real local Ray cluster: real actors, Lightning training, SQLite, signatures."""

from __future__ import annotations

import time

import pytest

from dlbc_ray import crypto
from dlbc_ray.consensus.quorum import compute_median_score
from dlbc_ray.ledger import ArtifactStore, Chain, verify_chain
from dlbc_ray.runtime.network import make_task, run_round
from dlbc_ray.schema import PayoutTx, Verdict
from dlbc_ray.schema.round_messages import RoundStatus

pytestmark = pytest.mark.ray


def mine(live, **task_changes):
    task_cfg = live.cfg.task.model_copy(update=task_changes)
    task = make_task(live.net.identities.requester, task_cfg, live.bundle, nonce=time.time_ns(),
                     created_ms=time.time_ns() // 10**6, chain_id=live.net.chain_id)
    seen: list[RoundStatus] = []
    report = run_round(live.net, task, live.data, timeout_s=600, on_status=seen.append)
    return task, report, seen


def test_a_round_commits_a_valid_block_won_by_the_best_median(live) -> None:
    task, report, seen = mine(live)
    assert report.committed, report.failure
    chain = Chain.open(live.home.ledger, create=False)
    block = chain.block(report.height)
    medians = {}
    for sub in block.submissions:
        scores = [v.score for b in block.ballots for v in b.message.votes
                  if v.commit == sub.message.commit and v.verdict is Verdict.VALID]
        assert len(scores) == 4  # every honest validator accepted every honest miner
        medians[sub.message.miner] = compute_median_score(scores)
    best = max(medians.values())
    assert block.header.winner == next(m for m, s in medians.items() if s == best)  # earliest on ties
    assert block.header.score == best == report.score and best >= task.message.target
    assert block.header.task_id == crypto.message_hash(task.message)
    assert {s.message.miner for s in block.submissions} == {m.public_key for m in live.net.miners}
    # the winner is paid, every voter gets its fee, nothing is created or lost
    payouts = [tx for tx in block.txs if isinstance(tx, PayoutTx)]
    assert {p.recipient for p in payouts if p.role == "validator"} == {v.public_key for v in live.net.validators}
    assert sum(p.amount for p in payouts) == task.message.reward
    # the winner's weights are kept, named by their canonical hash
    weights = ArtifactStore(live.home.artifacts).get(block.header.model_hash or "")
    assert crypto.hash_weights(weights) == block.header.model_hash
    # the user saw the phases and every miner's epochs go by
    phases = {s.phase for s in seen}
    assert "collecting" in phases
    assert any(a.epoch >= 1 for s in seen for a in s.actors.values())


def test_rounds_extend_one_chain_that_verifies(live) -> None:
    before = Chain.open(live.home.ledger, create=False).height
    _, first, _ = mine(live)
    _, second, _ = mine(live)
    assert (first.height, second.height) == (before + 1, before + 2)
    assert second.prev_hash == first.block_hash
    state = verify_chain(live.home.ledger)
    assert state.height == second.height and state.head_hash == second.block_hash


def test_an_unreachable_target_commits_nothing_before_the_deadline(live) -> None:
    # A winnerless block before the deadline would be an early refund (the ledger refuses it): the
    # round ends without a block and the task stays open. Refunds past the deadline are the
    # settler's (tests/actors/test_consensus_settlement.py, tests/integration/test_faults.py).
    before = Chain.open(live.home.ledger, create=False).height
    _, report, _ = mine(live, target=1.0, epochs=1)
    assert not report.committed and report.height is None
    assert "stays open until its deadline" in (report.failure or "")
    assert Chain.open(live.home.ledger, create=False).height == before