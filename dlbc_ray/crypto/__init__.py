"""Ed25519 identities, signing, hashing of merkle trees and weights: the project's cryptography.

The only package that imports ``cryptography`` (signing, keys) and PyNaCl (verification, in
``sigpool``). Everything signed is signed over ``roots.signing_root`` (domain, chain id,
canonical bytes), so a ballot signature can never pass as a block signature and nothing
signed for one chain verifies on another: the chain id (the genesis hash) travels in the
``Signed`` envelope and is checked first. Weights are hashed from raw tensor bytes, never a pickle.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel

from dlbc_ray.canonical import canonical_bytes
from dlbc_ray.crypto.roots import domain_of, hash_pool, message_hash, sha256_hex, signing_root
from dlbc_ray.crypto.sigpool import (
    PUBLIC_KEY_BYTES,
    SIGNATURE_BYTES,
    VERIFY_CHUNK,
    clear_signature_cache,
    is_valid_signature,
    prefetch_signatures,
    prefetched,
)
from dlbc_ray.errors import BadSignature, InvalidModelFile, KeyFileError
from dlbc_ray.schema.curve import is_public_key
from dlbc_ray.schema.signed import Signed

__all__ = [
    "COMMIT_DOMAIN", "HASHABLE_KINDS", "HASH_CHUNK_BYTES", "Identity", "PUBLIC_KEY_BYTES", "SECRET_BYTES",
    "SIGNATURE_BYTES", "VERIFY_CHUNK", "WEIGHTS_DOMAIN", "clear_signature_cache", "compute_commit", "domain_of",
    "hash_weights",
    "is_on_chain", "is_public_key", "is_valid_signature", "merkle_root", "merkle_root_of", "message_hash",
    "prefetch_signatures", "prefetched", "sha256_hex", "sign", "signing_root", "verify",
]

M = TypeVar("M", bound=BaseModel)

SECRET_BYTES = 32
WEIGHTS_DOMAIN = b"dlbc/weights/v1"
COMMIT_DOMAIN = b"dlbc/commit/v1"
# Tensors above this size are hashed as a list of chunk digests, in parallel threads.
HASH_CHUNK_BYTES = 4 * 1024 * 1024


# --------------------------------------------------------------------- identities


class Identity:
    """A named Ed25519 signing identity. Its repr never shows the secret."""

    __slots__ = ("name", "_key", "public_key")

    def __init__(self, name: str, secret: bytes) -> None:
        if len(secret) != SECRET_BYTES:
            raise KeyFileError(f"key '{name}' has {len(secret)} secret bytes; Ed25519 needs {SECRET_BYTES}")
        self.name = name
        self._key = Ed25519PrivateKey.from_private_bytes(secret)
        self.public_key: str = self._key.public_key().public_bytes_raw().hex()

    @classmethod
    def generate(cls, name: str) -> Identity:
        return cls(name, os.urandom(SECRET_BYTES))

    @classmethod
    def from_seed(cls, name: str, seed: bytes) -> Identity:
        """A deterministic identity for tests and reproducible examples."""
        return cls(name, hashlib.sha256(b"dlbc/test-identity/v1" + seed).digest())

    def secret_bytes(self) -> bytes:
        """Raw secret, for the key store only."""
        return self._key.private_bytes_raw()

    def sign_root(self, root: bytes) -> bytes:
        return self._key.sign(root)

    def derive(self, label: str) -> bytes:
        """A 32-byte secret derived for one purpose (watermark key, mapping seed ...)."""
        return hmac.new(self.secret_bytes(), b"dlbc/derive/v1|" + label.encode(), hashlib.sha256).digest()

    def __repr__(self) -> str:
        return f"Identity(name={self.name!r}, public_key={self.public_key[:12]}...)"

    def __reduce__(self) -> tuple[object, ...]:
        # Identities travel to their own actor only; the secret is never logged.
        return (Identity, (self.name, self.secret_bytes()))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Identity) and other.public_key == self.public_key and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.public_key)


def sign(identity: Identity, message: M, chain_id: str) -> Signed[M]:
    root = signing_root(message, chain_id)
    return Signed[type(message)](  # type: ignore[misc]
        message=message, chain_id=chain_id, signer=identity.public_key, signature=identity.sign_root(root).hex()
    )


def is_on_chain(signed: Signed[Any], chain_id: str) -> bool:
    return signed.chain_id == chain_id


def verify(signed: Signed[M], *, chain_id: str, expected_signer: str) -> M:
    """Return the message when it is signed for ``chain_id`` by ``expected_signer`` and verifies, else raise.

    The signer is required: no caller can skip the signer check by forgetting an argument.
    """
    name = type(signed.message).__name__.lower()
    if signed.chain_id != chain_id:
        raise BadSignature(f"{name} is signed for chain {signed.chain_id[:12]}..., this is {chain_id[:12]}...",
                           reason="wrong_chain")
    if signed.signer != expected_signer:
        raise BadSignature(f"{name} signed by {signed.signer[:12]}..., expected {expected_signer[:12]}...",
                           reason="wrong_signer")
    if not is_valid_signature(signed):
        raise BadSignature(f"{name} signature does not verify for {signed.signer[:12]}...", reason="bad_signature")
    return signed.message


# ------------------------------------------------------------------------ hashes


def compute_commit(model_hash: str, miner: str, task_id: str) -> str:
    """SN9's binding of a model to its miner and task: H(model_hash | miner | task_id)."""
    return sha256_hex(COMMIT_DOMAIN, b"|", model_hash.encode(), b"|", miner.encode(), b"|", task_id.encode())


def merkle_root(leaves: Iterable[bytes]) -> str:
    """RFC 6962-style root (0x00 leaf / 0x01 node prefixes); the empty tree hashes b''."""
    level = [hashlib.sha256(b"\x00" + leaf).digest() for leaf in leaves]
    if not level:
        return hashlib.sha256(b"").hexdigest()
    while len(level) > 1:
        paired = [hashlib.sha256(b"\x01" + a + b).digest() for a, b in zip(level[::2], level[1::2])]
        level = paired + ([level[-1]] if len(level) % 2 else [])
    return level[0].hex()


def merkle_root_of(messages: Iterable[BaseModel]) -> str:
    return merkle_root(canonical_bytes(m) for m in messages)


def _sha256(data: memoryview) -> bytes:
    return hashlib.sha256(data).digest()  # hashlib releases the GIL for large buffers


def _pieces(data: memoryview) -> list[memoryview]:
    if data.nbytes <= HASH_CHUNK_BYTES:
        return [data]
    return [data[i : i + HASH_CHUNK_BYTES] for i in range(0, data.nbytes, HASH_CHUNK_BYTES)]


HASHABLE_KINDS = frozenset("biufc")  # bool, signed and unsigned ints, floats, complex


def _hashable(name: str, array: np.ndarray) -> np.ndarray:
    """Only plain numeric tensors have canonical bytes; object and void dtypes would hash pointers or padding."""
    if array.dtype.kind not in HASHABLE_KINDS:
        raise InvalidModelFile(f"tensor {name!r} has dtype {array.dtype.str}; only numeric tensors can be hashed",
                               reason="dtype")
    return array


def hash_weights(weights: Mapping[str, np.ndarray]) -> str:
    """Canonical hash of named tensors: sorted names, each ``[name, dtype, shape]`` plus its raw bytes.

    A tensor's digest is SHA-256 of its bytes or, for tensors over 4 MiB, SHA-256 of
    its 4 MiB chunk digests. All pieces are hashed in one parallel map, so a 100 MB
    model hashes in tens of milliseconds; the result does not depend on thread count.
    """
    names = sorted(weights)
    shapes = [list(np.shape(weights[n])) for n in names]  # before the copy: ascontiguousarray makes 0-d 1-d
    arrays = [_hashable(n, np.ascontiguousarray(weights[n])) for n in names]
    pieces = [_pieces(memoryview(a).cast("B")) for a in arrays]
    flat = [p for ps in pieces for p in ps]
    total = sum(a.nbytes for a in arrays)
    digests = iter(list(hash_pool().map(_sha256, flat)) if total > HASH_CHUNK_BYTES else [_sha256(p) for p in flat])
    h = hashlib.sha256(WEIGHTS_DOMAIN)
    for name, shape, array, ps in zip(names, shapes, arrays, pieces):
        parts = [next(digests) for _ in ps]
        digest = parts[0] if array.nbytes <= HASH_CHUNK_BYTES else hashlib.sha256(b"".join(parts)).digest()
        header = json.dumps([name, array.dtype.str, shape], separators=(",", ":")).encode()
        h.update(len(header).to_bytes(4, "big") + header + digest)
    return h.hexdigest()
