"""The ``spliced`` attack (issue 11's disputes): a transcript honest everywhere but in one segment.

The thief trains honestly from the derived initialisation; at checkpoint ``j + 1`` it swaps in
other weights (here: its own checkpoint with one layer reset, standing in for a stolen model
with the owner's marked layer reset), then trains on honestly from there, checkpoint to
checkpoint, with the validators' own replay (so every later segment replays bit for bit), and
settles its mark on the result. Only segment ``j`` fails to replay: a validator whose sample
misses it sees nothing wrong; one that samples it sees an exact mismatch and challenges.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from dlbc_ray.actors.miner import mine_round
from dlbc_ray.actors.round_parts import miner_policy
from dlbc_ray.errors import ConfigError
from dlbc_ray.models.data import Split
from dlbc_ray.models.protect import mark_secret
from dlbc_ray.models.replay import Secrets, derive_for, replay
from dlbc_ray.models.transcript import Checkpoint, CheckpointStore, Transcript
from dlbc_ray.schema import Signed, Task
from dlbc_ray.schema.round_messages import MinedSubmission, RoundContext

if TYPE_CHECKING:
    from dlbc_ray.actors.adversary import AdversaryMiner, MinerAttack

Weights = dict[str, np.ndarray]


def splice(miner: AdversaryMiner, a: MinerAttack, task: Signed[Task], data: Split,
           ctx: RoundContext) -> tuple[MinedSubmission, Weights, str]:
    """Submit a run whose segment ``a.segment`` (clamped to one before the last) was spliced."""
    spec = task.message
    honest, _ = mine_round(miner, spec, data, ctx)
    sub = honest.signed.message
    kept, seed = miner._transcripts.get(sub.commit), miner._sealed[sub.commit].seed
    if kept is None or len(kept.leaves) < 3:
        raise ConfigError("the spliced attack needs a run of at least 2 checkpoint segments", reason="spliced")
    j = max(0, min(a.segment, len(kept.leaves) - 3))  # never the last segment: every validator replays that one
    derived = derive_for(spec, ctx.task_id, ctx.round_id, data, sub,
                         Secrets(seed, mark_secret(miner.identity), miner.protection), miner_policy(miner.cfg))
    checkpoints = [kept.checkpoint(i) for i in range(j + 2)]
    if any(c is None for c in checkpoints):
        raise ConfigError("the run kept no checkpoint to splice", reason="spliced")
    chain: list[Checkpoint] = [c for c in checkpoints if c is not None]
    chain[-1] = Checkpoint(chain[-1].step, reset_one_layer(chain[-1].weights, derived.initial), chain[-1].optimizer)
    for leaf in kept.leaves[j + 2:]:  # trained on honestly from the swapped-in weights
        chain.append(replay(derived.make_system, derived.fit, kept.header, chain[-1], leaf.step))
    store = CheckpointStore()
    for c in chain:
        store.put(c)
    spliced = Transcript(kept.header, [c.leaf(i) for i, c in enumerate(chain)], store)
    weights = derived.finish(chain[-1].weights)
    mined = miner._submit(task, ctx, weights, seed, template=sub, transcript_root=spliced.root)
    miner._transcripts.put(mined.signed.message.commit, spliced)
    return mined, weights, f"segment {j} spliced (checkpoint {j + 1} swapped), trained honestly around it"


def reset_one_layer(weights: Weights, initial: Weights) -> Weights:
    """``weights`` with the first trained layer that moved from its initialisation put back to it."""
    name = next((k for k in weights if k in initial and weights[k].shape == initial[k].shape
                 and not np.array_equal(weights[k], initial[k])), None)
    if name is None:
        raise ConfigError("no trained layer to reset", reason="spliced")
    return {**weights, name: initial[name].copy()}
