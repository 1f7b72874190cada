from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlbc_ray import crypto
from dlbc_ray.consensus import decide
from dlbc_ray.errors import NoQuorum
from dlbc_ray.schema import Ballot, Submission, Verdict, Vote
from tests.builders import fake_hash, fake_key

VALIDATORS = [fake_key(f"v{i}") for i in range(7)]


def submission(i: int, model: str | None = None) -> Submission:
    model_hash = fake_hash(model or f"m{i}")
    miner = fake_key(f"miner{i}")
    return Submission(task_id=fake_hash("t"), miner=miner, model_hash=model_hash,
                      commit=crypto.compute_commit(model_hash, miner, fake_hash("t")) if model is None else fake_hash(
                          f"c{i}"), num_params=1, claimed_score=0, epochs=1, train_ms=1, examples=1)


def ballot(validator: str, votes: list[Vote]) -> Ballot:
    return Ballot(task_id=fake_hash("t"), round_id=fake_hash("r"), submissions_root=fake_hash("s"),
                  base_hash=fake_hash("b"), close_ms=0, validator=validator, votes=tuple(votes))


def ballots_for(subs: list[Submission], rows: list[list[int]], verdict: Verdict = Verdict.VALID) -> list[Ballot]:
    """Validator j votes ``rows[i][j]`` on ``subs[i]``; a row shorter than the validators leaves the rest out."""
    n = max(len(row) for row in rows)
    return [ballot(VALIDATORS[j], [Vote(commit=sub.commit, verdict=verdict, score=row[j])
                                   for sub, row in zip(subs, rows) if j < len(row)]) for j in range(n)]


def test_best_median_wins() -> None:
    subs = [submission(i) for i in range(3)]
    d = decide(subs, ballots_for(subs, [[8000] * 4, [9000] * 4, [8500] * 4]), VALIDATORS[:4], target=5000)
    assert d.winner == subs[1] and d.score == 9000 and len(d.voters) == 4


def test_ties_go_to_the_earliest_submission() -> None:
    subs = [submission(i) for i in range(3)]
    assert decide(subs, ballots_for(subs, [[9000] * 4] * 3), VALIDATORS[:4], 0).winner == subs[0]


def test_target_must_be_met() -> None:
    subs = [submission(0)]
    d = decide(subs, ballots_for(subs, [[4000] * 4]), VALIDATORS[:4], target=5000)
    assert d.winner is None and d.score is None


def test_identical_weights_count_only_for_the_earliest() -> None:
    first, copy = submission(0, "same"), submission(1, "same")
    ballots = ballots_for([copy, first], [[8000] * 4, [8000] * 4])
    assert decide([copy, first], ballots, VALIDATORS[:4], 0).winner == copy  # arrival order, not index


def test_no_quorum_without_enough_complete_ballots() -> None:
    subs = [submission(0), submission(1)]
    with pytest.raises(NoQuorum):
        decide(subs, ballots_for(subs, [[9000] * 4, [9000] * 2]), VALIDATORS[:4], 0)


def test_no_submissions_need_no_votes() -> None:
    d = decide([], [], VALIDATORS[:4], 0)
    assert d.winner is None and d.voters == ()


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(4, 7),
    honest_scores=st.lists(st.integers(0, 10_000), min_size=2, max_size=4, unique=True),
    seed=st.integers(0, 2**32),
)
def test_fewer_than_a_third_liars_cannot_change_the_winner(n: int, honest_scores: list[int], seed: int) -> None:
    rng = random.Random(seed)
    f = (n - 1) // 3
    liars = set(rng.sample(range(n), f))
    subs = [submission(i) for i in range(len(honest_scores))]
    ballots = []
    for j, v in enumerate(VALIDATORS[:n]):
        lie = j in liars
        ballots.append(ballot(v, [Vote(commit=sub.commit, verdict=rng.choice(list(Verdict)) if lie else Verdict.VALID,
                                       score=rng.randint(0, 10_000) if lie else score)
                                  for sub, score in zip(subs, honest_scores)]))
    d = decide(subs, ballots, VALIDATORS[:n], target=0)
    assert d.winner == subs[honest_scores.index(max(honest_scores))]
    assert d.score == max(honest_scores)


@pytest.mark.parametrize(("n", "liars"), [(4, 2), (7, 3), (7, 4)])
def test_a_third_or_more_liars_fail_the_round_safely(n: int, liars: int) -> None:
    """Lying 'stolen' on the honest best model: no 2/3 either way, so no block, never a wrong winner.

    (From 2n/3 liars on, the liars are the quorum; no protocol can stop them.)"""
    subs = [submission(0), submission(1)]
    honest = ballots_for(subs, [[9000] * n, [8000] * n])
    lie = Vote(commit=subs[0].commit, verdict=Verdict.STOLEN, score=0)
    ballots = [b.model_copy(update={"votes": (lie, *b.votes[1:])}) if j < liars else b for j, b in enumerate(honest)]
    with pytest.raises(NoQuorum, match="split"):
        decide(subs, ballots, VALIDATORS[:n], 0)
