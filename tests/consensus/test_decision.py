from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlbc_ray import crypto
from dlbc_ray.consensus import decide
from dlbc_ray.errors import NoQuorum
from dlbc_ray.schema import Submission, Verdict, Vote
from tests.builders import fake_hash, fake_key

VALIDATORS = [fake_key(f"v{i}") for i in range(7)]


def submission(i: int, model: str | None = None) -> Submission:
    model_hash = fake_hash(model or f"m{i}")
    miner = fake_key(f"miner{i}")
    return Submission(task_id=fake_hash("t"), miner=miner, model_hash=model_hash,
                      commit=crypto.compute_commit(model_hash, miner, fake_hash("t")) if model is None else fake_hash(
                          f"c{i}"), num_params=1, claimed_score=0, epochs=1, train_ms=1, examples=1)


def votes_for(sub: Submission, scores: list[int], verdict: Verdict = Verdict.VALID) -> list[Vote]:
    return [Vote(task_id=sub.task_id, round_id=fake_hash("r"), submissions_root=fake_hash("s"), base_hash=fake_hash("b"), close_ms=0,
                commit=sub.commit, validator=v,
                 verdict=verdict, score=s) for v, s in zip(VALIDATORS, scores)]


def test_best_median_wins() -> None:
    subs = [submission(i) for i in range(3)]
    votes = votes_for(subs[0], [8000] * 4) + votes_for(subs[1], [9000] * 4) + votes_for(subs[2], [8500] * 4)
    d = decide(subs, votes, VALIDATORS[:4], target=5000)
    assert d.winner == subs[1] and d.score == 9000 and len(d.voters) == 4


def test_ties_go_to_the_earliest_submission() -> None:
    subs = [submission(i) for i in range(3)]
    votes = [v for s in subs for v in votes_for(s, [9000] * 4)]
    assert decide(subs, votes, VALIDATORS[:4], 0).winner == subs[0]


def test_target_must_be_met() -> None:
    subs = [submission(0)]
    d = decide(subs, votes_for(subs[0], [4000] * 4), VALIDATORS[:4], target=5000)
    assert d.winner is None and d.score is None


def test_identical_weights_count_only_for_the_earliest() -> None:
    first, copy = submission(0, "same"), submission(1, "same")
    votes = votes_for(first, [8000] * 4) + votes_for(copy, [8000] * 4)
    assert decide([copy, first], votes, VALIDATORS[:4], 0).winner == copy  # arrival order, not index


def test_no_quorum_without_enough_complete_ballots() -> None:
    subs = [submission(0), submission(1)]
    votes = votes_for(subs[0], [9000] * 4) + votes_for(subs[1], [9000] * 2)
    with pytest.raises(NoQuorum):
        decide(subs, votes, VALIDATORS[:4], 0)


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
    votes = []
    for sub, score in zip(subs, honest_scores):
        for j, v in enumerate(VALIDATORS[:n]):
            lie = j in liars
            verdict = rng.choice(list(Verdict)) if lie else Verdict.VALID
            votes.append(Vote(task_id=sub.task_id, round_id=fake_hash("r"), submissions_root=fake_hash("s"), base_hash=fake_hash("b"), close_ms=0,
                commit=sub.commit,
                              validator=v, verdict=verdict, score=rng.randint(0, 10_000) if lie else score))
    d = decide(subs, votes, VALIDATORS[:n], target=0)
    assert d.winner == subs[honest_scores.index(max(honest_scores))]
    assert d.score == max(honest_scores)


@pytest.mark.parametrize(("n", "liars"), [(4, 2), (7, 3), (7, 4)])
def test_a_third_or_more_liars_fail_the_round_safely(n: int, liars: int) -> None:
    """Lying 'stolen' on the honest best model: no 2/3 either way, so no block, never a wrong winner.

    (From 2n/3 liars on, the liars are the quorum; no protocol can stop them.)"""
    subs = [submission(0), submission(1)]
    votes = votes_for(subs[0], [9000] * n) + votes_for(subs[1], [8000] * n)
    lies = set(VALIDATORS[:liars])
    votes = [v.model_copy(update={"verdict": Verdict.STOLEN, "score": 0})
             if v.validator in lies and v.commit == subs[0].commit else v for v in votes]
    with pytest.raises(NoQuorum, match="split"):
        decide(subs, votes, VALIDATORS[:n], 0)
