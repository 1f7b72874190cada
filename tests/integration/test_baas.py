"""BaaS on a real network: private non-IID shards, validators fuse, contributors are paid by what they added."""

from __future__ import annotations

import time

import pytest

from dlbc_ray.runtime import client
from dlbc_ray import crypto
from dlbc_ray.ledger import Chain, load_safetensors, verify_chain
from dlbc_ray.runtime.network import make_task, run_round
from dlbc_ray.schema import PayoutTx

pytestmark = pytest.mark.ray


def fusion_task(live, rule: str):
    base = make_task(live.net.identities.requester, live.cfg.task.model_copy(update={"epochs": 3, "target": 0.3}),
                     live.bundle, nonce=time.time_ns(), created_ms=time.time_ns() // 10**6,
                     chain_id=live.net.chain_id).message
    dataset = base.dataset.model_copy(update={"partition": "non-iid", "dirichlet_alpha": 0.5})
    return crypto.sign(live.net.identities.requester, base.model_copy(update={"dataset": dataset, "fusion": rule}),
                       live.net.chain_id)


def test_an_ensemble_of_private_shards_is_delivered_and_its_contributors_paid(live, tmp_path) -> None:
    task = fusion_task(live, "ensemble")
    report = run_round(live.net, task, live.data, timeout_s=600)
    assert report.committed, report.failure
    block = Chain.open(live.home.ledger, create=False).block(report.height)
    votes = [v.message for v in block.fusion_votes]
    assert len(votes) >= 3 and len({v.fused_hash for v in votes}) == 1  # validators fused the same bytes
    assert len(votes[0].contributors) == 3
    assert block.header.fused and block.header.winner is None and block.header.model_hash == votes[0].fused_hash
    payouts = [tx for tx in block.txs if isinstance(tx, PayoutTx)]
    contributors = {tx.recipient for tx in payouts if tx.role == "contributor"}
    assert contributors and contributors <= {m.public_key for m in live.net.miners}
    assert sum(tx.amount for tx in payouts) == task.message.reward
    # what the requester gets is the fused model, scoring what validators measured, on raw inputs
    info = client.result(live.home, block.header.task_id or "", output=tmp_path / "ensemble.safetensors")
    from dlbc_ray.models import fusion
    from dlbc_ray.models.evaluate import evaluate
    from dlbc_ray.models.nets import build_net

    net = fusion.fused_net("ensemble", lambda: build_net("mlp", {}, (1, 8, 8), 10), 3)
    accuracy = evaluate(net, load_safetensors(tmp_path / "ensemble.safetensors"), live.bundle.test)
    assert abs(accuracy - info["score"]) < 1e-4
    assert verify_chain(live.home.ledger).height >= report.height
