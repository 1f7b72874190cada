"""The round's dispute trip on real Ray (issue 11, red team): referees that hang, lose their reply, or sign what
nobody asked. The trip ends at its deadline plus one reply's time (config), keeps only answers, and every other
validator's ballot stands; nothing stalls the round."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest
import ray

from dlbc_ray.actors._ray import Member
from dlbc_ray.actors.round_runner import RoundRunner
from dlbc_ray.config import ConsensusConfig
from dlbc_ray.consensus.dispute import compute_revision, judge_challenge
from dlbc_ray.schema import Ballot, Signed, Vote
from dlbc_ray.schema.round_messages import BallotReply, Challenge, ValidatorStats
from tests.builders import World, fake_key
from tests.consensus.test_dispute import EXPECTED, REPLAYED

ZERO = {k: 0.0 for k in ValidatorStats.model_fields}


@ray.remote(num_cpus=0)
class Referee:
    """A validator's referee as the runner calls it: ``how`` it answers."""

    def __init__(self, how: str, signed: tuple[Signed[Ballot], ...]) -> None:
        self.how, self.signed, self.deadline_ms = how, signed, None

    def referee(self, task: Any, arrivals: Any, ctx: Any, ballot: Any, challenges: Any, audits: Any,
                deadline_ms: int) -> BallotReply:
        self.deadline_ms = deadline_ms
        if self.how == "hang":
            time.sleep(60)
        if self.how == "lost":
            raise ConnectionError("reply lost")
        return BallotReply(ballots=self.signed, stats=ValidatorStats(**ZERO))

    def seen_deadline(self) -> int | None:
        return self.deadline_ms


@pytest.mark.usefixtures("ray_session")
def test_hung_lost_and_rogue_referees_cost_the_trip_its_deadline_and_change_nothing() -> None:
    world = World()
    task = world.task()
    subs = [world.submission(world.miners[i], task) for i in range(2)]
    ballots = [world.ballot(v, subs, [9000, 8000]) for v in world.validators]
    asked = [Challenge(commit=subs[0].message.commit, segment=3, expected=EXPECTED, replayed=REPLAYED,
                       challenger=fake_key("challenger"))]
    ruling = judge_challenge(asked[0], expected=EXPECTED, replayed=REPLAYED, exact=True)
    answer = world.sign(world.validators[0], compute_revision(ballots[0].message, [ruling]))  # type: ignore[arg-type]
    rogue_vote = Vote(commit=subs[1].message.commit, verdict=answer.message.votes[0].verdict, score=0,
                      detail=answer.message.votes[0].detail)
    rogue = world.sign(world.validators[3], ballots[3].message.model_copy(
        update={"votes": (ballots[3].message.votes[0], rogue_vote)}))  # a vote nobody challenged
    hows = ["answer", "hang", "lost", "rogue"]
    actors = [Referee.remote(how, (s,) if s is not None else ())  # type: ignore[attr-defined]
              for how, s in zip(hows, [answer, None, None, rogue])]
    voted = {v.public_key: (Member(how, v.public_key, a), b)
             for how, v, a, b in zip(hows, world.validators, actors, ballots)}
    cfg = ConsensusConfig(validate_timeout_s=3.0, commit_timeout_s=1.0)
    runner = SimpleNamespace(cfg=cfg, task=None, signed_ctx=None, timings={},
                             ctx=SimpleNamespace(chain_id=world.chain_id))
    runner._verified = lambda signeds, key: RoundRunner._verified(runner, signeds, key)  # type: ignore[arg-type]
    ray.get([a.seen_deadline.remote() for a in actors], timeout=60)  # started, so the clock below is the trip's
    t0, sent_ms = time.monotonic(), int(time.time() * 1e3)
    kept = RoundRunner.dispute(runner, [], asked, voted, None)  # type: ignore[arg-type]
    took = time.monotonic() - t0
    assert kept == [answer]  # the hung and the lost kept their ballots; the rogue's revision was dropped
    assert took < cfg.validate_timeout_s + cfg.commit_timeout_s + 2.0  # never waits for the hung one
    deadline = ray.get(actors[0].seen_deadline.remote(), timeout=10)
    assert deadline is not None and abs(deadline - (sent_ms + 3000)) < 1000  # validate_timeout_s from the trip
    assert runner.timings["revised_ballots"] == 1.0
    for a in actors:
        ray.kill(a)
