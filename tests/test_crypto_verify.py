"""Signature verification (libsodium): strict encodings refused, malformed input is False, never an error."""

from __future__ import annotations

import pytest

from dlbc_ray import crypto
from dlbc_ray.crypto import sigpool
from dlbc_ray.crypto import Identity
from dlbc_ray.schema import Ballot, Signed, Verdict, Vote
from tests.builders import fake_hash

CHAIN = fake_hash("chain-a")
L = 2**252 + 27742317777372353535851937790883648493  # the order of Ed25519's base point (RFC 8032)
IDENTITY_POINT = "01" + "00" * 31  # a small-order key: any message "verifies" under a lax check


def a_ballot(validator: str) -> Ballot:
    return Ballot(task_id=fake_hash("t"), round_id=fake_hash("r"), submissions_root=fake_hash("s"),
                  base_hash=fake_hash("b"), close_ms=1, validator=validator,
                  votes=(Vote(commit=fake_hash("c"), verdict=Verdict.VALID, score=9000),))


@pytest.fixture
def signed() -> Signed[Ballot]:
    alice = Identity.from_seed("alice", b"alice")
    return crypto.sign(alice, a_ballot(alice.public_key), CHAIN)


def with_signature(signed: Signed[Ballot], signature: str) -> Signed[Ballot]:
    return signed.model_copy(update={"signature": signature})


def test_a_signature_whose_s_is_not_reduced_is_refused(signed: Signed[Ballot]) -> None:
    """S + L is the same point multiple, so a lax verifier accepts it: a second valid-looking signature."""
    raw = bytes.fromhex(signed.signature)
    s = int.from_bytes(raw[32:], "little")
    malleated = raw[:32] + (s + L).to_bytes(32, "little")
    assert crypto.is_valid_signature(signed)
    assert not crypto.is_valid_signature(with_signature(signed, malleated.hex()))


def test_a_small_order_key_verifies_nothing() -> None:
    """R = identity, S = 0 satisfies [S]B = R + [k]A for A the identity point, whatever the message."""
    assert crypto.is_public_key(IDENTITY_POINT)
    forged = Signed[Ballot](message=a_ballot(IDENTITY_POINT), chain_id=CHAIN, signer=IDENTITY_POINT,
                          signature=IDENTITY_POINT + "00" * 32)
    assert not crypto.is_valid_signature(forged)


@pytest.mark.parametrize("signer, signature", [
    ("zz" * 32, "00" * 64),          # not hex
    ("00" * 31, "00" * 64),          # short key: libsodium would read past it
    ("00" * 32, "00" * 63),          # short signature: libsodium would split it off the root
    ("00" * 33, "00" * 64),
    ("00" * 32, "00" * 65),
    ("ff" * 32, "ff" * 64),          # not a point, S out of range
])
def test_malformed_keys_and_signatures_are_false_never_an_error(signer: str, signature: str) -> None:
    assert sigpool._verifies(signer, signature, b"\x00" * 32) is False
