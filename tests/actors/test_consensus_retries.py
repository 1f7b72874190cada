"""A client's retry after a lost reply: the same signed transfer is answered with its block, never sent twice."""

from __future__ import annotations

import pytest

from dlbc_ray import crypto
from dlbc_ray.errors import ActorUnavailable, InvalidBlock
from dlbc_ray.schema import Transfer, TransferTx
from tests.actors.test_consensus_settlement import Rig, digits, no_ray, rig  # noqa: F401 - fixtures


def _transfer(rig: Rig, amount: int, nonce: int) -> object:
    w = rig.world
    return crypto.sign(w.requester, Transfer(sender=w.requester.public_key, recipient=w.miners[0].public_key,
                                             amount=amount, nonce=nonce), rig.state.chain_id)


def _sent(rig: Rig) -> int:
    return sum(1 for b in rig.ledger.actor.blocks() for tx in b.txs if isinstance(tx, TransferTx))


def test_a_retried_transfer_returns_its_block_and_moves_money_once(rig: Rig) -> None:
    c = rig.consensus()
    signed = _transfer(rig, 7, 0)
    before = rig.state.balance(rig.world.miners[0].public_key)
    rig.ledger.lose = {"import_block": 100}  # committed, but every answer is lost: the client sees a failure
    with pytest.raises(ActorUnavailable):
        c.submit_transfer(signed)  # type: ignore[arg-type]
    rig.ledger.lose = {}
    again = c.submit_transfer(signed)  # type: ignore[arg-type]
    assert again["height"] == rig.state.height and _sent(rig) == 1
    assert rig.state.balance(rig.world.miners[0].public_key) == before + 7


def test_another_transfer_reusing_a_spent_nonce_is_still_refused(rig: Rig) -> None:
    c = rig.consensus()
    c.submit_transfer(_transfer(rig, 7, 0))  # type: ignore[arg-type]
    with pytest.raises(InvalidBlock) as info:
        c.submit_transfer(_transfer(rig, 8, 0))  # type: ignore[arg-type]
    assert info.value.reason == "nonce" and _sent(rig) == 1


@pytest.mark.parametrize("metric", ["no-such-metric", "mse"])
def test_a_task_whose_metric_no_validator_can_score_is_not_escrowed(rig: Rig, metric: str) -> None:
    from dlbc_ray.errors import InvalidTask

    c = rig.consensus()
    task = rig.task()
    odd = crypto.sign(rig.world.requester, task.message.model_copy(update={"metric": metric}), rig.state.chain_id)
    height = rig.state.height
    with pytest.raises(InvalidTask) as info:
        c.submit_task(odd, rig.digits.train, rig.digits.test)
    assert info.value.reason in ("unknown_metric", "bad_metric") and rig.state.height == height
