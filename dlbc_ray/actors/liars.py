"""Adversarial validators for the attack suite: judge honestly, then, when armed, sign lies.

Kept apart from the adversarial miners (adversary.py): a liar needs only the honest
validator's ballot and the lie it was armed with; ``compute_lies`` is pure.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from dlbc_ray import crypto
from dlbc_ray.actors.validator import Validator
from dlbc_ray.config import ProtectionConfig, ValidatorConfig
from dlbc_ray.constants import SCORE_SCALE
from dlbc_ray.crypto import Identity
from dlbc_ray.models.data import Split
from dlbc_ray.schema import Ballot, Signed, Task, Verdict, Vote
from dlbc_ray.schema.round_messages import BallotReply, Challenge, RoundContext, SubmissionArrival

LieKind = Literal["random", "approve", "reject", "reject-best", "equivocate", "false-challenge", "sample"]


@dataclass(frozen=True)
class ValidatorLie:
    """How an adversarial validator lies: random scores, always approve, always reject,
    reject only the best valid submission, sign two different ballots for the round, or reject the best
    valid submission as a bad transcript and challenge a segment of it that replays fine (``false-challenge``).
    ``sample`` is no lie: an honest validator whose own audit sample is forced to ``segments`` (plus the
    last), so a test decides which validator's sample hits a spliced segment."""

    kind: LieKind
    seed: int = 0
    segments: tuple[int, ...] = ()


class AdversaryValidator(Validator):
    """A validator that judges honestly, then, when armed, signs lies about what it found."""

    def __init__(self, cfg: ValidatorConfig, *, identity: Identity, protection: ProtectionConfig,
                 marks: Mapping[str, bytes], proposer: str, winners: Any = None, chain_id: str | None = None) -> None:
        super().__init__(cfg, identity=identity, protection=protection, marks=marks, proposer=proposer,
                         winners=winners, chain_id=chain_id)
        self.lie: ValidatorLie | None = None

    def arm(self, lie: ValidatorLie | None) -> None:
        self.lie = lie

    def validate(self, task: Signed[Task], test: Split, arrivals: Sequence[SubmissionArrival],
                 weight_refs: Sequence[Any], ctx: Signed[RoundContext], won_models: frozenset[str] = frozenset(),
                 progress: Any = None, audits: Any = None) -> BallotReply:
        reply = super().validate(task, test, arrivals, weight_refs, ctx, won_models, progress, audits)
        if self.lie is None or self.lie.kind == "sample":
            return reply
        rng = random.Random(f"{self.lie.seed}|{self.identity.public_key}|{ctx.message.round_id}")
        (honest,) = reply.ballots
        lies = compute_lies(self.lie.kind, honest.message, rng)
        challenges = compute_false_challenges(honest.message, lies[0], self.identity.public_key) \
            if self.lie.kind == "false-challenge" else ()
        return BallotReply(ballots=tuple(crypto.sign(self.identity, b, ctx.chain_id) for b in lies), stats=reply.stats,
                           challenges=challenges)

    def _audit(self, *args: Any, sample: tuple[int, ...] | None = None, **kwargs: Any) -> list[Challenge]:
        forced = self.lie.segments if self.lie is not None and self.lie.kind == "sample" else sample
        return super()._audit(*args, sample=forced, **kwargs)


def compute_lies(kind: LieKind, honest: Ballot, rng: random.Random) -> list[Ballot]:
    """The ballots a liar of ``kind`` signs instead of its ``honest`` one (pure): one, or two for an equivocator."""
    votes = honest.votes
    if kind == "random":
        lies = [_lie(v, Verdict.VALID, _other_score(v.score, rng)) for v in votes]
    elif kind == "approve":
        lies = [_lie(v, Verdict.VALID, SCORE_SCALE) for v in votes]
    elif kind == "reject":
        lies = [_lie(v, Verdict.STOLEN, 0) for v in votes]
    elif kind in ("reject-best", "false-challenge"):
        best = max((v for v in votes if v.verdict is Verdict.VALID), key=lambda v: v.score, default=None)
        verdict = Verdict.STOLEN if kind == "reject-best" else Verdict.BAD_TRANSCRIPT
        lies = [_lie(v, verdict, 0) if v is best else v for v in votes]
    elif kind == "sample":
        return [honest]
    elif kind == "equivocate":
        flipped = [_lie(v, Verdict.STOLEN, 0) if v.verdict is Verdict.VALID else _lie(v, Verdict.VALID, SCORE_SCALE)
                   for v in votes]
        return [honest, honest.model_copy(update={"votes": tuple(flipped)})]
    else:
        raise ValueError(f"unknown lie {kind!r}")
    return [honest.model_copy(update={"votes": tuple(lies)})]


def compute_false_challenges(honest: Ballot, lie: Ballot, challenger: str) -> tuple[Challenge, ...]:
    """A challenge of segment 0 of each submission the liar turned from valid to bad (pure): its hashes made up."""
    made_up = hashlib.sha256(b"made up|" + challenger.encode()).hexdigest()
    return tuple(Challenge(commit=b.commit, segment=0, expected=made_up, replayed=made_up[::-1], challenger=challenger)
                 for a, b in zip(honest.votes, lie.votes) if a.verdict is Verdict.VALID and b.verdict is not Verdict.VALID)


def _lie(vote: Vote, verdict: Verdict, score: int) -> Vote:
    return vote.model_copy(update={"verdict": verdict, "score": score, "detail": "lie"})


def _other_score(score: int, rng: random.Random) -> int:
    """A uniformly random score that is not the true one (a random score that happens to be right is no lie)."""
    lie = rng.randrange(SCORE_SCALE)
    return lie + 1 if lie >= score else lie
