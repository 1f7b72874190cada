"""The lying validators' lies (``compute_lies``, pure), and what the round's rules make of each, without Ray."""

from __future__ import annotations

import random

import pytest

from dlbc_ray import crypto
from dlbc_ray.actors.liars import compute_lies
from dlbc_ray.consensus.decision import decide_round
from dlbc_ray.constants import SCORE_SCALE
from dlbc_ray.schema import Ballot, Verdict
from tests.builders import World

SCORES = [9000, 8000, 7000]


def honest(world: World) -> tuple[list, list]:
    task = world.task()
    subs = [world.submission(m, task) for m in world.miners]
    return subs, [world.ballot(v, subs, SCORES) for v in world.validators]


def lies_of(kind: str, ballot: Ballot, seed: int = 0) -> list[Ballot]:
    return compute_lies(kind, ballot, random.Random(seed))  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["random", "approve", "reject", "reject-best"])
def test_a_liar_signs_one_ballot_bound_like_its_honest_one_that_says_something_else(kind: str) -> None:
    world = World()
    _, ballots = honest(world)
    truth = ballots[3].message
    (lie,) = lies_of(kind, truth)
    binding = ("task_id", "round_id", "submissions_root", "base_hash", "close_ms", "validator")
    assert all(getattr(lie, f) == getattr(truth, f) for f in binding)
    assert [v.commit for v in lie.votes] == [v.commit for v in truth.votes] and lie.votes != truth.votes


def test_each_lie_says_what_its_kind_promises() -> None:
    world = World()
    _, ballots = honest(world)
    truth = ballots[0].message
    assert all(v.score != t.score for v, t in zip(lies_of("random", truth)[0].votes, truth.votes))
    assert {(v.verdict, v.score) for v in lies_of("approve", truth)[0].votes} == {(Verdict.VALID, SCORE_SCALE)}
    assert {v.verdict for v in lies_of("reject", truth)[0].votes} == {Verdict.STOLEN}
    best = lies_of("reject-best", truth)[0].votes
    assert [v.verdict for v in best] == [Verdict.STOLEN, Verdict.VALID, Verdict.VALID] and best[1:] == truth.votes[1:]


def test_an_equivocator_signs_two_ballots_and_the_round_names_it_and_leaves_it_out() -> None:
    world = World()
    subs, ballots = honest(world)
    liar = world.validators[3]
    pair = [crypto.sign(liar, b, world.chain_id) for b in lies_of("equivocate", ballots[3].message)]
    assert len(pair) == 2 and pair[0].message != pair[1].message
    decided = decide_round([s.message for s in subs], [*ballots[:3], *pair], world.round_id(subs[0].message.task_id),
                           world.params.validators, 5_000)
    assert decided.culprits == {liar.public_key}
    assert liar.public_key not in {b.message.validator for b in decided.ballots}
    assert decided.decision.winner == subs[0].message


def test_an_unknown_lie_is_refused() -> None:
    world = World()
    _, ballots = honest(world)
    with pytest.raises(ValueError, match="unknown lie"):
        lies_of("flatter", ballots[0].message)
