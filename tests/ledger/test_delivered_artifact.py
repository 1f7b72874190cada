"""The ledger keeps the model a block delivers only once the block validated (persist only after validation).

Before, the consensus actor stored the winner's weights with a separate ``store_artifact`` call ahead of the
import, and any caller could write weights into the store by that method. Now the weights travel with
``import_block`` and are written between validation and the block's own commit, under the block's model hash.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dlbc_ray import crypto
from dlbc_ray.actors.ledger import Ledger
from dlbc_ray.consensus import propose_task_block, propose_tx_block
from dlbc_ray.errors import InvalidBlock, InvalidModelFile
from dlbc_ray.schema import Block, PostTaskTx
from tests.builders import World, resign

WEIGHTS = {"fc.weight": np.arange(6, dtype=np.float32).reshape(2, 3), "fc.bias": np.ones(2, np.float32)}
MODEL = crypto.hash_weights(WEIGHTS)


def posted(tmp_path: Path) -> tuple[World, Ledger, Block, Block]:
    """A ledger holding a posted task, the posting block, and the task's block that delivers ``WEIGHTS``."""
    world = World()
    ledger = Ledger(str(tmp_path / "ledger.sqlite"), genesis=world.genesis)
    task = world.task()
    post = propose_tx_block(world.state, [PostTaskTx(task=task)], world.proposer, world.state.timestamp_ms + 1)
    ledger.import_block(post)
    world.apply(post)
    sub = world.submission(world.miners[0], task, model_hash=MODEL)
    when = world.state.timestamp_ms + 1000
    ballots = [world.ballot(v, [sub], [9000], close_ms=when - 1) for v in world.validators]
    task_id = crypto.message_hash(task.message)
    block, _ = propose_task_block(world.state, task, [sub], ballots, world.proposer, when, world.round_id(task_id))
    assert block.header.model_hash == MODEL
    return world, ledger, post, block


def test_a_valid_block_keeps_the_model_it_delivers(tmp_path: Path) -> None:
    _, ledger, _, block = posted(tmp_path)
    ledger.import_block(block, WEIGHTS, {"miner": "m"})
    weights, metadata = ledger.artifact(MODEL)  # type: ignore[misc]
    assert crypto.hash_weights(weights) == MODEL and metadata == {"miner": "m"}
    again = ledger.import_block(block, WEIGHTS, {"miner": "m"})  # a retry after a lost reply: the same answer
    assert again.height == block.height == ledger.head()["height"]


def test_a_refused_block_keeps_nothing(tmp_path: Path) -> None:
    world, ledger, _, block = posted(tmp_path)
    forged = resign(block, world.proposer, score=1)  # the proposer's own signature, one rule broken
    with pytest.raises(InvalidBlock):
        ledger.import_block(forged, WEIGHTS, {})
    assert ledger.artifact(MODEL) is None and not ledger.artifacts.has(MODEL)
    assert ledger.head()["height"] == block.height - 1


@pytest.mark.parametrize("weights, metadata, error", [
    ({"fc.weight": np.zeros(3, np.float32)}, {}, InvalidModelFile),  # other weights than the block names
    ({1: np.zeros(3, np.float32)}, {}, InvalidBlock),  # not named tensors
    ({"fc.weight": "text"}, {}, InvalidBlock),
    ("not weights", {}, InvalidBlock),
    (WEIGHTS, {"miner": 7}, InvalidBlock),  # metadata that is not text
    (WEIGHTS, {"k" * 65: "v"}, InvalidBlock),
    (WEIGHTS, ["miner"], InvalidBlock),
])
def test_odd_delivered_weights_are_refused_and_the_block_is_not_written(tmp_path: Path, weights: object,
                                                                       metadata: object, error: type) -> None:
    _, ledger, _, block = posted(tmp_path)
    with pytest.raises(error):
        ledger.import_block(block, weights, metadata)  # type: ignore[arg-type]
    assert ledger.head()["height"] == block.height - 1 and ledger.artifact(MODEL) is None
    ledger.import_block(block, WEIGHTS, {})  # the same block with its own model is still welcome
    assert ledger.head()["height"] == block.height and ledger.artifact(MODEL) is not None


def test_a_block_that_delivers_no_model_takes_none(tmp_path: Path) -> None:
    world, ledger, post, _ = posted(tmp_path)
    another = propose_tx_block(world.state, [PostTaskTx(task=world.task())], world.proposer,
                               world.state.timestamp_ms + 1)
    with pytest.raises(InvalidBlock) as refused:
        ledger.import_block(another, WEIGHTS, {})
    assert refused.value.reason == "artifact" and ledger.head()["height"] == post.height


def test_no_ledger_method_writes_weights_without_a_block() -> None:
    assert not hasattr(Ledger, "store_artifact")
    assert not any(name for name in vars(Ledger) if "keep" in name)  # keep_delivered is a module function
