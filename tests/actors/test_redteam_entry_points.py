"""What a miner's or validator's entry point does with odd arguments from any caller (issue 10: inputs).

Ray unpickles arguments without running pydantic, so each entry re-parses what it is handed as the
type it declares (actors/inbound.py). Anything odd is one project error (InvalidMessage, or
RoundRefused / BadSignature for a round or task nobody signed), raised before the actor changes any
state: never a traceback from deep inside, never a half-registered round. Tried in-process with
Hypothesis, then once through a real Ray actor boundary.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ConfigDict

from dlbc_ray import crypto
from dlbc_ray.actors import inbound
from dlbc_ray.actors.miner import Miner
from dlbc_ray.actors.validator import Validator
from dlbc_ray.config import MINIMAL, ValidatorConfig
from dlbc_ray.crypto import Identity
from dlbc_ray.errors import DLBCError, InvalidMessage
from dlbc_ray.models.data import Split, load_builtin
from dlbc_ray.models.nets import build_net
from dlbc_ray.models.protect import mark_secret
from dlbc_ray.models.weights import to_numpy
from dlbc_ray.runtime.network import make_task
from dlbc_ray.schema import Signed, Submission, Task
from dlbc_ray.schema.round_messages import RoundContext, SubmissionArrival, WindowClose
from tests.builders import T0, fake_hash, signed_round

REQUESTER, MINER, PROPOSER = (Identity.from_seed(n, n.encode()) for n in ("requester", "miner", "consensus"))
CHAIN = fake_hash("chain")
BUNDLE = load_builtin("digits")
TASK = make_task(REQUESTER, MINIMAL.task, BUNDLE, nonce=1, created_ms=T0, chain_id=CHAIN)
CTX = RoundContext(chain_id=CHAIN, round_id=fake_hash("round"), task_id=crypto.message_hash(TASK.message),
                   base_height=1, base_hash=fake_hash("head"), eval_seed=0, submit_deadline_ms=T0 + 60_000)
SIGNED = signed_round(PROPOSER, CTX)


def untrained_arrival() -> tuple[SubmissionArrival, dict[str, np.ndarray]]:
    """A well-formed submission of untrained (unmarked) weights: judged in milliseconds (stolen: no own mark)."""
    spec = TASK.message
    weights = to_numpy(build_net(spec.model.name, spec.model.params, spec.dataset.input_shape, spec.dataset.n_classes))
    model_hash = crypto.hash_weights(weights)
    sub = Submission(task_id=CTX.task_id, miner=MINER.public_key, model_hash=model_hash,
                     commit=crypto.compute_commit(model_hash, MINER.public_key, CTX.task_id),
                     num_params=sum(int(w.size) for w in weights.values()), claimed_score=0, epochs=1, train_ms=1,
                     examples=len(BUNDLE.train.y))
    return SubmissionArrival(signed=crypto.sign(MINER, sub, CHAIN), arrived_ms=T0 + 1), weights


ARRIVAL, WEIGHTS = untrained_arrival()


class Loose(RoundContext):
    """A caller's own subclass: parsed as its own type it would take any extra field."""

    model_config = ConfigDict(frozen=True, extra="allow")


def constructed(model: Any, **bad: object) -> Any:
    """``model`` with fields no validator would let through (what an unpickled message may hold)."""
    return type(model).model_construct(**{**dict(model), **bad})


garbage = st.one_of(
    st.none(), st.integers(), st.floats(), st.text(max_size=20), st.binary(max_size=20),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    st.sampled_from([
        TASK.message, CTX, SIGNED.message, BUNDLE.train, TASK, SIGNED,
        constructed(CTX, round_id="not a hash"), constructed(CTX, base_height=-1), constructed(CTX, shards=7),
        SIGNED.model_copy(update={"message": constructed(CTX, eval_seed=float("nan"))}),
        TASK.model_copy(update={"message": constructed(TASK.message, max_epochs=10**9)}),
        Loose(**dict(CTX), evil=1), crypto.sign(PROPOSER, Loose(**dict(CTX), evil=1), CHAIN),
        Split.__new__(Split), object(), np.zeros(3),
    ]),
)


def validator() -> Validator:
    return Validator(ValidatorConfig(), identity=Identity.from_seed("v", b"v"), protection=MINIMAL.protection,
                     marks={MINER.public_key: mark_secret(MINER)}, proposer=PROPOSER.public_key)


@pytest.fixture(scope="module")
def actors() -> tuple[Miner, Validator]:
    return Miner(MINIMAL.miner, identity=MINER, protection=MINIMAL.protection, proposer=PROPOSER.public_key), validator()


def refused_cleanly(call: Any) -> DLBCError:
    with pytest.raises(DLBCError) as e:
        call()
    assert "\n" not in str(e.value) and len(str(e.value)) <= 300
    return e.value


MINE = {"task": 0, "data": 1, "ctx": 2}
VALIDATE = {"task": 0, "test": 1, "arrivals": 2, "weight_refs": 3, "ctx": 4, "won_models": 5, "audits": 7}


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(sorted(MINE)), garbage)
def test_mine_refuses_odd_arguments_before_it_trains(actors: tuple[Miner, Validator], slot: str, odd: object) -> None:
    miner, _ = actors
    args: list[Any] = [TASK, BUNDLE.train, SIGNED]
    if slot == "task" and odd is TASK or slot == "ctx" and odd is SIGNED or slot == "data" and odd is BUNDLE.train:
        return  # the honest argument itself: that would train
    args[MINE[slot]] = odd
    refused_cleanly(lambda: miner.mine(*args))
    assert not miner._rounds and not miner._sealed  # nothing half-registered


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(sorted(VALIDATE)), garbage)
def test_validate_and_fuse_refuse_odd_arguments(actors: tuple[Miner, Validator], slot: str, odd: object) -> None:
    _, judge = actors
    args: list[Any] = [TASK, BUNDLE.test, [ARRIVAL], [WEIGHTS], SIGNED, frozenset(), None, None]
    args[VALIDATE[slot]] = odd
    try:
        reply = judge.validate(*args)
    except DLBCError as e:
        assert "\n" not in str(e) and len(str(e)) <= 300
    else:  # only an argument as good as the honest one gets a ballot: one vote, for the one submission
        assert [v.commit for v in reply.ballots[0].message.votes] == [ARRIVAL.signed.message.commit]
    if VALIDATE[slot] < 5:
        args[2:4] = [[ARRIVAL, ARRIVAL], [WEIGHTS, WEIGHTS]] if slot not in ("arrivals", "weight_refs") else args[2:4]
        refused_cleanly(lambda: judge.fuse(*args[:5]))  # a fusion of one model twice, or of odd input


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(["cancel", "reveal", "transcript_opening"]), st.integers(0, 2), garbage)
def test_the_miners_sealed_methods_refuse_odd_arguments(actors: tuple[Miner, Validator], method: str, slot: int,
                                                       odd: object) -> None:
    miner, _ = actors
    close = crypto.sign(PROPOSER, WindowClose(task_id=CTX.task_id, round_id=CTX.round_id, closed_ms=T0), CHAIN)
    args: list[Any] = [close, "ab" * 32, 0][: {"cancel": 1, "reveal": 2, "transcript_opening": 3}[method]]
    args[min(slot, len(args) - 1)] = odd
    refused_cleanly(lambda: getattr(miner, method)(*args))


def test_a_callers_subclass_is_parsed_as_the_declared_type() -> None:
    """schema.base.revalidated re-parses with type(value): a caller's lax subclass would keep its extra field."""
    with pytest.raises(InvalidMessage, match="evil"):
        inbound.wire(RoundContext, Loose(**dict(CTX), evil=1), "ctx")
    parsed = inbound.wire(Signed[RoundContext], SIGNED, "ctx")
    assert type(parsed.message) is RoundContext and parsed == SIGNED


def test_a_split_whose_arrays_were_swapped_after_construction_is_refused() -> None:
    broken = Split.__new__(Split)
    object.__setattr__(broken, "x", np.array(["a", "b"]))
    object.__setattr__(broken, "y", np.zeros(3))
    with pytest.raises(InvalidMessage, match="test"):
        inbound.split(broken, "test")


def test_weight_refs_must_pair_with_submissions() -> None:
    with pytest.raises(InvalidMessage, match="one per submission"):
        inbound.refs([1, 2], "weight_refs", 1)


@pytest.mark.usefixtures("ray_session")
def test_odd_arguments_through_ray_are_one_named_error_and_the_actor_lives_on() -> None:
    from dlbc_ray.actors._ray import get
    from dlbc_ray.actors.spawn import spawn_validator

    member = spawn_validator(MINIMAL.validator, Identity.from_seed("rv", b"rv"), MINIMAL.protection,
                             marks={MINER.public_key: mark_secret(MINER)}, proposer=PROPOSER.public_key)
    handle = member.handle
    self_signed = crypto.sign(REQUESTER, CTX, CHAIN)
    one, weights = [ARRIVAL], [WEIGHTS]
    for args in ([TASK, BUNDLE.test, one, weights, CTX], [TASK, BUNDLE.test, one, weights, self_signed],
                 [TASK, BUNDLE.test, "junk", weights, SIGNED], [TASK, 7, one, weights, SIGNED],
                 [TASK, BUNDLE.test, one, [], SIGNED], [TASK.message, BUNDLE.test, one, weights, SIGNED]):
        with pytest.raises(InvalidMessage):  # RoundRefused is one too
            get(handle.validate.remote(*args), timeout=120, what="validator")
    reply = get(handle.validate.remote(TASK, BUNDLE.test, one, weights, SIGNED), timeout=120, what="validator")
    assert reply.ballots[0].message.round_id == CTX.round_id  # the actor lives on and judges the proposer's round
