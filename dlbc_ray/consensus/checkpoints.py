"""A training transcript's checkpoints as committed (leaves, Merkle root, proofs of one leaf) and the
segments between them an audit samples.

RFC 6962 layout, as ``crypto.merkle_root``: leaves hashed with a 0x00 prefix, nodes with 0x01,
an odd last node promoted without a sibling. Pure: no torch, no Ray, no I/O.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

from pydantic import Field

from dlbc_ray import crypto
from dlbc_ray.schema.base import FrozenModel, Hash

_AUDIT_DOMAIN = b"dlbc/transcript-audit/v1"


class CheckpointLeaf(FrozenModel):
    """One checkpoint as committed: its step and the hashes of its weights and optimizer state."""

    index: int = Field(ge=0)
    step: int = Field(ge=0)
    weights_hash: Hash
    optimizer_hash: Hash


class MerkleProof(FrozenModel):
    """Sibling hashes from a leaf to the checkpoints root (RFC 6962 layout, as ``crypto.merkle_root``)."""

    index: int = Field(ge=0)
    size: int = Field(ge=1)
    path: tuple[Hash, ...] = Field(max_length=64)


def compute_checkpoints_root(leaves: Sequence[CheckpointLeaf]) -> str:
    return crypto.merkle_root(crypto.canonical_bytes(leaf) for leaf in leaves)


def _leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def _node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def compute_merkle_levels(leaves: Sequence[CheckpointLeaf]) -> tuple[tuple[bytes, ...], ...]:
    """Every level of the checkpoints' Merkle tree, leaves first: what a miner keeps to serve many proofs."""
    level = [_leaf_hash(crypto.canonical_bytes(leaf)) for leaf in leaves]
    levels = [tuple(level)]
    while len(level) > 1:  # an odd last node is promoted without a sibling
        level = [_node_hash(a, b) for a, b in zip(level[::2], level[1::2])] + ([level[-1]] if len(level) % 2 else [])
        levels.append(tuple(level))
    return tuple(levels)


def compute_merkle_proof(leaves: Sequence[CheckpointLeaf], index: int,
                         levels: Sequence[Sequence[bytes]] | None = None) -> MerkleProof:
    """The path proving leaf ``index`` against ``compute_checkpoints_root(leaves)``; ``levels`` (from
    ``compute_merkle_levels(leaves)``) spares rehashing every leaf for each proof."""
    path, i = [], index
    for level in (levels if levels is not None else compute_merkle_levels(leaves))[:-1]:
        if i % 2 == 1 or i + 1 < len(level):
            path.append(level[i ^ 1].hex())
        i //= 2
    return MerkleProof(index=index, size=len(leaves), path=tuple(path))


def compute_root_from_proof(leaf: CheckpointLeaf, proof: MerkleProof) -> str | None:
    """The root ``proof`` leads ``leaf`` to, or None when the path has the wrong length for its size."""
    if proof.index >= proof.size or leaf.index != proof.index:
        return None
    node, i, n, path = _leaf_hash(crypto.canonical_bytes(leaf)), proof.index, proof.size, list(proof.path)
    while n > 1:
        if i % 2 == 1 or i + 1 < n:
            if not path:
                return None
            sibling = bytes.fromhex(path.pop(0))
            node = _node_hash(sibling, node) if i % 2 else _node_hash(node, sibling)
        i, n = i // 2, (n + 1) // 2
    return None if path else node.hex()


def is_valid_proof(leaf: CheckpointLeaf, proof: MerkleProof, checkpoints_root: str) -> bool:
    return compute_root_from_proof(leaf, proof) == checkpoints_root


# ------------------------------------------------------------------ sampling


def compute_audit_seed(base_hash: str, submissions_root: str, close_signature: str, commit: str,
                       validator: str) -> bytes:
    """Seed of one validator's audit of one submission: the round's parent block, its submission set
    and the proposer's signature on the window close, none of which the miner knew when it committed.
    Each validator draws its own segments, so a round's validators together cover more of the run."""
    text = f"|{base_hash}|{submissions_root}|{close_signature}|{commit}|{validator}"
    return hashlib.sha256(_AUDIT_DOMAIN + text.encode()).digest()


def sample_segments(seed: bytes, n_segments: int, q: int) -> tuple[int, ...]:
    """``min(q, n_segments)`` distinct segments (segment i runs checkpoint i -> i+1), sorted."""
    chosen: set[int] = set()
    counter = 0
    while len(chosen) < min(q, n_segments):
        draw = hashlib.sha256(seed + counter.to_bytes(8, "big")).digest()
        chosen.add(int.from_bytes(draw, "big") % n_segments)
        counter += 1
    return tuple(sorted(chosen))


def compute_audit_segments(seed: bytes, n_segments: int, q: int) -> tuple[int, ...]:
    """The last segment (it binds the submitted model) and ``q`` sampled among the others, sorted."""
    if n_segments < 1:
        return ()
    return tuple(sorted({*sample_segments(seed, n_segments - 1, q), n_segments - 1}))


def escape_probability(skipped: int, n_segments: int, q: int) -> float:
    """P(none of ``q`` distinct segments sampled from ``n_segments`` is one of ``skipped`` faked ones):
    C(n - s, q) / C(n, q). ``compute_audit_segments`` samples from all segments but the last."""
    q = min(q, n_segments)
    return math.comb(n_segments - skipped, q) / math.comb(n_segments, q) if n_segments else 1.0
