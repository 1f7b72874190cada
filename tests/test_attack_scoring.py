"""The attack suite's pure parts (no Ray): the censoring proposer's block and how the new kinds are judged."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from dlbc_ray import crypto
from dlbc_ray.attack.kinds import attack_kind
from dlbc_ray.attack.judging import ADVERSARY, Trial
from dlbc_ray.attack.plays import drop_best
from dlbc_ray.consensus import validate_block
from dlbc_ray.consensus.ballot import compute_submissions_root
from dlbc_ray.consensus.proposal import seal
from dlbc_ray.errors import InvalidBlock
from dlbc_ray.schema.round_messages import RoundReport, SubmissionOutcome
from tests.builders import World, fake_hash

SCORES = {0: [9000] * 4, 1: [8000] * 4, 2: [7000] * 4}
DROP = "block without the best submission"


def test_drop_best_removes_the_winner_and_re_decides_the_rest_under_the_signed_ballots() -> None:
    world = World()
    honest, _ = world.round(SCORES)
    forged = drop_best(honest, world.state, world.proposer)
    assert honest.header.winner == world.miners[0].public_key
    assert [s.message.commit for s in forged.submissions] == [s.message.commit for s in honest.submissions[1:]]
    assert forged.ballots == honest.ballots  # a signed ballot cannot lose its vote on the best one
    assert forged.header.winner == world.miners[1].public_key and forged.header.proposer == world.proposer.public_key
    with pytest.raises(InvalidBlock) as info:
        validate_block(forged, world.state)
    assert info.value.reason == "ballot_set"


def test_only_the_ballots_give_the_dropped_block_away() -> None:
    """Were the validators to re-sign their ballots over the smaller set, every other rule would accept it."""
    world = World()
    honest, _ = world.round(SCORES)
    forged = drop_best(honest, world.state, world.proposer)
    commits = [s.message.commit for s in forged.submissions]
    root = compute_submissions_root(commits)
    rebound = tuple(world.resign_ballot(b, submissions_root=root,
                                        votes=tuple(v for v in b.message.votes if v.commit in commits))
                    for b in forged.ballots)
    resigned = seal(forged.header, forged.model_copy(update={"ballots": rebound}), world.proposer)
    validate_block(resigned, world.state)
    world.apply(resigned)
    assert world.state.height == 1


def test_drop_best_needs_an_accepted_submission() -> None:
    world = World()
    empty, _ = world.round({})
    with pytest.raises(ValueError, match="no submission"):
        drop_best(empty, world.state, world.proposer)


def trial(kind: str, refusals: dict[str, str], *, after: int = 6, committed: bool = True,
          verdict: str = "wrong_chain") -> Trial:
    outcome = SubmissionOutcome(miner=crypto.Identity.from_seed("m", b"m").public_key, commit=None, verdict=verdict,
                                score=None, detail=f"{ADVERSARY}: signed for another chain")
    report = RoundReport(height=6 if committed else None, block_hash=None, task_id=fake_hash("task"), winner=None,
                         score=None, committed=committed, outcomes=(outcome,))
    record = SimpleNamespace(commit=fake_hash("adversary"))
    return Trial(kind, 0, report, None, 5, after, record, {}, (), 5000, refusals)  # type: ignore[arg-type]


@pytest.mark.parametrize(("refusals", "after", "verdict", "detected"), [
    ({"transfer": "wrong_chain", "task": "wrong_chain"}, 6, "wrong_chain", True),
    ({"transfer": "accepted", "task": "wrong_chain"}, 7, "wrong_chain", False),
    ({"transfer": "wrong_chain", "task": "wrong_chain"}, 6, "bad_signature", False),
    ({"transfer": "wrong_chain", "task": "wrong_chain"}, 7, "wrong_chain", False),
])
def test_a_cross_chain_replay_is_caught_only_when_nothing_of_it_moves_the_chain(
        refusals: dict[str, str], after: int, verdict: str, detected: bool) -> None:
    detect = attack_kind("cross-chain-replay").detect
    caught, how = detect(trial("cross-chain-replay", refusals, after=after, verdict=verdict))
    assert caught is detected and "transfer" in how


@pytest.mark.parametrize(("refused", "after", "committed", "detected"), [
    ("ballot_set", 6, True, True),
    ("accepted", 6, True, False),
    ("prev_hash", 6, True, False),
    ("ballot_set", 5, False, False),
])
def test_a_dropping_proposer_is_caught_by_its_ballots_and_the_honest_block_commits(
        refused: str, after: int, committed: bool, detected: bool) -> None:
    t = trial("proposer-drop", {DROP: refused}, after=after, committed=committed)
    caught, how = attack_kind("proposer-drop").detect(t)
    assert caught is detected and refused in how


@pytest.mark.parametrize(("armed", "kept"), [(False, True), (True, False)])
def test_an_unarmed_adversary_that_mines_honestly_may_win_an_armed_one_may_not(armed: bool, kept: bool) -> None:
    """Kinds that attack from elsewhere (liars, a proposer, a thief's questions) leave the adversary miner
    unarmed: it mines honestly, and its best model winning is the honest outcome (it once failed
    ``mark-oracle`` whenever the adversary happened to train the best model)."""
    from dlbc_ray.attack.judging import is_honest_winner_kept

    world = World()
    block, _ = world.round({0: [7000] * 4, 1: [8000] * 4, 2: [9000] * 4})  # miner-2, the adversary, is best
    keys = {f"miner-{i}": m.public_key for i, m in enumerate(world.miners)}
    keys |= {f"validator-{j}": v.public_key for j, v in enumerate(world.validators)}
    assert block.header.winner == keys[ADVERSARY]
    report = RoundReport(height=1, block_hash=None, task_id=block.header.task_id, winner=block.header.winner,
                         score=9000, committed=True)
    record = SimpleNamespace(commit=block.submissions[2].message.commit) if armed else None
    t = Trial("mark-oracle", 0, report, block, 0, 1, record, keys, (), 5000, {})  # type: ignore[arg-type]
    assert is_honest_winner_kept(t) is kept


def test_a_trial_with_a_refused_honest_miner_says_why() -> None:
    """A failed trial names the cause (the arrival's verdict and detail, or the block's rejecting votes), not
    only a count: CI once failed proposer-drop with 'false_positives=1' and nothing to go on."""
    from dlbc_ray.attack.judging import explain_false_positives, judge

    world = World()
    block, _ = world.round({0: [9000] * 4, 1: [8000] * 4})
    keys = {f"miner-{i}": m.public_key for i, m in enumerate(world.miners)}
    late = SubmissionOutcome(miner=keys["miner-1"], commit=None, verdict="late", score=None,
                             detail="miner-1: arrived after the window")
    won = SubmissionOutcome(miner=keys["miner-0"], commit=block.submissions[0].message.commit, verdict="valid",
                            score=9000)
    report = RoundReport(height=1, block_hash=None, task_id=block.header.task_id, winner=keys["miner-0"], score=9000,
                         committed=True, outcomes=(won, late))
    t = Trial("proposer-drop", 0, report, block, 0, 1, None, keys, (), 5000, {DROP: "ballot_set"})
    assert explain_false_positives(t) == "miner-1 (late miner-1: arrived after the window)"
    result = judge(t)
    assert result.false_positives == 1 and "honest refused: miner-1 (late" in result.how
