"""Data-parallel training that a single-device replay can follow step for step.

A miner with W workers (Ray Train, one process per GPU; ``actors/data_parallel.py`` runs them)
trains on the same derived data order as a single-device miner: every batch of the order is
split into W contiguous, near-equal shards (``numpy.array_split``), worker ``r`` trains on shard
``r``, and DDP averages the W gradients (each divided by W, then summed). Dropout draws from the
step's seed on every worker alike. ``sharded_backward`` is that step in one process: shard by
shard, each after the same step seed, gradients divided by W and summed in worker order. For
W = 2 the sum of two terms is order-free and halving is exact, so a 2-worker run on CPU replays
bit for bit; beyond 2, the all-reduce's summation order is the transport's (gloo, NCCL), so such
a replay lands within a tolerance, not on the bit.

Every shard of every batch must be non-empty (DDP steps all workers together): ``usable_workers``
says how many workers a run can use.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Sampler, TensorDataset

from dlbc_ray.models.data import Split
from dlbc_ray.models.training import EpochStat
from dlbc_ray.models.transcript import DerivedOrder, seed_step


def usable_workers(examples: int, batch_size: int, wanted: int) -> int:
    """The most workers, at most ``wanted``, such that every batch (the last, short one too) gives each a shard."""
    last = examples % batch_size or batch_size  # the last batch's size (the only batch's, for a small split)
    return max(1, min(wanted, batch_size, last))


def shard(batch: np.ndarray, workers: int, rank: int) -> np.ndarray:
    """Worker ``rank``'s contiguous part of one batch of the derived order."""
    return np.array_split(batch, workers)[rank]


class ShardedBatches(Sampler[list[int]]):
    """A batch sampler: the derived order (``sampler``, a ``DerivedOrder``: Lightning sets its epoch) in batches
    of ``batch_size``, of which this worker yields its shard."""

    def __init__(self, n: int, seed: int, batch_size: int, workers: int, rank: int) -> None:
        if not 0 <= rank < workers or usable_workers(n, batch_size, workers) != workers:
            raise ValueError(f"{workers} workers cannot each get a shard of every batch of {n} by {batch_size}")
        self.sampler = DerivedOrder(n, seed)
        self.n, self.batch_size, self.workers, self.rank = n, batch_size, workers, rank

    def __iter__(self) -> Iterator[list[int]]:
        order = np.fromiter(self.sampler, dtype=np.int64, count=self.n)
        for start in range(0, self.n, self.batch_size):
            yield shard(order[start:start + self.batch_size], self.workers, self.rank).tolist()

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)


def sharded_backward(step: object, params: list[torch.nn.Parameter], x: torch.Tensor, y: torch.Tensor,
                     index: np.ndarray, workers: int, seed: int, batch_idx: int) -> None:
    """One data-parallel step's gradients, in one process: ``step((x, y), batch_idx)`` (a LightningModule's
    ``training_step``) on each worker's shard after seeding the step, each gradient divided by ``workers``
    and summed in worker order, as DDP's all-reduce leaves them in ``p.grad``."""
    total: list[torch.Tensor | None] = [None] * len(params)
    for rank in range(workers):
        part = torch.from_numpy(shard(index, workers, rank))
        for p in params:
            p.grad = None
        seed_step(seed)
        step((x[part], y[part]), batch_idx).backward()  # type: ignore[operator]
        for i, p in enumerate(params):
            if p.grad is not None:
                g = p.grad / workers
                total[i] = g if total[i] is None else total[i] + g
    for p, g in zip(params, total):
        p.grad = g


class ShardedData(pl.LightningDataModule):
    """``training.SplitDataModule`` for one of ``workers``: its shards of the derived order's batches, and the
    whole validation part (every worker scores the same holdout, so every worker takes the same stop decision)."""

    def __init__(self, fit: Split, val: Split, *, batch_size: int, seed: int, workers: int, rank: int) -> None:
        super().__init__()
        self.fit, self.val, self.batch_size = fit, val, batch_size
        self.batches = ShardedBatches(len(fit), seed, batch_size, workers, rank)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(_dataset(self.fit), batch_sampler=self.batches, num_workers=0)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(_dataset(self.val), batch_size=max(self.batch_size, 256), num_workers=0)


def _dataset(split: Split) -> TensorDataset:
    return TensorDataset(torch.tensor(split.x), torch.tensor(split.y))


class Epochs(pl.Callback):
    """``training._EpochRecorder`` for a data-parallel run: worker 0 reports each epoch and decides whether to
    stop (the target reached, or ``stopped()``: the window closed); every worker learns it (DDP must step together)."""

    def __init__(self, rank: int, workers: int, *, goal: float | None, report: Callable[[EpochStat], None] | None,
                 stopped: Callable[[], bool]) -> None:
        self.rank, self.workers, self.goal, self.report, self.stopped = rank, workers, goal, report, stopped
        self.history: list[EpochStat] = []
        self._started = 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._started = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metrics = trainer.callback_metrics
        stat = EpochStat(epoch=trainer.current_epoch + 1, train_loss=float(metrics.get("train_loss", math.nan)),
                         val_accuracy=float(metrics.get("val_acc", math.nan)), seconds=time.perf_counter() - self._started)
        self.history.append(stat)
        stop = False
        if self.rank == 0:
            if self.report is not None:
                self.report(stat)
            stop = (self.goal is not None and stat.val_accuracy >= self.goal) or self.stopped()
        if trainer.strategy.reduce_boolean_decision(stop, all=False):
            trainer.should_stop = True
