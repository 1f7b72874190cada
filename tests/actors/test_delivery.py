"""BaaS delivery: the coordinator stores the fused model the block's fusion votes agreed on, taken from a validator
that voted for that hash and checked by hash; it never fuses (or builds a net) itself."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from dlbc_ray import crypto
from dlbc_ray.actors.delivery import fused_artifact
from dlbc_ray.actors.round_runner import RoundResult
from dlbc_ray.consensus import propose_task_block
from dlbc_ray.errors import ActorUnavailable, ConsensusError
from dlbc_ray.schema import Block, FusionVote, Task, Verdict
from dlbc_ray.schema.round_messages import RoundContext, SubmissionArrival
from tests.builders import T0, World, fake_hash

# Not any net's weights: nothing here could be fused or loaded, so a delivery that recomputed would fail.
FUSED = {"anything": np.arange(6, dtype=np.float32).reshape(2, 3), "count": np.int64(3)}
FUSED_HASH = crypto.hash_weights(FUSED)


def fused_block(world: World, hashes: list[str]) -> tuple[Task, Block, RoundResult]:
    """A fused block whose validator j voted for ``hashes[j]`` (a quorum for FUSED_HASH), and its round."""
    task = world.task(fusion="fedavg")
    task_id = crypto.message_hash(task.message)
    subs = [world.submission(world.miners[i], task) for i in range(3)]
    ballots = [world.ballot(v, subs, [8_000, 7_500, 7_000], [Verdict.VALID] * 3) for v in world.validators]
    votes = [world.sign(v, FusionVote(task_id=task_id, round_id=world.round_id(task_id), validator=v.public_key,
                                      rule="fedavg", contributors=tuple(s.message.commit for s in subs),
                                      fused_hash=h, score=9_000, without=(8_000, 8_000, 8_000)))
             for v, h in zip(world.validators, hashes)]
    block, _ = propose_task_block(world.state, task, subs, ballots, world.proposer, T0 + 1_000, world.round_id(task_id),
                                  votes)
    ctx = RoundContext(chain_id=world.chain_id, round_id=world.round_id(task_id), task_id=task_id, base_height=0,
                       base_hash=fake_hash("base"), eval_seed=0, submit_deadline_ms=T0 + 500)
    arrivals = [SubmissionArrival(signed=s, arrived_ms=T0 + i) for i, s in enumerate(subs)]
    return task.message, block, RoundResult(ctx, arrivals, ballots, {}, [], {}, votes,
                              {v.public_key: f"ref-{j}" for j, v in enumerate(world.validators)})


def test_the_agreed_fusion_is_delivered_from_a_validator_that_voted_for_it() -> None:
    world = World()
    task, block, result = fused_block(world, [fake_hash("a liar's fusion")] + [FUSED_HASH] * 3)
    assert block.header.fused and block.header.model_hash == FUSED_HASH
    store = {"ref-0": {"w": np.zeros(2, np.float32)}, "ref-1": FUSED, "ref-2": FUSED, "ref-3": FUSED}
    fetched: list[str] = []

    def fetch(ref: Any) -> Any:
        fetched.append(ref)
        return store[ref]

    weights, model_hash, metadata = fused_artifact(task, block, result, fetch)
    assert model_hash == FUSED_HASH and crypto.hash_weights(weights) == FUSED_HASH
    assert "ref-0" not in fetched  # a validator that voted for another hash is never asked
    assert metadata["members"] == "3" and metadata["fusion"] == "fedavg"


@pytest.mark.parametrize("failure", ["altered", "unavailable", "missing", "junk keys", "junk values"])
def test_a_bad_copy_is_passed_over_and_the_next_voter_delivers(failure: str) -> None:
    world = World()
    task, block, result = fused_block(world, [FUSED_HASH] * 4)
    altered = {k: v + 1 for k, v in FUSED.items()}

    def fetch(ref: Any) -> Any:
        if ref == "ref-0":
            if failure == "unavailable":
                raise ActorUnavailable("validator-0 died", reason="actor_died")
            return {"altered": altered, "junk keys": {1: np.ones(1), "w": np.ones(1)},
                    "junk values": {"w": object()}}.get(failure)  # a lying validator hands anything back
        return FUSED

    weights, model_hash, _ = fused_artifact(task, block, result, fetch)
    assert crypto.hash_weights(weights) == model_hash == FUSED_HASH


def test_without_any_good_copy_the_delivery_fails_by_name() -> None:
    world = World()
    task, block, result = fused_block(world, [FUSED_HASH] * 4)
    with pytest.raises(ConsensusError) as info:
        fused_artifact(task, block, result, lambda ref: {"w": np.ones(1, np.float32)})
    assert info.value.reason == "delivery"
