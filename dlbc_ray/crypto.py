"""Ed25519 identities, canonical bytes, domain-separated signing and hashing.

The only module that imports ``cryptography``. Everything signed is signed over
``signing_root = SHA-256(len(domain) | domain | canonical_bytes(message))``, so a
vote signature can never pass as a block signature (consensus-specs'
``compute_signing_root``). Weights are hashed from raw tensor bytes, never a pickle.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from typing import Any, TypeVar

import numpy as np
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel

from dlbc_ray.errors import BadSignature, KeyFileError
from dlbc_ray.schema.signed import Signed

M = TypeVar("M", bound=BaseModel)

SECRET_BYTES = 32
PUBLIC_KEY_HEX_LEN = 64
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


# --------------------------------------------------------------- canonical bytes


def canonical_bytes(message: BaseModel | Mapping[str, Any] | Sequence[Any]) -> bytes:
    """Sorted-key, whitespace-free UTF-8 JSON of a message; NaN is refused."""
    data = message.model_dump(mode="json") if isinstance(message, BaseModel) else message
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


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


def signing_root(message: BaseModel, domain: bytes | None = None) -> bytes:
    dom = domain if domain is not None else domain_of(message)
    return hashlib.sha256(len(dom).to_bytes(1, "big") + dom + canonical_bytes(message)).digest()


def message_hash(message: BaseModel) -> str:
    """The id of a message (task id, block hash): its signing root in hex."""
    return signing_root(message).hex()


def sign(identity: Identity, message: M) -> Signed[M]:
    return Signed[type(message)](  # type: ignore[misc]
        message=message, signer=identity.public_key, signature=identity.sign_root(signing_root(message)).hex()
    )


def is_valid_signature(signed: Signed[Any], domain: bytes | None = None) -> bool:
    """True when ``signed.signature`` is the signer's over the message in its domain."""
    try:
        key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(signed.signer))
        key.verify(bytes.fromhex(signed.signature), signing_root(signed.message, domain))
    except (InvalidSignature, ValueError):
        return False
    return True


def verify(signed: Signed[M], *, expected_signer: str | None = None) -> M:
    """Return the message when the signature is valid (and by ``expected_signer``), else raise."""
    name = type(signed.message).__name__.lower()
    if expected_signer is not None and signed.signer != expected_signer:
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


@cache
def _hash_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2), thread_name_prefix="dlbc-hash")


def _sha256(data: memoryview) -> bytes:
    return hashlib.sha256(data).digest()  # hashlib releases the GIL for large buffers


def _pieces(data: memoryview) -> list[memoryview]:
    if data.nbytes <= HASH_CHUNK_BYTES:
        return [data]
    return [data[i : i + HASH_CHUNK_BYTES] for i in range(0, data.nbytes, HASH_CHUNK_BYTES)]


def hash_weights(weights: Mapping[str, np.ndarray]) -> str:
    """Canonical hash of named tensors: sorted names, each ``[name, dtype, shape]`` plus its raw bytes.

    A tensor's digest is SHA-256 of its bytes or, for tensors over 4 MiB, SHA-256 of
    its 4 MiB chunk digests. All pieces are hashed in one parallel map, so a 100 MB
    model hashes in tens of milliseconds; the result does not depend on thread count.
    """
    names = sorted(weights)
    arrays = [np.ascontiguousarray(weights[n]) for n in names]
    pieces = [_pieces(memoryview(a).cast("B")) for a in arrays]
    flat = [p for ps in pieces for p in ps]
    total = sum(a.nbytes for a in arrays)
    digests = iter(list(_hash_pool().map(_sha256, flat)) if total > HASH_CHUNK_BYTES else [_sha256(p) for p in flat])
    h = hashlib.sha256(WEIGHTS_DOMAIN)
    for name, array, ps in zip(names, arrays, pieces):
        parts = [next(digests) for _ in ps]
        digest = parts[0] if array.nbytes <= HASH_CHUNK_BYTES else hashlib.sha256(b"".join(parts)).digest()
        header = json.dumps([name, array.dtype.str, list(array.shape)], separators=(",", ":")).encode()
        h.update(len(header).to_bytes(4, "big") + header + digest)
    return h.hexdigest()


def is_public_key(value: str) -> bool:
    if len(value) != PUBLIC_KEY_HEX_LEN:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(value))
    except ValueError:
        return False
    return True
