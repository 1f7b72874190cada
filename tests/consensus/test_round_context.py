"""The proposer's signed round (consensus.round_context), on its own: known-good and known-bad contexts.

Miners train, and validators read marks and score, only for a round this rule admits; each way to
fail has its own reason ("round_chain", "round_signer", "round_signature", "round_task").
"""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlbc_ray import crypto
from dlbc_ray.consensus.round_context import check_round_context, find_round_fault
from dlbc_ray.crypto import Identity
from dlbc_ray.errors import InvalidMessage, RoundRefused
from dlbc_ray.schema.round_messages import RoundContext
from tests.builders import T0, fake_hash, signed_round

PROPOSER, STRANGER = Identity.from_seed("consensus", b"consensus"), Identity.from_seed("thief", b"thief")
CHAIN, TASK = fake_hash("chain"), fake_hash("task")
hashes = st.binary(min_size=32, max_size=32).map(bytes.hex)


def context(**changes: object) -> RoundContext:
    fields = dict(chain_id=CHAIN, round_id=fake_hash("round"), task_id=TASK, base_height=3, base_hash=fake_hash("head"),
                  eval_seed=7, submit_deadline_ms=T0 + 60_000, shards={PROPOSER.public_key: (0, 10)})
    return RoundContext(**(fields | changes))


def refused(signed: object, task_id: str = TASK) -> str:
    with pytest.raises(RoundRefused) as e:
        check_round_context(signed, task_id, PROPOSER.public_key)  # type: ignore[arg-type]
    assert isinstance(e.value, InvalidMessage) and len(str(e.value)) < 200
    return e.value.reason


def test_the_proposers_round_of_the_task_is_admitted() -> None:
    ctx = context()
    assert check_round_context(signed_round(PROPOSER, ctx), TASK, PROPOSER.public_key) == ctx


def test_a_round_signed_by_anyone_else_is_refused() -> None:
    assert refused(crypto.sign(STRANGER, context(), CHAIN)) == "round_signer"


def test_a_stranger_claiming_the_proposers_key_is_refused() -> None:
    forged = crypto.sign(STRANGER, context(), CHAIN).model_copy(update={"signer": PROPOSER.public_key})
    assert refused(forged) == "round_signature"


def test_a_round_signed_for_another_chain_is_refused() -> None:
    assert refused(crypto.sign(PROPOSER, context(), fake_hash("another chain"))) == "round_chain"


def test_a_round_naming_another_chain_than_it_is_signed_for_is_refused() -> None:
    assert refused(crypto.sign(PROPOSER, context(chain_id=fake_hash("another chain")), CHAIN)) == "round_chain"


def test_the_proposers_round_of_another_chain_is_refused_where_the_network_knows_its_own() -> None:
    """The same keys run two chains (a demo home made anew keeps its keys): a round the proposer signed,
    consistently, for the other chain passes every check but the network's own chain id."""
    elsewhere = signed_round(PROPOSER, context(chain_id=fake_hash("another chain")))
    assert find_round_fault(elsewhere, TASK, PROPOSER.public_key) is None  # self-consistent
    with pytest.raises(RoundRefused) as e:
        check_round_context(elsewhere, TASK, PROPOSER.public_key, CHAIN)
    assert e.value.reason == "round_chain" and "this network's" in str(e.value)
    assert check_round_context(signed_round(PROPOSER, context()), TASK, PROPOSER.public_key, CHAIN) == context()


def test_the_proposers_round_of_another_task_is_refused() -> None:
    """A thief replays the real round's context with its own task: the round is of another task."""
    assert refused(signed_round(PROPOSER, context()), task_id=fake_hash("the thief's own task")) == "round_task"


def test_the_refusal_pickles_with_its_reason() -> None:
    error = RoundRefused("round context signed by someone else", reason="round_signer")
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is RoundRefused and again.reason == "round_signer"


ALTERED = {
    "round_id": hashes, "task_id": hashes, "base_hash": hashes, "chain_id": hashes,
    "base_height": st.integers(0, 2**31), "eval_seed": st.integers(0, 2**31),
    "submit_deadline_ms": st.integers(0, 2**40),
    "shards": st.dictionaries(st.sampled_from([PROPOSER.public_key, STRANGER.public_key]),
                              st.tuples(st.integers(0, 9), st.integers(0, 999)), max_size=2),
}


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(sorted(ALTERED)).flatmap(lambda f: st.tuples(st.just(f), ALTERED[f])))
def test_any_field_altered_after_signing_is_refused(change: tuple[str, object]) -> None:
    """One field changed after the proposer signed: refused (its chain, when the chain is what changed), unless the
    change is no change at all."""
    field, value = change
    signed = signed_round(PROPOSER, context())
    altered = signed.model_copy(update={"message": signed.message.model_copy(update={field: value})})
    if getattr(signed.message, field) == value:
        assert find_round_fault(altered, TASK, PROPOSER.public_key) is None
        return
    assert refused(altered, task_id=altered.message.task_id) == ("round_chain" if field == "chain_id"
                                                                  else "round_signature")


@settings(max_examples=30, deadline=None)
@given(round_id=hashes, task_id=hashes, height=st.integers(0, 2**31), deadline=st.integers(0, 2**40))
def test_every_round_the_proposer_signs_is_admitted_for_its_own_task_only(round_id: str, task_id: str, height: int,
                                                                          deadline: int) -> None:
    ctx = context(round_id=round_id, task_id=task_id, base_height=height, submit_deadline_ms=deadline)
    signed = signed_round(PROPOSER, ctx)
    assert check_round_context(signed, task_id, PROPOSER.public_key) == ctx
    assert refused(signed, task_id=fake_hash(task_id)) == "round_task"
