"""What a signature covers and what names a message: domain-separated, chain-bound SHA-256 roots.

``signing_root = SHA-256(len(domain) | domain | chain_id | canonical_bytes(message))``, so a
ballot signature can never pass as a block signature (consensus-specs'
``compute_signing_root``), and nothing signed for one chain verifies on another.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from functools import cache, lru_cache

from pydantic import BaseModel

from dlbc_ray.canonical import canonical_bytes


def sha256_hex(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part)
    return h.hexdigest()


def domain_of(message: BaseModel) -> bytes:
    domain = getattr(type(message), "DOMAIN", None)
    if not isinstance(domain, bytes):
        raise TypeError(f"{type(message).__name__} has no DOMAIN and cannot be signed or hashed as a message")
    return domain


@lru_cache(maxsize=256)
def prefixed_domain(dom: bytes) -> bytes:
    return len(dom).to_bytes(1, "big") + dom


@lru_cache(maxsize=256)
def chain_bytes(chain_id: str) -> bytes:
    """A chain id's raw bytes (ValueError for a string that is not hex; errors are not cached)."""
    return bytes.fromhex(chain_id)


def signing_root(message: BaseModel, chain_id: str, domain: bytes | None = None) -> bytes:
    """What a signature covers: the message's domain, the chain it is meant for, the message."""
    dom = domain if domain is not None else domain_of(message)
    return hashlib.sha256(prefixed_domain(dom) + chain_bytes(chain_id) + canonical_bytes(message)).digest()


def message_hash(message: BaseModel) -> str:
    """The id of a message (task id, block hash, chain id): SHA-256 of its domain and canonical bytes.

    A block header names its chain itself, so its hash is chain-bound; a task's id is
    the same on every chain, but its signed envelope verifies on one only.
    """
    return hashlib.sha256(prefixed_domain(domain_of(message)) + canonical_bytes(message)).hexdigest()


@cache
def hash_pool() -> ThreadPoolExecutor:
    """The process's threads for hashing and verifying (hashlib and libsodium release the GIL)."""
    return ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2), thread_name_prefix="dlbc-hash")
