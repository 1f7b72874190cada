from __future__ import annotations

import pytest

from dlbc_ray.consensus.quorum import (
    compute_main_rejection,
    compute_median_score,
    compute_tally,
    group_ballots,
    complete_voters,
    is_quorum,
    quorum_size,
)
from dlbc_ray.schema import Ballot, Verdict, Vote
from tests.builders import fake_hash, fake_key


def vote(verdict: Verdict = Verdict.VALID, score: int = 9000, commit: str = "c") -> Vote:
    return Vote(commit=fake_hash(commit), verdict=verdict, score=score)


def ballot(validator: str, *votes: Vote) -> Ballot:
    return Ballot(task_id=fake_hash("t"), round_id=fake_hash("r"), submissions_root=fake_hash("s"),
                  base_hash=fake_hash("b"), close_ms=0, validator=fake_key(validator), votes=votes)


@pytest.mark.parametrize(("count", "n", "ok"), [(3, 4, True), (2, 4, False), (2, 3, False), (3, 3, True),
                                                 (5, 7, True), (4, 7, False), (1, 1, True), (0, 1, False)])
def test_quorum_is_more_than_two_thirds_of_all_validators(count: int, n: int, ok: bool) -> None:
    assert is_quorum(count, n) is ok
    assert is_quorum(quorum_size(n), n) and not is_quorum(quorum_size(n) - 1, n)


@pytest.mark.parametrize(("scores", "median"), [([5], 5), ([1, 9, 5], 5), ([1, 2, 3, 4], 2), ([8000, 8001], 8000),
                                                 ([9000, 100, 9000, 9000], 9000)])
def test_median_in_integer_units(scores: list[int], median: int) -> None:
    assert compute_median_score(scores) == median


def test_median_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError):
        compute_median_score([])


def test_tally_accepts_with_quorum_and_takes_median_of_valid_votes() -> None:
    votes = [vote(score=9000), vote(score=9100), vote(score=8900), vote(Verdict.STOLEN, 0)]
    tally = compute_tally(fake_hash("c"), votes, 4)
    assert tally.accepted and tally.score == 9000 and tally.valid_votes == 3


def test_tally_rejects_with_the_most_common_reason() -> None:
    votes = [vote(Verdict.COPY, 0), vote(Verdict.STOLEN, 0), vote(Verdict.STOLEN, 0),
             vote(Verdict.COPY, 0), vote(Verdict.STOLEN, 0)]
    tally = compute_tally(fake_hash("c"), votes, 5)
    assert not tally.accepted and tally.verdict is Verdict.STOLEN and tally.score is None


def test_too_few_votes_decide_nothing() -> None:
    tally = compute_tally(fake_hash("c"), [vote(), vote()], 4)
    assert tally.verdict is None and not tally.accepted


def test_a_split_without_two_thirds_either_way_is_undecided() -> None:
    votes = [vote(), vote(), vote(Verdict.STOLEN, 0), vote(Verdict.STOLEN, 0)]
    assert compute_tally(fake_hash("c"), votes, 4).verdict is None


def test_rejection_ties_follow_declaration_order() -> None:
    votes = [vote(Verdict.STOLEN), vote(Verdict.HASH_MISMATCH)]
    assert compute_main_rejection(votes) is Verdict.HASH_MISMATCH


def test_ballots_drop_outsiders_and_excluded() -> None:
    ballots = [ballot("a", vote(), vote(commit="d")), ballot("b", vote()), ballot("x", vote())]
    grouped = group_ballots(ballots, [fake_key("a"), fake_key("b")], excluded=[fake_key("b")])
    assert set(grouped[fake_hash("c")]) == {fake_key("a")}
    assert complete_voters(grouped, [fake_hash("c"), fake_hash("d")]) == (fake_key("a"),)
