"""BaaS on the ledger: fused models, the fusion quorum, the fallback, and pay by contribution."""

from __future__ import annotations

import pytest

from dlbc_ray import crypto
from dlbc_ray.consensus import propose_task_block, validate_block
from dlbc_ray.consensus.proposal import seal
from dlbc_ray.errors import InvalidBlock, NoQuorum
from dlbc_ray.schema import FusionVote, PayoutTx, Signed, Task, Verdict
from tests.builders import T0, World, fake_hash, resign

FUSED = fake_hash("fused weights")
SCORES = {0: [8_000] * 4, 1: [7_500] * 4, 2: [7_000] * 4}


def fusion_round(world: World, *, fused_score: int, without: tuple[int, ...], voters: int = 4,
                 verdicts=None, rule: str = "fedavg", task: Signed[Task] | None = None):
    task = task or world.task(fusion=rule)
    task_id = crypto.message_hash(task.message)
    subs = [world.submission(world.miners[i], task) for i in SCORES]
    ballots = [world.ballot(v, subs, [row[j] for row in SCORES.values()],
                            [(verdicts or {}).get((i, j), Verdict.VALID) for i in SCORES])
               for j, v in enumerate(world.validators)]
    accepted = [s.message.commit for i, s in enumerate(subs) if not verdicts or (i, 0) not in verdicts]
    fusion_votes = [world.sign(v, FusionVote(task_id=task_id, round_id=world.round_id(task_id), validator=v.public_key,
                                              rule=rule, contributors=tuple(accepted), fused_hash=FUSED,
                                              score=fused_score, without=without[:len(accepted)]))
                    for v in world.validators[:voters]]
    return propose_task_block(world.state, task, subs, ballots, world.proposer, T0 + 1_000, world.round_id(task_id),
                              fusion_votes)


def test_a_better_fusion_is_delivered_and_pays_contributors_by_their_gain() -> None:
    world = World()
    block, _ = fusion_round(world, fused_score=9_000, without=(8_000, 8_600, 9_000))
    validate_block(block, world.state)
    h = block.header
    assert (h.fused, h.winner, h.model_hash, h.score) == (True, None, FUSED, 9_000)
    paid = {tx.recipient: tx.amount for tx in block.txs if isinstance(tx, PayoutTx) and tx.role == "contributor"}
    m = [x.public_key for x in world.miners]
    assert paid[m[0]] > paid[m[1]] and m[2] not in paid  # gains 1000 and 400; nothing added, nothing paid
    assert sum(tx.amount for tx in block.txs if isinstance(tx, PayoutTx)) == 1_000
    state = world.apply(block)
    assert state.tasks[h.task_id or ""].status == "done" and state.won_models[FUSED] == h.height


def test_a_fusion_worse_than_the_best_single_model_is_not_delivered() -> None:
    world = World()
    block, _ = fusion_round(world, fused_score=7_900, without=(7_000, 7_000, 7_000))
    validate_block(block, world.state)
    assert not block.header.fused and block.header.winner == world.miners[0].public_key
    assert block.fusion_votes  # the block still records what the fusion scored
    assert any(isinstance(tx, PayoutTx) and tx.role == "winner" for tx in block.txs)


def test_rejected_models_are_not_contributors() -> None:
    world = World()
    stolen = {(2, j): Verdict.STOLEN for j in range(4)}
    block, _ = fusion_round(world, fused_score=9_000, without=(8_000, 8_600), verdicts=stolen)
    validate_block(block, world.state)
    assert len(block.fusion_votes[0].message.contributors) == 2
    assert all(tx.recipient != world.miners[2].public_key for tx in block.txs if isinstance(tx, PayoutTx))


def test_without_two_thirds_on_one_fused_model_there_is_no_block() -> None:
    world = World()
    with pytest.raises(NoQuorum, match="2/3"):
        fusion_round(world, fused_score=9_000, without=(8_000, 8_600, 9_000), voters=2)


def test_the_ledger_recomputes_the_fusion() -> None:
    world = World()
    block, _ = fusion_round(world, fused_score=9_000, without=(8_000, 8_600, 9_000))
    with pytest.raises(InvalidBlock) as info:
        validate_block(resign(block, world.proposer, score=9_500), world.state)
    assert info.value.reason == "score"
    short = seal(block.header, block.model_copy(update={"fusion_votes": block.fusion_votes[:2]}), world.proposer)
    with pytest.raises(InvalidBlock) as info:
        validate_block(short, world.state)
    assert info.value.reason == "fusion_quorum"


def test_fusion_votes_do_not_belong_in_a_winner_task_block() -> None:
    world = World()
    fused, _ = fusion_round(world, fused_score=9_000, without=(8_000, 8_600, 9_000))
    plain, _ = world.round(SCORES)
    stray = seal(plain.header, plain.model_copy(update={"fusion_votes": fused.fusion_votes}), world.proposer)
    with pytest.raises(InvalidBlock) as info:
        validate_block(stray, world.state)
    assert info.value.reason == "fusion"
