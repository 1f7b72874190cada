"""What binds a validator's ballot to one round: its submission set, its base block and its window.

A vote names the Merkle root of every commit the validator judged, so a proposer that
drops a submission after the vote breaks every ballot; it names the round's base block
and window close, so a ballot from a stale round expires instead of lingering.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from dlbc_ray import crypto
from dlbc_ray.schema import ChainParams, Vote


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
