"""Referees against a miner that plays the dispute (issue 11, red team), real tiny models, no Ray: a miner that
served every audit honestly, then withholds the challenged checkpoint or answers the referees slowly. The dispute
has a deadline (when the round stops waiting); a miner cannot run it out of time, and a referee answers by it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from dlbc_ray.actors.liars import ValidatorLie
from dlbc_ray.actors.round_parts import miner_policy
from dlbc_ray.config import MINIMAL
from dlbc_ray.consensus.decision import decide_round
from dlbc_ray.consensus.dispute import compute_challenges, is_dispute_vote
from dlbc_ray.models.replay import TranscriptAudits
from dlbc_ray.schema import Verdict
from dlbc_ray.schema.round_messages import BallotReply, Challenge, SubmissionArrival
from tests.actors.test_validator_disputes import JUDGES, Mined, honest, judges  # noqa: F401  (fixtures)
from tests.actors.test_validator_verdicts import PROPOSER, Setup, closed, setup  # noqa: F401  (fixture)
from tests.builders import fake_key, signed_round


@dataclass
class PlaysTheDispute:
    """An honest run's miner, honest through the audits; once ``armed`` (referee time) it will not serve
    checkpoint ``withhold``, and takes ``delay_s`` to answer anything."""

    inner: object
    withhold: int | None = None
    delay_s: float = 0.0
    armed: bool = False
    asked: list[int] = field(default_factory=list)

    def transcript_opening(self, close: object, commit: str, index: int) -> object:
        header, root, opening = self.inner.transcript_opening(close, commit, index)  # type: ignore[attr-defined]
        if not self.armed:
            return header, root, opening
        self.asked.append(index)
        time.sleep(self.delay_s)
        return header, root, None if index == self.withhold else opening


def dispute(setup: Setup, honest: Mined, miner: PlaysTheDispute, deadline_in_ms: int,  # noqa: F811
            extra: tuple[Challenge, ...] = ()) -> tuple[list[BallotReply], list[BallotReply], float, object]:
    """The liar (judge 3) falsely challenges segment 0 of the honest run; the miner is armed; the referees rule."""
    commit = honest.sent.signed.message.commit
    arrivals = [SubmissionArrival(signed=honest.sent.signed, arrived_ms=honest.sent.arrived_ms,
                                  reveal=honest.sent.reveal)]
    openers = {commit: (closed(setup.ctx, commit).signature,
                        lambda i: miner.transcript_opening(closed(setup.ctx, commit), commit, i))}
    audits = TranscriptAudits(setup.bundle.train, miner_policy(MINIMAL.miner), openers)
    ctx = signed_round(PROPOSER, setup.ctx)
    validators = judges([None, None, None, ValidatorLie("false-challenge")])
    replies = [v.validate(setup.task, setup.bundle.test, arrivals, [honest.sent.weights], ctx, audits=audits)
               for v in validators]
    challenges = compute_challenges([(v.identity.public_key, r.challenges) for v, r in zip(validators, replies)]
                                    + [(c.challenger, (c,)) for c in extra], [commit])
    assert challenges
    miner.armed = True
    t0 = time.monotonic()
    # the runner calls the referees at once, with one deadline; here one after the other, each with its own
    refereed = [v.referee(setup.task, arrivals, ctx, r.ballots[0], list(challenges), audits,
                          int(time.time() * 1e3) + deadline_in_ms) for v, r in zip(validators[:3], replies[:3])]
    took = time.monotonic() - t0
    result = decide_round([a.signed.message for a in arrivals], [b for r in replies + refereed for b in r.ballots],
                          setup.ctx.round_id, [j.public_key for j in JUDGES], target=0)
    return replies, refereed, took, result


def test_a_miner_that_withholds_only_the_challenged_checkpoint_at_referee_time_is_refused(
        setup: Setup, honest: Mined) -> None:  # noqa: F811
    miner = PlaysTheDispute(honest.miner, withhold=1)  # segment 0 ends at checkpoint 1
    _, refereed, _, result = dispute(setup, honest, miner, 60_000)
    assert [len(r.ballots) for r in refereed] == [1, 1, 1]
    assert result.decision.tally(honest.sent.signed.message.commit).verdict is Verdict.BAD_TRANSCRIPT
    assert all(is_dispute_vote(r.ballots[0].message.votes[0]) and "missing_checkpoint" in r.ballots[0].message.votes[0]
               .detail for r in refereed)


def test_a_miner_slow_past_the_dispute_deadline_is_refused_and_each_referee_answers_by_it(
        setup: Setup, honest: Mined) -> None:  # noqa: F811
    """Each opening within the ask's own timeout, but together past the dispute's deadline: not served in time."""
    miner = PlaysTheDispute(honest.miner, delay_s=0.6)
    _, refereed, took, result = dispute(setup, honest, miner, 400)
    assert [len(r.ballots) for r in refereed] == [1, 1, 1]
    assert result.decision.tally(honest.sent.signed.message.commit).verdict is Verdict.BAD_TRANSCRIPT
    assert len(miner.asked) == 3  # one ask per referee: each stopped waiting at the deadline, none asked on
    assert took < 3 * (0.6 + 5.0)  # per referee: the one late reply and its replay setup, never a second ask


def test_a_slow_but_timely_miner_is_not_refused_on_a_false_challenge(setup: Setup, honest: Mined) -> None:  # noqa: F811
    miner = PlaysTheDispute(honest.miner, delay_s=0.05)
    _, refereed, _, result = dispute(setup, honest, miner, 120_000)
    assert [len(r.ballots) for r in refereed] == [0, 0, 0]
    assert result.decision.tally(honest.sent.signed.message.commit).accepted


def test_a_referee_past_its_deadline_signs_nothing_and_asks_nothing(setup: Setup, honest: Mined) -> None:  # noqa: F811
    miner = PlaysTheDispute(honest.miner)
    _, refereed, _, result = dispute(setup, honest, miner, -1)
    assert [len(r.ballots) for r in refereed] == [0, 0, 0] and miner.asked == []
    assert result.decision.tally(honest.sent.signed.message.commit).accepted  # its ballot stands as voted


def test_challenges_of_the_last_segment_and_past_it_are_refuted_on_an_honest_run(setup: Setup,  # noqa: F811
                                                                                  honest: Mined) -> None:
    """A colluder names the last segment, and one past the transcript's end: replayed fine, or nothing to replay."""
    commit = honest.sent.signed.message.commit
    last = len(honest.miner._transcripts.get(commit).leaves) - 2  # type: ignore[attr-defined]
    extra = tuple(Challenge(commit=commit, segment=s, expected=None, replayed="made up", challenger=fake_key(f"c{s}"))
                  for s in (last, last + 1))
    miner = PlaysTheDispute(honest.miner)
    _, refereed, _, result = dispute(setup, honest, miner, 120_000, extra)
    assert [len(r.ballots) for r in refereed] == [0, 0, 0]
    assert sorted(set(miner.asked)) == [0, 1, last, last + 1]  # segments 0 and last replayed; past the end: nothing
    assert result.decision.tally(commit).accepted


def test_a_rounds_budget_covers_a_dispute_whose_referees_all_hang() -> None:
    """Every wait the runner makes, each phase at its own timeout (the dispute's: its deadline plus one reply's
    time), fits in what the callers wait for a round; before, they waited window + one validation + 120 s."""
    from dlbc_ray.actors.round_parts import round_budget_s
    from dlbc_ray.config import ConsensusConfig

    cfg = ConsensusConfig(collect_timeout_s=240, reveal_timeout_s=30, validate_timeout_s=120, commit_timeout_s=30)
    ballots, dispute, fusion = cfg.validate_timeout_s, cfg.validate_timeout_s + cfg.commit_timeout_s, \
        cfg.validate_timeout_s
    assert round_budget_s(cfg, margin_s=0) >= cfg.collect_timeout_s + cfg.reveal_timeout_s + ballots + dispute + fusion
    assert round_budget_s(cfg) > cfg.collect_timeout_s + cfg.validate_timeout_s + 120
