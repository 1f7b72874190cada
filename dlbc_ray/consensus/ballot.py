"""What binds a validator's ballot to one round: its submission set, its base block and its window.

A vote names the Merkle root of every commit the validator judged, so a proposer that
drops a submission after the vote breaks every ballot; it names the round's base block
and window close, so a ballot from a stale round expires instead of lingering.

A block carries whole ballots in one canonical order: a proposer can neither drop one
vote of a ballot (which would cost that validator its fee, unseen) nor re-order, repeat
or keep an equivocator's votes to make a second encoding of the same block.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from dlbc_ray import crypto
from dlbc_ray.schema import Block, ChainParams, Vote

Fault = tuple[str, str]  # (reason, message)


def compute_round_id(task_id: str, base_hash: str, nonce: int) -> str:
    """A round's id: its task, the head it started on and a nonce that tells retries apart."""
    return hashlib.sha256(f"dlbc/round/v1|{task_id}|{base_hash}|{nonce}".encode()).hexdigest()


def compute_submissions_root(commits: Sequence[str]) -> str:
    """The root a ballot signs: the round's commits in arrival order."""
    return crypto.merkle_root(bytes.fromhex(c) for c in commits)


def is_bound_to(vote: Vote, round_id: str, submissions_root: str) -> bool:
    """True when ``vote`` belongs to this round and judged exactly this submission set."""
    return vote.round_id == round_id and vote.submissions_root == submissions_root


def is_fresh_round(vote: Vote, recent_hashes: Sequence[str], timestamp_ms: int, params: ChainParams) -> bool:
    """The round started on one of the chain's recent blocks and its window closed not too long ago."""
    return vote.base_hash in recent_hashes and timestamp_ms <= vote.close_ms + params.round_ttl_ms


def find_partial_ballot(votes: Sequence[Vote], commits: Sequence[str]) -> str | None:
    """The first validator whose votes do not cover exactly ``commits``, or None: ballots are whole."""
    judged: dict[str, set[str]] = {}
    for v in votes:
        judged.setdefault(v.validator, set()).add(v.commit)
    wanted = set(commits)
    return next((validator for validator, seen in judged.items() if seen != wanted), None)


def is_canonical_order(votes: Sequence[Vote], commits: Sequence[str]) -> bool:
    """Votes sorted by (submission arrival, validator), each pair once: the order a proposer emits."""
    order = {c: i for i, c in enumerate(commits)}
    keys = [(order.get(v.commit, -1), v.validator) for v in votes]
    return all(a < b for a, b in zip(keys, keys[1:]))


def find_ballot_fault(block: Block, deadline_ms: int | None = None) -> Fault | None:
    """The first way a task block's round differs from its one honest encoding, or None.

    A round is named exactly when there are submissions; its window closed by the task's
    ``deadline_ms``; ballots are whole, sorted, and hold no proven equivocator's votes.
    """
    commits = [s.message.commit for s in block.submissions]
    votes = [v.message for v in block.votes]
    if (block.header.round_id is None) != (not commits):
        return "round_id", "a block names a round exactly when it carries submissions"
    late = next((v for v in votes if deadline_ms is not None and v.close_ms > deadline_ms), None)
    if late is not None:
        return "late_round", f"the round's window closed at {late.close_ms}, after the task's deadline {deadline_ms}"
    partial = find_partial_ballot(votes, commits)
    if partial is not None:
        return "partial_ballot", f"the ballot of {partial[:12]} does not cover every submission of the block"
    if not is_canonical_order(votes, commits):
        return "vote_order", "votes are not sorted by submission, then validator"
    fusers = [v.message.validator for v in block.fusion_votes]
    if any(a >= b for a, b in zip(fusers, fusers[1:])):
        return "vote_order", "fusion votes are not sorted by validator"
    pairs = [(ev.first.message, ev.second.message) for ev in block.evidence]
    liars = [first.validator for first, _ in pairs]
    if any(a >= b for a, b in zip(liars, liars[1:])) or any(
            crypto.message_hash(a) >= crypto.message_hash(b) for a, b in pairs):
        return "evidence_order", "evidence is not one pair per validator, sorted, each pair by message hash"
    culprits = {first.validator for first, _ in pairs}
    if any(v.validator in culprits for v in votes):
        return "evidence", "votes of a validator proven to equivocate are counted in the block"
    return None

