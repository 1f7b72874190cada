"""The Lightning callback that records a training transcript (the rest of the transcript is models/transcript.py).

A module of its own so that validators, who replay transcripts with ``models.step`` on plain
torch, never import Lightning.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch

from dlbc_ray.consensus.transcript import CheckpointLeaf, compute_step_seed
from dlbc_ray.models.step import use_deterministic_algorithms
from dlbc_ray.models.transcript import Checkpoint, CheckpointStore, flatten_optimizer, seed_step
from dlbc_ray.models.weights import to_numpy


class TranscriptRecorder(pl.Callback):
    """Reseeds torch before each optimizer step and keeps checkpoints at ``checkpoint_steps``.

    The interval starts at one step and doubles (every other checkpoint dropped) whenever more
    than ``max_checkpoints - 1`` would be kept, so a run of any length, stopped early or not,
    keeps between about half and all of ``max_checkpoints``: the audit's share stays the same.
    """

    def __init__(self, seed: int, max_checkpoints: int, store: CheckpointStore | None = None) -> None:
        self.seed, self.cap, self.interval = seed, max_checkpoints, 1
        self.store = store if store is not None else CheckpointStore()
        self.hashes: dict[int, tuple[str, str] | None] = {}  # step -> (weights, optimizer) hashes, made once kept
        self._deterministic = False

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._deterministic = torch.are_deterministic_algorithms_enabled()
        use_deterministic_algorithms(True)
        self._record(0, pl_module, trainer.optimizers[0])

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: object,
                             batch_idx: int) -> None:
        seed_step(compute_step_seed(self.seed, trainer.global_step))

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: object, batch: object,
                           batch_idx: int) -> None:
        if trainer.global_step % self.interval == 0:
            self._record(trainer.global_step, pl_module, trainer.optimizers[0])
            self._thin()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._record(trainer.global_step, pl_module, trainer.optimizers[0])
        use_deterministic_algorithms(self._deterministic)

    @property
    def leaves(self) -> list[CheckpointLeaf]:
        """The kept checkpoints as committed leaves; hashed here, so thinned-out ones never are."""
        for step, hashes in self.hashes.items():
            checkpoint = self.store.get(step) if hashes is None else None
            if checkpoint is not None:
                leaf = checkpoint.leaf(0)
                self.hashes[step] = (leaf.weights_hash, leaf.optimizer_hash)
        return [CheckpointLeaf(index=i, step=step, weights_hash=h[0], optimizer_hash=h[1])
                for i, (step, h) in enumerate(sorted(self.hashes.items())) if h is not None]

    def _record(self, step: int, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer) -> None:
        if step in self.hashes:
            return
        self.store.put(Checkpoint(step=step, weights=to_numpy(pl_module.net), optimizer=flatten_optimizer(optimizer)))
        self.hashes[step] = None

    def _thin(self) -> None:
        while len(self.hashes) > self.cap - 1:  # one place stays free for the last step
            self.interval *= 2
            for step in [s for s in self.hashes if s % self.interval]:
                del self.hashes[step]
                self.store.drop(step)
