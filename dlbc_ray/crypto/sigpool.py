"""Signature verification: libsodium's strict Ed25519, a verdict cache, and a pool that verifies ahead.

PyNaCl verifies (libsodium's Ed25519 is about twice as fast here as ``cryptography``'s, and
strict: it refuses a non-canonical S and small-order keys, the same way on every node).
Verdicts are cached by (signer, signature, root); ``prefetched`` hands a block's signatures
to the hash pool a chunk at a time while the rules run, and a rule that needs a verdict
still being computed waits for it or verifies that chunk itself: the same verdicts as a
serial check.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from nacl.bindings import crypto_sign_open
from nacl.exceptions import CryptoError

from dlbc_ray.canonical import _CANONICAL, _Bounded, canonical_bytes
from dlbc_ray.crypto.roots import chain_bytes, domain_of, hash_pool, prefixed_domain, signing_root
from dlbc_ray.schema.signed import Signed

PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
VERIFY_CHUNK = 8  # signatures one thread verifies together (~0.4 ms; handing a chunk over costs ~20 us)


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
    hash_pool().submit(chunk.run_ahead)
    return chunk


def _verify_ahead(signeds: Iterable[Signed[Any]], *, remember: bool, chunk_size: int = VERIFY_CHUNK) -> list[_Chunk]:
    """Hand the envelopes' signatures to the pool ``chunk_size`` at a time, as soon as each chunk is encoded."""
    chunks, todo, seen = [], [], set()
    for signed in signeds:
        message = signed.message
        try:
            encoded = canonical_bytes(message)
            root = hashlib.sha256(prefixed_domain(domain_of(message)) + chain_bytes(signed.chain_id) + encoded).digest()
        except (TypeError, ValueError, OverflowError, RecursionError):
            continue
        if remember and message.model_config.get("frozen"):
            _CANONICAL.put(id(message), (message, encoded))
            _ROOTS.put((id(message), signed.chain_id, None), (message, root))
        key = (signed.signer, signed.signature, root)
        if key not in _VERDICTS and key not in _PENDING and key not in seen:
            seen.add(key)
            todo.append(key)
            if len(todo) >= chunk_size:
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
def prefetched(signeds: Iterable[Signed[Any]], chunk_size: int = VERIFY_CHUNK) -> Iterator[None]:
    """Verify the envelopes' signatures in the background while the rules run; remember their encodings.

    A rule that asks for a verdict still being computed waits for it, or verifies that
    chunk itself if no pool thread has started it: the same verdicts as a serial check,
    with the rules' Python and the signatures' C running on different cores at once.
    Encodings are keyed by object: a message changed in place afterwards (a frozen
    model's dict) is encoded afresh. Verdicts stay cached, as they are keyed by content;
    chunks nobody needed by the end (a block refused early) are dropped.
    """
    chunks = _verify_ahead(signeds, remember=True, chunk_size=max(1, chunk_size))
    try:
        yield
    finally:
        for chunk in chunks:
            chunk.abandoned = True
            chunk.forget()
        _CANONICAL.clear()
        _ROOTS.clear()
