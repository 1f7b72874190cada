"""The adversary's reuse plays: an earlier winner sent again, disguised, partly retrained, or distilled.

Module functions with the adversarial miner as their first argument (``PLAYS`` in ``actors.adversary``
maps kinds to them), split from the adversary by what they do: each starts from an earlier winner's
weights and revealed mapping seed (what anyone holds once a block delivers a model) and makes a
submission of its own from it. A cheater runs its own code, so these call the miner's internals directly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from dlbc_ray import crypto
from dlbc_ray.actors.miner import Miner, own_marks, settled, train_round, training_seed
from dlbc_ray.models import sml, watermark
from dlbc_ray.models.data import Split
from dlbc_ray.models.disguise import (embed_mark, host_prefix, kill_units, permute_and_rescale, prune, remap,
                                     reset_layer, teacher_labels)
from dlbc_ray.models.nets import build_task_net, net_info
from dlbc_ray.models.protect import mapping_layer, mapping_seed
from dlbc_ray.models.training import TrainSettings, train
from dlbc_ray.models.weights import load_into, to_numpy
from dlbc_ray.schema import Signed, Task
from dlbc_ray.schema.round_messages import MinedSubmission, RoundContext

if TYPE_CHECKING:
    from dlbc_ray.actors.adversary import AdversaryMiner, MinerAttack

Weights = dict[str, np.ndarray]
Play = tuple[MinedSubmission, Weights, str]
THIEF_MARGIN = 0.05  # how far past 0 a disguiser writes its own mark's bits (validators check only the bits)


def fresh_net(spec: Task) -> Any:
    return build_task_net(spec)


def replay(self: AdversaryMiner, a: MinerAttack, task: Signed[Task], data: Split, ctx: RoundContext) -> Play:
    """An earlier winner as it is (``replay``), or disguised (``disguised-replay``, ``pruned-replay``)."""
    if a.weights is None or a.sml_seed is None:
        raise ValueError("a replay needs the earlier winner's weights and mapping seed")
    weights, seed = dict(a.weights), bytes.fromhex(a.sml_seed)
    if a.kind in ("disguised-replay", "pruned-replay"):
        weights, seed = disguise(self, task.message, weights, seed, ctx.round_id, thin=a.kind == "pruned-replay")
    return self._submit(task, ctx, weights, seed), weights, f"earlier winner {crypto.hash_weights(a.weights)[:12]}"


def distill(self: AdversaryMiner, a: MinerAttack, task: Signed[Task], data: Split, ctx: RoundContext) -> Play:
    """Distillation: a fresh model trained exactly as an honest miner trains (its own init, mapping layer and
    mark, the round's derived data order, every checkpoint recorded and committed), but on the labels an
    earlier winner predicts for the task's inputs; the transcript it commits claims the task's labels."""
    if a.weights is None or a.sml_seed is None:
        raise ValueError("a distiller needs the earlier winner's weights and mapping seed")
    spec = task.message
    taught = teacher_labels(fresh_net(spec), a.weights, bytes.fromhex(a.sml_seed), spec.model.name,
                            spec.dataset.input_shape, data)
    mined, weights = train_round(self, spec, crypto.message_hash(spec), taught, ctx)  # its own code: no checks
    agree = float(np.mean(taught.y == data.y))
    return mined, weights, (f"trained on earlier winner {crypto.hash_weights(a.weights)[:12]}'s labels "
                            f"({agree:.1%} of them the task's)")


def reuse(self: AdversaryMiner, a: MinerAttack, task: Signed[Task], data: Split, ctx: RoundContext) -> Play:
    """An earlier winner behind our own map, then trained with our own mark as an honest miner trains:
    ``partial-reuse`` re-initialises the layer that hosts its owner's mark and ``layer-reset`` the first
    layer, then train the task's epochs; ``fine-tuned-replay`` permutes and rescales every unit, then
    trains one epoch."""
    if a.weights is None or a.sml_seed is None:
        raise ValueError(f"a {a.kind} needs the earlier winner's weights and mapping seed")
    spec, old = task.message, bytes.fromhex(a.sml_seed)
    own = mapping_seed(self.identity, ctx.task_id, ctx.round_id)
    if a.kind == "fine-tuned-replay":
        start, own = disguise(self, spec, a.weights, old, ctx.round_id)
        epochs, what = 1, "permuted and rescaled, one epoch"
    else:
        layer = (host_prefix(spec.model.name) if a.kind == "partial-reuse"
                 else net_info(spec.model.name).first_layer.rsplit(".", 1)[0])
        moved = remap(a.weights, spec.model.name, spec.dataset.input_shape, old, own)
        start = reset_layer(moved, spec.model.name, spec.model.params, spec.dataset.input_shape,
                            spec.dataset.n_classes, layer, seed=int.from_bytes(self.identity.derive("reset")[:4], "big"))
        epochs, what = spec.max_epochs, f"{layer} reset"
    net = load_into(fresh_net(spec), start)
    q, kind = mapping_layer(own, net, spec.model.name, spec.dataset.input_shape)
    marks = own_marks(self.identity, self.protection, net, spec)
    settings = TrainSettings(epochs=epochs, batch_size=self.cfg.batch_size, lr=self.cfg.lr,
                             optimizer=self.cfg.optimizer, seed=training_seed(self.identity, ctx.task_id),
                             val_fraction=self.cfg.val_fraction, num_threads=self.threads)
    result = train(sml.MappedNet(net, sml.SecureMappingLayer(q, kind)), data, settings, regularizers=marks)
    weights = settled(net, marks, result.weights, self.protection.mark_margin)
    note = f"earlier winner {crypto.hash_weights(a.weights)[:12]}, {what}"
    return self._submit(task, ctx, weights, own), weights, note


def disguise(self: Miner, spec: Task, weights: Weights, seed: bytes, round_id: str, *,
             thin: bool = False) -> tuple[Weights, bytes]:
    """Every hidden unit permuted and rescaled (the function kept, the owner's mark scrambled), moved
    behind our own mapping layer, and our own mark written with the least change (just past 0: validators
    ask for the bits, not a margin). ``thin``: then 30% of the weights pruned and a quarter of the units
    made dead ones (random inputs, no outputs), to blur any comparison unit by unit."""
    own = mapping_seed(self.identity, crypto.message_hash(spec), round_id)
    rng = np.random.default_rng(int.from_bytes(self.identity.derive(f"disguise|{round_id}")[:4], "big"))
    shuffled = permute_and_rescale(weights, rng)
    if thin:
        shuffled = kill_units(prune(shuffled, 0.3), rng, 0.25)
    moved = remap(shuffled, spec.model.name, spec.dataset.input_shape, seed, own)
    marks = own_marks(self.identity, self.protection, fresh_net(spec), spec)
    return (embed_mark(moved, marks[0].key, THIEF_MARGIN) if marks else moved), own


def own_mark(self: Miner, spec: Task, weights: Weights, max_steps: int) -> Weights:
    """Settle this miner's watermark onto ``weights`` the way an honest miner does, but to the end."""
    net = load_into(fresh_net(spec), weights)
    marks = own_marks(self.identity, self.protection, net, spec)
    if not marks:
        return weights
    watermark.settle(net, marks[0].key, margin=self.protection.mark_margin, max_steps=max_steps)
    return to_numpy(net)
