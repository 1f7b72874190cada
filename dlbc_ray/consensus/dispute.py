"""Refereed disputes inside a round: one validator's exact-replay mismatch is checked by all, never outvoted.

Each validator audits only the segments its own seed samples (``compute_audit_seed``), so a
transcript with one spliced segment is seen by few validators. Replay on the header's device
class is bitwise, so such a finding is a checkable fact, not an opinion to be outvoted 3 to 1.

The design, chosen as the least invasive sound one: ballots are signed as before, and a
validator's reply also names its exact-replay mismatches (``Challenge``: commit, segment,
expected and replayed state hash). Only when some reply carries a challenge does the round
take a second trip: every validator that voted that submission valid replays that one
segment (``find_divergence`` bisection is not needed: a segment is at most
``steps / (max_checkpoints - 1)`` steps, cheaper than the audit each validator already ran).
A confirmed mismatch makes it sign a *revision* of its ballot: the same ballot with that vote
turned ``bad_transcript`` and a detail naming the segment and both full hashes, so the block
shows why. A refuted (false) challenge costs each referee one segment replay and changes no
ballot. Honest rounds, with no challenge, take no extra trip and sign nothing more.

Which ballot counts: a revision differs from the ballot it revises only by valid votes turned
into dispute votes (``is_revision``); it supersedes it, and it is not equivocation. Two ballots
of one validator of which neither revises the other still are. Pure: no torch, no Ray, no I/O.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dlbc_ray.consensus.quorum import quorum_size
from dlbc_ray.consensus.transcript import AuditFailure, AuditOutcome
from dlbc_ray.schema import Ballot, Verdict, Vote
from dlbc_ray.schema.round_messages import Challenge

# per validator and submission: an exact audit stops at its first mismatch, so one suffices; a referee then replays
# at most one segment per other validator on each commit it voted valid, whatever a flood of challenges asks
MAX_CHALLENGES = 1
DISPUTE_PREFIX = "dispute: "
_DISPUTE = re.compile(r"dispute: segment (\d+) expected (\S+) replayed (\S.*)")


@dataclass(frozen=True)
class Ruling:
    """A referee's judgement of one challenge: ``confirmed`` turns its valid vote on the commit bad."""

    challenge: Challenge
    confirmed: bool
    replayed: str  # the referee's own replayed state hash, or why the segment could not be opened or replayed
    expected: str  # the committed (proven) state hash of checkpoint segment + 1, as the referee opened it


_UNOPENED = (AuditFailure.MISSING_CHECKPOINT, AuditFailure.BAD_PROOF, AuditFailure.MALFORMED_CHECKPOINT)


def compute_challenge(commit: str, outcome: AuditOutcome, challenger: str) -> Challenge | None:
    """The challenge one audit's outcome makes, for what only the validators that sampled a segment can see: a
    replay mismatch (its segment and both hashes), or a checkpoint the miner would not open (the segment ending
    at it; a miner that cannot serve a checkpoint it committed must not pass because few asked). Else None:
    every other failure (root, header, init, final) is seen alike by every validator."""
    if outcome.segment is None:
        return None
    if outcome.reason is AuditFailure.REPLAY_MISMATCH and outcome.expected and outcome.replayed:
        return Challenge(commit=commit, segment=outcome.segment, expected=outcome.expected,
                         replayed=outcome.replayed[:120], challenger=challenger)
    if outcome.reason in _UNOPENED:  # ``segment`` names the checkpoint here: the segment ending at it opens it
        return Challenge(commit=commit, segment=max(0, outcome.segment - 1), expected=None,
                         replayed=f"{outcome.reason.value}: {outcome.detail}"[:120], challenger=challenger)
    return None


def compute_challenges(replies: Iterable[tuple[str, Sequence[Challenge]]],
                       commits: Sequence[str]) -> tuple[Challenge, ...]:
    """The challenges a round referees, from (validator, its reply's challenges): only a validator's own, on this
    round's commits, at most ``MAX_CHALLENGES`` per validator and submission, one per (commit, segment);
    in arrival order of the commit, then by segment."""
    order = {c: i for i, c in enumerate(commits)}
    kept: dict[tuple[str, int], Challenge] = {}
    per: dict[tuple[str, str], int] = {}
    for validator, challenges in replies:
        for ch in challenges:
            if ch.challenger != validator or ch.commit not in order or per.get((validator, ch.commit), 0) >= MAX_CHALLENGES:
                continue
            per[(validator, ch.commit)] = per.get((validator, ch.commit), 0) + 1
            kept.setdefault((ch.commit, ch.segment), ch)
    return tuple(kept[k] for k in sorted(kept, key=lambda k: (order[k[0]], k[1])))


def judge_challenge(challenge: Challenge, *, expected: str | None, replayed: str | None, exact: bool,
                    problem: str | None = None) -> Ruling:
    """Confirmed when the referee, replaying exactly (the header's device class), does not land on the committed
    checkpoint, or when the miner cannot open the challenged segment to it (an audit fails alike). Refuted
    otherwise: a referee on another device class never confirms on a distance alone."""
    if problem is not None:
        return Ruling(challenge, True, problem[:120], expected or "unopened")
    if expected is None or replayed is None:
        return Ruling(challenge, False, replayed or "not replayed", expected or "unopened")
    return Ruling(challenge, exact and replayed != expected, replayed, expected)


def dispute_detail(ruling: Ruling) -> str:
    """A dispute vote's detail: the segment and both full hashes, so anyone reading the block can replay it."""
    return (f"{DISPUTE_PREFIX}segment {ruling.challenge.segment} expected {ruling.expected[:64]} "
            f"replayed {ruling.replayed[:64]}")[:200]


def compute_revision(ballot: Ballot, rulings: Iterable[Ruling]) -> Ballot | None:
    """The ballot with each valid vote on a confirmed challenge's commit turned into a dispute vote (the first
    confirmation per commit names it); None when no vote changes, so nothing new is signed."""
    confirmed: dict[str, Ruling] = {}
    for r in rulings:
        if r.confirmed:
            confirmed.setdefault(r.challenge.commit, r)
    votes = tuple(Vote(commit=v.commit, verdict=Verdict.BAD_TRANSCRIPT, score=0, detail=dispute_detail(confirmed[v.commit]))
                  if v.verdict is Verdict.VALID and v.commit in confirmed else v for v in ballot.votes)
    return None if votes == ballot.votes else ballot.model_copy(update={"votes": votes})


def parse_dispute(vote: Vote) -> tuple[int, str, str] | None:
    """(segment, expected, replayed) of a dispute vote, or None: exactly what ``compute_revision`` signs (score 0,
    the detail ``dispute_detail`` writes, two different hashes). Anything else is an ordinary vote, which can
    never excuse a second ballot from being equivocation."""
    m = _DISPUTE.fullmatch(vote.detail) if vote.verdict is Verdict.BAD_TRANSCRIPT and vote.score == 0 else None
    return None if m is None or m[2] == m[3] else (int(m[1]), m[2], m[3])


def is_dispute_vote(vote: Vote) -> bool:
    return parse_dispute(vote) is not None


def is_revision(earlier: Ballot, later: Ballot) -> bool:
    """``later`` revises ``earlier``: the same ballot in every field but votes, the same commits in the same
    order, and each vote that differs was valid and is now a dispute vote. Not equivocation; it supersedes."""
    if earlier == later or earlier.model_copy(update={"votes": later.votes}) != later \
            or [v.commit for v in earlier.votes] != [v.commit for v in later.votes]:
        return False
    return all(a == b or (a.verdict is Verdict.VALID and is_dispute_vote(b)) for a, b in zip(earlier.votes, later.votes))


def is_answer(earlier: Ballot, later: Ballot, challenges: Sequence[Challenge]) -> bool:
    """``later`` revises ``earlier`` and each vote it turns names a segment another validator challenged on that
    commit: what a referee may sign. A revision of a vote nobody challenged is the referee's own word, refused."""
    asked = {(c.commit, c.segment) for c in challenges if c.challenger != earlier.validator}
    return is_revision(earlier, later) and all(
        a == b or (b.commit, (parse_dispute(b) or (-1,))[0]) in asked for a, b in zip(earlier.votes, later.votes))


def select_answers(ballot: Ballot, signeds: Iterable[Any], challenges: Sequence[Challenge]) -> list[Any]:
    """What a round keeps of a validator's other signed ballots beside its ``ballot``: answers to ``challenges``,
    and any ballot that neither revises it nor is revised by it (equivocation evidence); never a revision that
    answers nothing (with no challenges, as in the ballot's own reply, none does)."""
    return [s for s in signeds if isinstance(s.message, Ballot) and s.message.validator == ballot.validator
            and (is_answer(ballot, s.message, challenges)
                 or not (is_revision(ballot, s.message) or is_revision(s.message, ballot)))]


def commits_to_referee(ballot: Ballot, challenges: Sequence[Challenge], referee: str) -> Mapping[str, list[Challenge]]:
    """commit -> the challenges one referee replays: others' challenges on commits its ballot votes valid."""
    valid = {v.commit for v in ballot.votes if v.verdict is Verdict.VALID}
    todo: dict[str, list[Challenge]] = {}
    for ch in challenges:
        if ch.challenger != referee and ch.commit in valid:
            todo.setdefault(ch.commit, []).append(ch)
    return todo


# ------------------------------------------------------------------ how likely a splice escapes


def splice_escape_probability(n_segments: int, q: int, validators: int) -> float:
    """P(a transcript with one spliced segment, not the last, is accepted) with disputes: no validator's audit
    samples it. Each samples ``q`` of the ``n_segments - 1`` others independently (the last is always replayed)."""
    others = n_segments - 1
    if others < 1:
        return 0.0
    return (1.0 - min(q, others) / others) ** validators


def splice_escape_without_disputes(n_segments: int, q: int, validators: int) -> float:
    """The same, when each validator only votes on its own audit: refused only if more than 2/3 sample it."""
    others = n_segments - 1
    if others < 1:
        return 0.0
    p, need = min(q, others) / others, quorum_size(validators)
    return sum(math.comb(validators, k) * p ** k * (1 - p) ** (validators - k) for k in range(need))
