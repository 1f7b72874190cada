"""`dlbc-ray result` and the explorer export the winner's model with the mapping seed the winner committed
to, never whatever seed the artifact's metadata names (anyone can call the ledger's store first)."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from dlbc_ray import crypto
from dlbc_ray.runtime.client import export_model
from dlbc_ray.errors import InvalidModelFile
from dlbc_ray.runtime.home import Home
from dlbc_ray.ledger import ArtifactStore, Chain, load_safetensors
from dlbc_ray.models import sml
from dlbc_ray.models.nets import build_net
from dlbc_ray.models.weights import to_numpy
from tests.builders import World


@pytest.fixture
def delivered(tmp_path: Path) -> tuple[Home, World, object, str, bytes]:
    """A home whose chain delivered a real mlp's weights, committed to with a mapping seed."""
    world = World()
    task = world.task()
    weights = to_numpy(build_net("mlp", {}, (1, 8, 8), 10, seed=0))
    model_hash = crypto.hash_weights(weights)
    seed = secrets.token_bytes(32)
    subs = []
    for i, miner in enumerate(world.miners):
        sub = world.submission(miner, task, label=str(i), model_hash=model_hash if i == 0 else None)
        subs.append(world.sign(miner, sub.message.model_copy(update={"sml_commitment": sml.seed_commitment(seed)})))
    from dlbc_ray.consensus import propose_task_block

    ballots = [world.ballot(v, subs, [9000 - 100 * k for k in range(len(subs))], close_ms=world.state.timestamp_ms + 1)
               for v in world.validators]
    block, decision = propose_task_block(world.state, task, subs, ballots, world.proposer, world.state.timestamp_ms + 5,
                                         world.round_id(crypto.message_hash(task.message)))
    assert decision.winner is not None and decision.winner.model_hash == model_hash
    home = Home(tmp_path / "home")
    home.root.mkdir(parents=True)
    chain = Chain.open(home.ledger)
    chain.import_block(world.genesis)
    chain.import_block(block)
    chain.close()
    return home, world, task, model_hash, seed  # type: ignore[return-value]


def _store(home: Home, model_hash: str, meta: dict[str, str]) -> None:
    weights = to_numpy(build_net("mlp", {}, (1, 8, 8), 10, seed=0))
    ArtifactStore(home.artifacts).put(weights, model_hash, metadata={"task_id": "x", **meta})


def test_the_committed_seed_is_folded_in(delivered: tuple, tmp_path: Path) -> None:
    home, _, task, model_hash, seed = delivered
    _store(home, model_hash, {"sml_seed": seed.hex()})
    out = export_model(home, task.message, model_hash, tmp_path / "m.safetensors")
    assert load_safetensors(out)  # folded and written


@pytest.mark.parametrize("meta", [{}, {"sml_seed": "00" * 32}, {"sml_seed": "not hex"}])
def test_a_seed_the_winner_never_committed_to_is_refused(delivered: tuple, tmp_path: Path,
                                                         meta: dict[str, str]) -> None:
    home, _, task, model_hash, _ = delivered
    _store(home, model_hash, meta)  # an adversary stored the winner's weights first, with its own metadata
    with pytest.raises(InvalidModelFile) as info:
        export_model(home, task.message, model_hash, tmp_path / "m.safetensors")
    assert info.value.reason == "seed_mismatch" and not (tmp_path / "m.safetensors").exists()


def test_a_model_the_task_never_delivered_is_refused(delivered: tuple, tmp_path: Path) -> None:
    home, world, _, model_hash, seed = delivered
    _store(home, model_hash, {"sml_seed": seed.hex()})
    with pytest.raises(InvalidModelFile) as info:
        export_model(home, world.task().message, model_hash, tmp_path / "m.safetensors")
    assert info.value.reason == "not_delivered"
