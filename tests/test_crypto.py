from __future__ import annotations

import pickle

import numpy as np
import pytest

from dlbc_ray import crypto
from dlbc_ray.constants import BALLOT_DOMAIN, BLOCK_DOMAIN
from dlbc_ray.crypto import Identity
from dlbc_ray.errors import BadSignature, ConfigError, InvalidModelFile, KeyFileError
from pydantic import ValidationError

from dlbc_ray.schema import Allocation, Ballot, BlockHeader, RetargetParams, Signed, Verdict, Vote
from dlbc_ray.schema.round_messages import MinerStats
from tests.builders import fake_hash


@pytest.fixture
def alice() -> Identity:
    return Identity.from_seed("alice", b"alice")


CHAIN = fake_hash("chain-a")
OTHER_CHAIN = fake_hash("chain-b")


def a_ballot(validator: str) -> Ballot:
    return Ballot(task_id=fake_hash("t"), round_id=fake_hash("r"), submissions_root=fake_hash("s"),
                  base_hash=fake_hash("b"), close_ms=1, validator=validator,
                  votes=(Vote(commit=fake_hash("c"), verdict=Verdict.VALID, score=9000),))


def test_sign_and_verify_round_trip(alice: Identity) -> None:
    signed = crypto.sign(alice, a_ballot(alice.public_key), CHAIN)
    assert crypto.verify(signed, chain_id=CHAIN, expected_signer=alice.public_key) == signed.message


def test_a_message_signed_for_one_chain_is_refused_on_another_by_name(alice: Identity) -> None:
    signed = crypto.sign(alice, a_ballot(alice.public_key), CHAIN)
    with pytest.raises(BadSignature) as refused:
        crypto.verify(signed, chain_id=OTHER_CHAIN, expected_signer=alice.public_key)
    assert refused.value.reason == "wrong_chain"
    relabelled = signed.model_copy(update={"chain_id": OTHER_CHAIN})  # claiming the other chain breaks the signature
    with pytest.raises(BadSignature) as forged:
        crypto.verify(relabelled, chain_id=OTHER_CHAIN, expected_signer=alice.public_key)
    assert forged.value.reason == "bad_signature"


def test_a_ballot_signature_never_verifies_as_a_block_signature(alice: Identity) -> None:
    signed = crypto.sign(alice, a_ballot(alice.public_key), CHAIN)
    assert crypto.is_valid_signature(signed, BALLOT_DOMAIN)
    assert not crypto.is_valid_signature(signed, BLOCK_DOMAIN)
    header = BlockHeader(chain_id=CHAIN, height=1, prev_hash=fake_hash("p"), timestamp_ms=1,
                         proposer=alice.public_key, submissions_root=fake_hash("1"), ballots_root=fake_hash("2"),
                         fusion_root=fake_hash("5"), txs_root=fake_hash("3"), evidence_root=fake_hash("4"))
    grafted = Signed[BlockHeader](message=header, chain_id=CHAIN, signer=alice.public_key, signature=signed.signature)
    assert not crypto.is_valid_signature(grafted)


def test_tampered_message_and_wrong_signer_fail(alice: Identity) -> None:
    signed = crypto.sign(alice, a_ballot(alice.public_key), CHAIN)
    tampered = signed.model_copy(update={"message": signed.message.model_copy(update={"close_ms": 2})})
    with pytest.raises(BadSignature, match="does not verify"):
        crypto.verify(tampered, chain_id=CHAIN, expected_signer=alice.public_key)
    bob = Identity.from_seed("bob", b"bob")
    with pytest.raises(BadSignature, match="expected"):
        crypto.verify(signed, chain_id=CHAIN, expected_signer=bob.public_key)
    with pytest.raises(TypeError):  # the signer check cannot be skipped by leaving the signer out
        crypto.verify(signed, chain_id=CHAIN)  # type: ignore[call-arg]


def test_public_keys_must_be_points_on_the_curve() -> None:
    keys = [Identity.from_seed(f"k{i}", str(i).encode()).public_key for i in range(200)]
    assert all(crypto.is_public_key(k) for k in keys)
    # y = 2 gives x^2 = 3 / (4d + 1), a non-square mod p: no point has this encoding.
    off_curve = (2).to_bytes(32, "little").hex()
    assert not crypto.is_public_key(off_curve)
    assert not crypto.is_public_key(((1 << 255) | 1).to_bytes(32, "little").hex())  # x = 0 with the sign bit set
    assert not crypto.is_public_key((2**255 - 19).to_bytes(32, "little").hex())  # y >= p
    with pytest.raises(ValidationError, match="curve"):
        Allocation(account=off_curve, amount=1)


def test_no_wire_type_takes_nan_or_infinity() -> None:
    with pytest.raises(ConfigError, match="finite"):
        RetargetParams(target_interval_s=float("nan"), initial=1)
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValidationError):
            MinerStats(train_s=bad, epochs=1, hash_ms=0, sign_ms=0, put_ms=0, device="cpu")


def test_a_scalar_and_a_one_element_vector_hash_differently() -> None:
    assert crypto.hash_weights({"w": np.array(1.0, np.float32)}) != crypto.hash_weights({"w": np.array([1.0], np.float32)})


@pytest.mark.parametrize("array", [np.array([object()], dtype=object), np.zeros(2, dtype="V4")])
def test_tensors_without_canonical_bytes_are_refused(array: np.ndarray) -> None:
    with pytest.raises(InvalidModelFile) as refused:
        crypto.hash_weights({"w": array})
    assert refused.value.reason == "dtype"


def test_identity_hides_its_secret_and_pickles(alice: Identity) -> None:
    assert alice.secret_bytes().hex() not in repr(alice)
    assert pickle.loads(pickle.dumps(alice)) == alice


def test_derived_secrets_are_per_label_and_per_identity(alice: Identity) -> None:
    bob = Identity.from_seed("bob", b"bob")
    assert alice.derive("watermark") == alice.derive("watermark")
    assert alice.derive("watermark") != alice.derive("sml")
    assert alice.derive("watermark") != bob.derive("watermark")


def test_wrong_secret_size_is_a_key_error() -> None:
    with pytest.raises(KeyFileError, match="32"):
        Identity("x", b"short")


def test_canonical_bytes_sort_keys_and_refuse_nan() -> None:
    assert crypto.canonical_bytes({"b": 1, "a": [1, 2]}) == b'{"a":[1,2],"b":1}'
    with pytest.raises(ValueError):
        crypto.canonical_bytes({"x": float("nan")})


def test_commit_binds_model_miner_and_task() -> None:
    base = crypto.compute_commit("m", "k", "t")
    assert len({base, crypto.compute_commit("m2", "k", "t"), crypto.compute_commit("m", "k2", "t"),
                crypto.compute_commit("m", "k", "t2")}) == 4


# ------------------------------------------------------------------- weights


def weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"b.weight": rng.normal(size=(4, 3)).astype(np.float32), "a.bias": rng.normal(size=3).astype(np.float32)}


def test_weight_hash_ignores_insertion_order() -> None:
    w = weights()
    assert crypto.hash_weights(w) == crypto.hash_weights(dict(reversed(list(w.items()))))


@pytest.mark.parametrize("change", [
    lambda w: {**w, "a.bias": w["a.bias"].astype(np.float64)},  # dtype
    lambda w: {**w, "b.weight": w["b.weight"].reshape(3, 4)},  # shape
    lambda w: {"c.weight" if k == "b.weight" else k: v for k, v in w.items()},  # name
    lambda w: {**w, "a.bias": w["a.bias"] + np.float32(1e-7)},  # value
    lambda w: {**w, "extra": np.zeros(0, np.float32)},  # an empty extra tensor
])
def test_weight_hash_sees_dtype_shape_name_and_value(change) -> None:
    w = weights()
    assert crypto.hash_weights(change(w)) != crypto.hash_weights(w)


def test_chunked_hash_of_large_tensors_is_stable_and_sensitive() -> None:
    big = np.arange(3 * crypto.HASH_CHUNK_BYTES // 4 + 5, dtype=np.float32)
    w = {"x": big, "y": big[::-1].copy()}
    first = crypto.hash_weights(w)
    assert crypto.hash_weights({k: v.copy() for k, v in w.items()}) == first
    flipped = big.copy()
    flipped.view(np.uint8)[-1] ^= 1
    assert crypto.hash_weights({"x": flipped, "y": w["y"]}) != first


def test_non_contiguous_arrays_hash_like_their_contiguous_copy() -> None:
    a = np.arange(12, dtype=np.float32).reshape(3, 4).T
    assert crypto.hash_weights({"a": a}) == crypto.hash_weights({"a": np.ascontiguousarray(a)})


def test_merkle_root_is_order_sensitive_and_handles_odd_counts() -> None:
    leaves = [b"a", b"b", b"c"]
    assert crypto.merkle_root(leaves) != crypto.merkle_root(leaves[::-1])
    assert crypto.merkle_root(leaves) != crypto.merkle_root(leaves[:2])
    assert crypto.merkle_root([]) == crypto.sha256_hex(b"")
    assert crypto.merkle_root([b"a"]) != crypto.merkle_root([b"a", b"a"])


def test_a_message_that_arrives_unvalidated_is_reparsed_before_any_rule() -> None:
    """Ray unpickles models without validators: a NaN smuggled past them is caught by ``revalidated``."""
    from dlbc_ray.errors import InvalidMessage
    from dlbc_ray.schema.base import revalidated

    stats = MinerStats(train_s=1.0, epochs=1, hash_ms=0, sign_ms=0, put_ms=0, device="cpu")
    smuggled = pickle.loads(pickle.dumps(stats.model_copy(update={"train_s": float("nan")})))
    with pytest.raises(InvalidMessage) as refused:
        revalidated(smuggled)
    assert refused.value.reason == "malformed" and "train_s" in str(refused.value)
    assert revalidated(stats) == stats
