"""Disputes on real tiny trained models, no Ray (validators built directly): a spliced transcript that only one
validator's sample hits is refused once the others referee its challenge; a liar's false challenge changes nothing;
an honest round raises no challenge at all (so the round takes no second trip). The runner's wiring of the same
is the attack suite's ``spliced`` kind (tests/integration/test_attacks.py, real Ray)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pytest

from dlbc_ray import crypto
from dlbc_ray.actors.adversary import AdversaryMiner, MinerAttack
from dlbc_ray.actors.liars import AdversaryValidator, ValidatorLie
from dlbc_ray.actors.round_parts import miner_policy
from dlbc_ray.config import MINIMAL, ValidatorConfig
from dlbc_ray.consensus.decision import RoundDecision, decide_round
from dlbc_ray.consensus.dispute import compute_challenges, is_dispute_vote
from dlbc_ray.crypto import Identity
from dlbc_ray.models.protect import mark_secret
from dlbc_ray.models.replay import TranscriptAudits
from dlbc_ray.schema import Verdict
from dlbc_ray.schema.round_messages import BallotReply, SubmissionArrival
from tests.actors.test_validator_verdicts import (PROPOSER, PROTECTION, THIEF, VICTIM, Sent, Setup, closed,
                                                  honest_miner, mined_by, setup)  # noqa: F401  (fixture)
from tests.builders import signed_round

JUDGES = [Identity.from_seed(f"judge-{i}", f"judge-{i}".encode()) for i in range(4)]


@dataclass(frozen=True)
class Mined:
    sent: Sent
    miner: AdversaryMiner | object
    segment: int  # the spliced segment (or -1: an honest run)


@pytest.fixture(scope="module")
def spliced(setup: Setup) -> Mined:  # noqa: F811
    thief = AdversaryMiner(MINIMAL.miner, identity=THIEF, protection=PROTECTION, proposer=PROPOSER.public_key)
    thief.arm(MinerAttack("spliced", segment=1))
    sent = mined_by(thief, setup.task, setup.bundle, setup.ctx)
    kept = thief._transcripts.get(sent.signed.message.commit)
    assert kept is not None and len(kept.leaves) >= 3
    return Mined(sent, thief, max(0, min(1, len(kept.leaves) - 3)))


@pytest.fixture(scope="module")
def honest(setup: Setup) -> Mined:  # noqa: F811
    miner = honest_miner(VICTIM)
    return Mined(mined_by(miner, setup.task, setup.bundle, setup.ctx), miner, -1)


def judges(lies: Sequence[ValidatorLie | None]) -> list[AdversaryValidator]:
    found = []
    for identity, lie in zip(JUDGES, lies):
        v = AdversaryValidator(ValidatorConfig(), identity=identity, protection=PROTECTION,
                               marks={m.public_key: mark_secret(m) for m in (VICTIM, THIEF)}, proposer=PROPOSER.public_key)
        v.arm(lie)
        found.append(v)
    return found


def play(setup: Setup, made: Sequence[Mined], validators: Sequence[AdversaryValidator]  # noqa: F811
         ) -> tuple[list[BallotReply], list[BallotReply], RoundDecision]:
    """One round's validation as the runner plays it: ballots, then (only with challenges) the referees' trip."""
    arrivals = [SubmissionArrival(signed=m.sent.signed, arrived_ms=m.sent.arrived_ms, reveal=m.sent.reveal) for m in made]
    openers = {m.sent.signed.message.commit: (closed(setup.ctx, m.sent.signed.message.commit).signature,
                                              lambda i, m=m: m.miner.transcript_opening(  # type: ignore[attr-defined]
                                                  closed(setup.ctx, m.sent.signed.message.commit),
                                                  m.sent.signed.message.commit, i))
               for m in made}
    audits = TranscriptAudits(setup.bundle.train, miner_policy(MINIMAL.miner), openers)
    ctx = signed_round(PROPOSER, setup.ctx)
    replies = [v.validate(setup.task, setup.bundle.test, arrivals, [m.sent.weights for m in made], ctx, audits=audits)
               for v in validators]
    commits = [a.signed.message.commit for a in arrivals]
    challenges = compute_challenges([(v.identity.public_key, r.challenges) for v, r in zip(validators, replies)], commits)
    refereed = [v.referee(setup.task, arrivals, ctx, r.ballots[0], list(challenges), audits)
                for v, r in zip(validators, replies)] if challenges else []
    ballots = [b for r in replies + refereed for b in r.ballots]
    decision = decide_round([a.signed.message for a in arrivals], ballots, setup.ctx.round_id,
                            [j.public_key for j in JUDGES], target=0)
    return replies, refereed, decision


def test_a_splice_only_one_validator_samples_is_refused_and_the_block_shows_why(setup: Setup, honest: Mined,  # noqa: F811
                                                                                spliced: Mined) -> None:
    lies = [ValidatorLie("sample", segments=(spliced.segment,))] + [ValidatorLie("sample", segments=())] * 3
    replies, refereed, result = play(setup, [honest, spliced], judges(lies))
    bad = spliced.sent.signed.message.commit
    first = [r.ballots[0].message.votes[1] for r in replies]
    assert [v.verdict for v in first] == [Verdict.BAD_TRANSCRIPT] + [Verdict.VALID] * 3  # one saw it, 3 would outvote
    assert [(c.commit, c.segment) for c in replies[0].challenges] == [(bad, spliced.segment)]
    assert [len(r.ballots) for r in refereed] == [0, 1, 1, 1]  # the challenger signs nothing more
    assert result.decision.tally(bad).verdict is Verdict.BAD_TRANSCRIPT and not result.evidence
    assert result.decision.tally(honest.sent.signed.message.commit).accepted  # the honest run is untouched
    challenge = replies[0].challenges[0]
    for r in refereed[1:]:  # the revision counts, and names the segment and the same two hashes the challenger saw
        vote = next(b for b in result.ballots if b.message.validator == r.ballots[0].message.validator).message.votes[1]
        assert is_dispute_vote(vote) and f"segment {spliced.segment} " in vote.detail
        assert challenge.expected in vote.detail and challenge.replayed in vote.detail  # bitwise: the same replay


@dataclass(frozen=True)
class Withholding:
    """An honest run's miner that will not serve one committed checkpoint (as a miner that skipped the training
    behind a leaf it committed could not): every other opening is the honest one."""

    inner: object
    index: int

    def transcript_opening(self, close: object, commit: str, index: int) -> object:
        header, root, opening = self.inner.transcript_opening(close, commit, index)  # type: ignore[attr-defined]
        return header, root, None if index == self.index else opening


def test_a_checkpoint_withheld_from_the_one_validator_that_asks_is_refused_by_dispute(setup: Setup,  # noqa: F811
                                                                                       honest: Mined) -> None:
    withheld = Mined(honest.sent, Withholding(honest.miner, 2), -1)
    lies = [ValidatorLie("sample", segments=(1,))] + [ValidatorLie("sample", segments=())] * 3  # 1 opens checkpoint 2
    replies, refereed, result = play(setup, [withheld], judges(lies))
    assert [r.ballots[0].message.votes[0].verdict for r in replies] == [Verdict.BAD_TRANSCRIPT] + [Verdict.VALID] * 3
    assert [(c.segment, c.expected) for c in replies[0].challenges] == [(1, None)]
    assert [len(r.ballots) for r in refereed] == [0, 1, 1, 1]
    assert result.decision.tally(honest.sent.signed.message.commit).verdict is Verdict.BAD_TRANSCRIPT


def test_a_false_challenge_costs_one_replay_and_changes_nothing(setup: Setup, honest: Mined) -> None:  # noqa: F811
    liar = JUDGES[3].public_key
    replies, refereed, result = play(setup, [honest], judges([None, None, None, ValidatorLie("false-challenge")]))
    assert [c.challenger for r in replies for c in r.challenges] == [liar]
    assert refereed and all(not r.ballots for r in refereed)  # every referee replayed and refuted it: nothing signed
    tally = result.decision.tally(honest.sent.signed.message.commit)
    assert tally.accepted and tally.valid_votes == 3 and not result.evidence


def test_an_honest_round_raises_no_challenge(setup: Setup, honest: Mined) -> None:  # noqa: F811
    replies, refereed, result = play(setup, [honest], judges([None] * 4))
    assert not any(r.challenges for r in replies) and refereed == []  # no challenge: no referee trip at all
    assert result.decision.tally(honest.sent.signed.message.commit).valid_votes == 4
    assert all(crypto.is_valid_signature(b) for b in result.ballots)
