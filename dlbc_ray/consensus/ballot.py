"""Ballots: one signed judgement per validator and round, bound to the round's submission set, base and window.

A ballot names the Merkle root of every commit the validator judged, so a proposer that
drops a submission after the vote breaks every ballot; it names the round's base block
and window close, so a ballot from a stale round expires instead of lingering. It carries
one vote per submission under one signature: a block holds V ballot signatures, not M x V.

A block carries whole ballots in one canonical order (by validator, each ballot's votes in
arrival order): a proposer can neither drop one vote of a ballot (which would cost that
validator its fee, unseen) nor re-order, repeat or keep an equivocator's ballot to make a
second encoding of the same block. Two different ballots (or BaaS fusion votes) of one
validator for one round are equivocation, and one such pair is the evidence that excludes it,
unless one is a dispute revision of the other (``consensus.dispute.is_revision``): the revision counts.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from dlbc_ray import crypto
from dlbc_ray.consensus.dispute import is_revision
from dlbc_ray.schema import (
    Ballot,
    Block,
    ChainParams,
    EquivocationEvidence,
    Evidence,
    FusionEquivocationEvidence,
    FusionVote,
    Signed,
    Vote,
)

Fault = tuple[str, str]  # (reason, message)


def compute_round_id(task_id: str, base_hash: str, nonce: int) -> str:
    """A round's id: its task, the head it started on and a nonce that tells retries apart."""
    return hashlib.sha256(f"dlbc/round/v1|{task_id}|{base_hash}|{nonce}".encode()).hexdigest()


def compute_submissions_root(commits: Sequence[str]) -> str:
    """The root a ballot signs: the round's commits in arrival order."""
    return crypto.merkle_root(bytes.fromhex(c) for c in commits)


def is_bound_to(ballot: Ballot, round_id: str, submissions_root: str) -> bool:
    """True when ``ballot`` belongs to this round and judged exactly this submission set."""
    return ballot.round_id == round_id and ballot.submissions_root == submissions_root


def is_fresh_round(ballot: Ballot, recent_hashes: Sequence[str], timestamp_ms: int, params: ChainParams) -> bool:
    """The round started on one of the chain's recent blocks and its window closed not too long ago."""
    return ballot.base_hash in recent_hashes and timestamp_ms <= ballot.close_ms + params.round_ttl_ms


def is_conflicting(a: Ballot | FusionVote, b: Ballot | FusionVote) -> bool:
    """Two ballots (or two fusion votes) by one validator for one round that say different things: equivocation,
    unless one ballot is a dispute revision of the other (it names the confirmed challenge; it supersedes)."""
    if isinstance(a, Ballot) and isinstance(b, Ballot) and (is_revision(a, b) or is_revision(b, a)):
        return False
    return type(a) is type(b) and (a.validator, a.task_id, a.round_id) == (b.validator, b.task_id, b.round_id) \
        and a != b


def is_whole(ballot: Ballot, commits: Sequence[str]) -> bool:
    """One vote per submission of the round, in arrival order: the only shape a block accepts."""
    return [v.commit for v in ballot.votes] == list(commits)


def is_well_formed(ballot: Ballot, commits: Sequence[str]) -> bool:
    """Votes only on the round's submissions, each at most once: what the ledger accepts, as a ballot or as evidence."""
    judged = [v.commit for v in ballot.votes]
    return len(set(judged)) == len(judged) and set(judged) <= set(commits)


def find_partial_ballot(ballots: Sequence[Ballot], commits: Sequence[str]) -> str | None:
    """The first validator whose ballot does not judge exactly ``commits``, or None: ballots are whole."""
    wanted = set(commits)
    return next((b.validator for b in ballots if {v.commit for v in b.votes} != wanted), None)


def is_canonical_order(ballots: Sequence[Ballot], commits: Sequence[str]) -> bool:
    """Ballots sorted by validator, each once, and each ballot's votes in arrival order: what a proposer emits."""
    validators = [b.validator for b in ballots]
    return all(a < b for a, b in zip(validators, validators[1:])) and all(is_whole(b, commits) for b in ballots)


def find_ballot_fault(block: Block, deadline_ms: int | None = None) -> Fault | None:
    """The first way a task block's round differs from its one honest encoding, or None.

    A round is named exactly when there are submissions; its window closed by the task's
    ``deadline_ms``; ballots are whole, sorted, and none (nor any fusion vote) is a proven equivocator's.
    """
    commits = [s.message.commit for s in block.submissions]
    ballots = [b.message for b in block.ballots]
    if (block.header.round_id is None) != (not commits):
        return "round_id", "a block names a round exactly when it carries submissions"
    late = next((b for b in ballots if deadline_ms is not None and b.close_ms > deadline_ms), None)
    if late is not None:
        return "late_round", f"the round's window closed at {late.close_ms}, after the task's deadline {deadline_ms}"
    partial = find_partial_ballot(ballots, commits)
    if partial is not None:
        return "partial_ballot", f"the ballot of {partial[:12]} does not cover every submission of the block"
    if not is_canonical_order(ballots, commits):
        return "vote_order", "ballots are not sorted by validator, each with its votes in arrival order"
    fusers = [v.message.validator for v in block.fusion_votes]
    if any(a >= b for a, b in zip(fusers, fusers[1:])):
        return "vote_order", "fusion votes are not sorted by validator"
    pairs = [(ev.first.message, ev.second.message) for ev in block.evidence]
    liars = [first.validator for first, _ in pairs]
    if any(a >= b for a, b in zip(liars, liars[1:])) or any(
            crypto.message_hash(a) >= crypto.message_hash(b) for a, b in pairs):
        return "evidence_order", "evidence is not one pair per validator, sorted, each pair by message hash"
    culprits = set(liars)
    if any(b.validator in culprits for b in ballots) or any(f in culprits for f in fusers):
        return "evidence", "a ballot or fusion vote of a validator proven to equivocate is in the block"
    return None


# ------------------------------------------------------------------ a proposer's choice


def find_equivocations(ballots: Sequence[Signed[Ballot]], fusion_votes: Sequence[Signed[FusionVote]] = ()
                       ) -> tuple[Evidence, ...]:
    """One conflicting pair per equivocating validator (the first conflicting pair among its ballots, or else its
    fusion votes, in the order received), in the one order the ledger accepts: by validator; within a pair, by
    message hash. Pairs are checked two by two: two revisions of one ballot that revise it differently conflict."""
    found = {**_conflicts(fusion_votes, FusionEquivocationEvidence), **_conflicts(ballots, EquivocationEvidence)}
    return tuple(found[v] for v in sorted(found))


def _conflicts(signeds: Sequence[Signed[Any]], make: Callable[..., Evidence]) -> dict[str, Evidence]:
    seen: dict[str, list[Signed[Any]]] = {}
    found: dict[str, Evidence] = {}
    for signed in signeds:
        validator = signed.message.validator
        earlier = next((e for e in seen.get(validator, ()) if is_conflicting(e.message, signed.message)), None)
        if validator not in found and earlier is not None:
            a, b = sorted((earlier, signed), key=lambda s: crypto.message_hash(s.message))
            found[validator] = make(first=a, second=b)
        seen.setdefault(validator, []).append(signed)
    return found


def select_bound(ballots: Sequence[Signed[Ballot]], round_id: str, commits: Sequence[str]) -> list[Signed[Ballot]]:
    """The well-formed ballots that judged exactly this round's submission set, in the window most validators
    signed.

    No other may go in the block, as a ballot or as evidence (``ballot_set``, ``ballot_round``,
    ``vote_commit``, ``duplicate_vote``): one validator that signs such a ballot for the round
    must not spoil the honest ballots' block.
    """
    root = compute_submissions_root(commits)
    bound = [b for b in ballots if is_bound_to(b.message, round_id, root) and is_well_formed(b.message, commits)]
    signers = {(b.message.base_hash, b.message.close_ms, b.message.validator) for b in bound}
    windows = Counter((base, close) for base, close, _ in signers)
    if not windows:
        return []
    window = min(windows, key=lambda w: (-windows[w], w))
    return [b for b in bound if (b.message.base_hash, b.message.close_ms) == window]


def select_ballots(ballots: Sequence[Signed[Ballot]], round_id: str, commits: Sequence[str],
                   validators: Iterable[str], excluded: Iterable[str] = ()) -> tuple[Signed[Ballot], ...]:
    """The first whole ballot bound to this round of each validator not excluded, or its latest dispute revision
    (a revision supersedes the ballot it revises), sorted by validator."""
    root, members, skip = compute_submissions_root(commits), set(validators), set(excluded)
    chosen: dict[str, Signed[Ballot]] = {}
    for signed in ballots:
        b = signed.message
        if b.validator in members and b.validator not in skip and is_bound_to(b, round_id, root) \
                and is_whole(b, commits):
            kept = chosen.setdefault(b.validator, signed)
            if is_revision(kept.message, b):
                chosen[b.validator] = signed
    return tuple(chosen[v] for v in sorted(chosen))


def votes_by_commit(ballots: Iterable[Ballot]) -> dict[str, list[tuple[str, Vote]]]:
    """commit -> (validator, vote) for each ballot's vote on it: what explorers show per submission."""
    found: dict[str, list[tuple[str, Vote]]] = {}
    for ballot in ballots:
        for vote in ballot.votes:
            found.setdefault(vote.commit, []).append((ballot.validator, vote))
    return found
