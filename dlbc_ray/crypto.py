"""Ed25519 identities, canonical bytes, domain-separated signing and hashing.

The only module that imports ``cryptography`` (signing, keys) and PyNaCl (verification:
libsodium's Ed25519 is about twice as fast here, and strict: it refuses a non-canonical
S and small-order keys, the same way on every node). Everything signed is signed over
``signing_root = SHA-256(len(domain) | domain | chain_id | canonical_bytes(message))``,
so a ballot signature can never pass as a block signature (consensus-specs'
``compute_signing_root``), and nothing signed for one chain verifies on another: the
chain id (the genesis hash) travels in the ``Signed`` envelope and is checked first.
Weights are hashed from raw tensor bytes, never a pickle.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import cache, lru_cache
from typing import Any, TypeVar

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nacl.bindings import crypto_sign_open
from nacl.exceptions import CryptoError
from pydantic import BaseModel

from dlbc_ray.canonical import _CANONICAL, _Bounded, canonical_bytes
from dlbc_ray.errors import BadSignature, InvalidModelFile, KeyFileError
from dlbc_ray.schema.curve import is_public_key  # noqa: F401 - re-exported (wire types check keys below crypto)
from dlbc_ray.schema.signed import Signed

M = TypeVar("M", bound=BaseModel)

SECRET_BYTES = 32
PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
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
def _prefixed(dom: bytes) -> bytes:
    return len(dom).to_bytes(1, "big") + dom


@lru_cache(maxsize=256)
def _chain_bytes(chain_id: str) -> bytes:
    """A chain id's raw bytes (ValueError for a string that is not hex; errors are not cached)."""
    return bytes.fromhex(chain_id)


def signing_root(message: BaseModel, chain_id: str, domain: bytes | None = None) -> bytes:
    """What a signature covers: the message's domain, the chain it is meant for, the message."""
    dom = domain if domain is not None else domain_of(message)
    return hashlib.sha256(_prefixed(dom) + _chain_bytes(chain_id) + canonical_bytes(message)).digest()


def message_hash(message: BaseModel) -> str:
    """The id of a message (task id, block hash, chain id): SHA-256 of its domain and canonical bytes.

    A block header names its chain itself, so its hash is chain-bound; a task's id is
    the same on every chain, but its signed envelope verifies on one only.
    """
    return hashlib.sha256(_prefixed(domain_of(message)) + canonical_bytes(message)).hexdigest()


def sign(identity: Identity, message: M, chain_id: str) -> Signed[M]:
    root = signing_root(message, chain_id)
    return Signed[type(message)](  # type: ignore[misc]
        message=message, chain_id=chain_id, signer=identity.public_key, signature=identity.sign_root(root).hex()
    )


def _verifies(signer: str, signature: str, root: bytes) -> bool:
    """libsodium's strict Ed25519 check (canonical S, no small-order key or R); False, never an error, when bad.

    The lengths are checked here: libsodium reads exactly 32 key bytes and splits 64 off the signature.
    """
    try:
        key, sig = bytes.fromhex(signer), bytes.fromhex(signature)
    except ValueError:
        return False
    if len(key) != PUBLIC_KEY_BYTES or len(sig) != SIGNATURE_BYTES:
        return False
    try:
        crypto_sign_open(sig + root, key)  # cffi releases the GIL: threads verify in parallel
    except CryptoError:
        return False
    return True


# (signer, signature, root) -> verdict: a ballot checked by the consensus actor, the ledger and
# a replay costs one Ed25519 verification per process.
_VERDICTS = _Bounded(65_536)
# (id(message), chain_id, domain) -> (message, root): the root ``prefetched`` computed, so the rule
# that checks the same message object does not encode it again. Holding the message keeps its id
# from being reused.
_ROOTS = _Bounded(16_384)
VERIFY_CHUNK = 8  # signatures one thread verifies together (~0.4 ms; handing a chunk over costs ~20 us)


class _Chunk:
    """Signatures verified together, by a pool thread or by the first rule that needs one of their verdicts.

    Whoever takes the lock first verifies the chunk; anyone else waits for it: the rules
    never wait for a chunk nobody has started (work stealing), and never verify one twice.
    """

    __slots__ = ("triples", "lock", "done", "abandoned")

    def __init__(self, triples: list[tuple[str, str, bytes]]) -> None:
        self.triples = triples
        self.lock = threading.Lock()
        self.done = False
        self.abandoned = False

    def run(self) -> None:
        with self.lock:
            if not self.done:
                for key in self.triples:
                    _VERDICTS.put(key, _verifies(*key))
                self.done = True
        self.forget()

    def run_ahead(self) -> None:
        """A pool thread's turn: skipped once the scope that asked for it has ended."""
        if not self.abandoned:
            self.run()

    def forget(self) -> None:
        for key in self.triples:
            if _PENDING.get(key) is self:
                _PENDING.pop(key, None)


# (signer, signature, root) -> the chunk that is verifying it in the background.
_PENDING: dict[tuple[str, str, bytes], _Chunk] = {}


def clear_signature_cache() -> None:
    """Forget every verdict, remembered root and encoding (benchmarks measure a cold process with it)."""
    for chunk in list(_PENDING.values()):
        chunk.abandoned = True
    _PENDING.clear()
    _VERDICTS.clear()
    _ROOTS.clear()
    _CANONICAL.clear()


def _root_of(signed: Signed[Any], domain: bytes | None) -> bytes:
    key = (id(signed.message), signed.chain_id, domain)
    hit = _ROOTS.get(key)
    if hit is not None and hit[0] is signed.message:
        return hit[1]
    return signing_root(signed.message, signed.chain_id, domain)


def _verdict(signer: str, signature: str, root: bytes) -> bool:
    key = (signer, signature, root)
    verdict = _VERDICTS.get(key)
    if verdict is None:
        chunk = _PENDING.get(key)
        if chunk is not None:
            chunk.run()  # verifies it here, or waits for the pool thread that already is
            verdict = _VERDICTS.get(key)
        if verdict is None:  # never prefetched, or evicted since
            verdict = _verifies(signer, signature, root)
            _VERDICTS.put(key, verdict)
    return verdict


def is_valid_signature(signed: Signed[Any], domain: bytes | None = None) -> bool:
    """True when ``signed.signature`` is the signer's over the message, its domain and ``signed.chain_id``.

    Verdicts are cached by (signer, signature, root), and the root commits to the domain,
    the chain id and the message: a cached verdict answers exactly the same question.
    """
    return _verdict(signed.signer, signed.signature, _root_of(signed, domain))


def _start(triples: list[tuple[str, str, bytes]]) -> _Chunk:
    chunk = _Chunk(triples)
    for key in triples:
        _PENDING[key] = chunk
    _hash_pool().submit(chunk.run_ahead)
    return chunk


def _verify_ahead(signeds: Iterable[Signed[Any]], *, remember: bool) -> list[_Chunk]:
    """Hand the envelopes' signatures to the pool a chunk at a time, as soon as each chunk is encoded."""
    chunks, todo, seen = [], [], set()
    for signed in signeds:
        message = signed.message
        try:
            encoded = canonical_bytes(message)
            root = hashlib.sha256(_prefixed(domain_of(message)) + _chain_bytes(signed.chain_id) + encoded).digest()
        except (TypeError, ValueError, OverflowError, RecursionError):
            continue
        if remember and message.model_config.get("frozen"):
            _CANONICAL.put(id(message), (message, encoded))
            _ROOTS.put((id(message), signed.chain_id, None), (message, root))
        key = (signed.signer, signed.signature, root)
        if key not in _VERDICTS and key not in _PENDING and key not in seen:
            seen.add(key)
            todo.append(key)
            if len(todo) == VERIFY_CHUNK:
                chunks.append(_start(todo))
                todo = []
    if todo:
        chunks.append(_start(todo))
    return chunks


def prefetch_signatures(signeds: Iterable[Signed[Any]]) -> None:
    """Verify many envelopes at once, spread over the cores, into the cache ``is_valid_signature`` consults.

    Only speeds up later checks: each rule still asks ``is_valid_signature`` (after its own
    chain and signer checks) and gets the verdict a serial check would give. An envelope
    whose root cannot be computed is skipped, so its rule reports it by name. Returns once
    every verdict is in; the caller verifies whichever chunks no pool thread has started.
    """
    for chunk in _verify_ahead(signeds, remember=False):
        chunk.run()


@contextmanager
def prefetched(signeds: Iterable[Signed[Any]]) -> Iterator[None]:
    """Verify the envelopes' signatures in the background while the rules run; remember their encodings.

    A rule that asks for a verdict still being computed waits for it, or verifies that
    chunk itself if no pool thread has started it: the same verdicts as a serial check,
    with the rules' Python and the signatures' C running on different cores at once.
    Encodings are keyed by object: a message changed in place afterwards (a frozen
    model's dict) is encoded afresh. Verdicts stay cached, as they are keyed by content;
    chunks nobody needed by the end (a block refused early) are dropped.
    """
    chunks = _verify_ahead(signeds, remember=True)
    try:
        yield
    finally:
        for chunk in chunks:
            chunk.abandoned = True
            chunk.forget()
        _CANONICAL.clear()
        _ROOTS.clear()


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


@cache
def _hash_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2), thread_name_prefix="dlbc-hash")


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
    digests = iter(list(_hash_pool().map(_sha256, flat)) if total > HASH_CHUNK_BYTES else [_sha256(p) for p in flat])
    h = hashlib.sha256(WEIGHTS_DOMAIN)
    for name, shape, array, ps in zip(names, shapes, arrays, pieces):
        parts = [next(digests) for _ in ps]
        digest = parts[0] if array.nbytes <= HASH_CHUNK_BYTES else hashlib.sha256(b"".join(parts)).digest()
        header = json.dumps([name, array.dtype.str, shape], separators=(",", ":")).encode()
        h.update(len(header).to_bytes(4, "big") + header + digest)
    return h.hexdigest()
