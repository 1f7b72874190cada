"""PoLe's standing task: what it trains, the treasury's signed task at the chain's difficulty, and its data."""

from __future__ import annotations

import time
from dataclasses import dataclass

import ray

from dlbc_ray import crypto
from dlbc_ray.actors import pool as task_pool
from dlbc_ray.actors.round_runner import TaskData
from dlbc_ray.consensus import ChainState
from dlbc_ray.consensus.validation import expected_standing_target
from dlbc_ray.crypto import Identity
from dlbc_ray.schema import DatasetSpec, ModelSpec, Signed, Task


@dataclass(frozen=True)
class StandingTemplate:
    """What PoLe's standing task trains: a registry model on a built-in dataset."""

    model: ModelSpec
    dataset: DatasetSpec
    max_epochs: int


def make_standing_task(treasury: Identity, template: StandingTemplate, state: ChainState, now_ms: int,
                       window_ms: int) -> Signed[Task]:
    """The treasury's task for the next standing block: the chain's difficulty, its block reward, one window."""
    task = Task(requester=treasury.public_key, nonce=time.time_ns(), model=template.model, dataset=template.dataset,
                target=expected_standing_target(state), reward=state.params.block_reward,
                deadline_ms=now_ms + window_ms, max_epochs=template.max_epochs, kind="standing", created_ms=now_ms)
    return crypto.sign(treasury, task, state.chain_id)


def load_standing_data(template: StandingTemplate) -> TaskData:
    """The standing task's data from the built-in set it names, checked against its spec, in the object store."""
    from dlbc_ray.models.data import load_builtin

    bundle = load_builtin(template.dataset.name)
    task_pool.check_data(template.dataset, bundle.train, bundle.test)
    return TaskData(ray.put(bundle.train), ray.put(bundle.test))
