"""A miner re-parses what any caller hands its entry points (Ray unpickles pydantic models without
validating them): a task signed over a ``model_construct``ed message that escapes a Field bound, a round
context or a window close out of bounds, are refused by name before any rule or any training runs."""

from __future__ import annotations

import pytest

from dlbc_ray import crypto
from dlbc_ray.actors.miner import Miner
from dlbc_ray.config import MINIMAL
from dlbc_ray.crypto import Identity
from dlbc_ray.errors import InvalidMessage
from dlbc_ray.models.data import load_builtin
from dlbc_ray.runtime.network import make_task
from dlbc_ray.schema import Task
from dlbc_ray.schema.round_messages import RoundContext, WindowClose
from tests.builders import T0, fake_hash, signed_round

REQUESTER, MINER, PROPOSER = (Identity.from_seed(n, n.encode()) for n in ("requester", "miner", "consensus"))
CHAIN = fake_hash("chain")


def _miner() -> Miner:
    return Miner(MINIMAL.miner, identity=MINER, protection=MINIMAL.protection, proposer=PROPOSER.public_key)


def _ctx(task_id: str, **changes: object) -> RoundContext:
    fields = dict(chain_id=CHAIN, round_id=fake_hash("round"), task_id=task_id, base_height=1, base_hash=fake_hash("h"),
                  eval_seed=0, submit_deadline_ms=T0 + 60_000) | changes
    return RoundContext.model_construct(**fields)


def test_a_task_escaping_its_bounds_is_refused_before_training() -> None:
    bundle = load_builtin("digits")
    honest = make_task(REQUESTER, MINIMAL.task, bundle, nonce=1, created_ms=T0, chain_id=CHAIN).message
    forever = Task.model_construct(**{**dict(honest), "max_epochs": 10**9})  # no validator ran: a stranger's task
    signed = crypto.sign(REQUESTER, forever, CHAIN)
    with pytest.raises(InvalidMessage, match="max_epochs"):
        _miner().mine(signed, bundle.train, signed_round(PROPOSER, _ctx(crypto.message_hash(forever))))


def test_a_round_context_out_of_bounds_is_refused() -> None:
    bundle = load_builtin("digits")
    task = make_task(REQUESTER, MINIMAL.task, bundle, nonce=2, created_ms=T0, chain_id=CHAIN)
    with pytest.raises(InvalidMessage):
        _miner().mine(task, bundle.train,
                      signed_round(PROPOSER, _ctx(crypto.message_hash(task.message), round_id="not a hash")))


@pytest.mark.parametrize("method", ["cancel", "reveal", "transcript_opening"])
def test_a_malformed_window_close_is_refused_by_every_entry_that_takes_one(method: str) -> None:
    close = WindowClose.model_construct(task_id="x", round_id=fake_hash("r"), closed_ms=-1, opens=(), final=True)
    signed = crypto.sign(PROPOSER, close, CHAIN)
    args = {"cancel": (signed,), "reveal": (signed, fake_hash("c")), "transcript_opening": (signed, fake_hash("c"), 0)}
    with pytest.raises(InvalidMessage):
        getattr(_miner(), method)(*args[method])
