"""Training one net on one split with a real ``pl.Trainer``, reproducibly and quietly.

This is the miner's useful work: seeded, in-memory, no checkpoints or loggers, and the
result is plain numpy weights ready to hash and sign.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, Sampler, TensorDataset

from dlbc_ray.errors import ConfigError
from dlbc_ray.models.data import Split, holdout
from dlbc_ray.models.system import ClassifierSystem, Regularizer
from dlbc_ray.models.weights import to_numpy

ACCELERATORS: tuple[str, ...] = ("cpu", "gpu", "auto")
_LIGHTNING_LOGGERS = ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning.fabric")
# Advice that is noise for small in-memory sets (num_workers, log interval) or not ours to act on.
_NOISY_WARNINGS = (r".*does not have many workers.*", r".*smaller than the logging interval.*", r".*LeafSpec.*")


@dataclass(frozen=True)
class TrainSettings:
    """How to train: epochs, batches, optimizer, seed and where to run."""

    epochs: int = 5
    batch_size: int = 64
    lr: float = 1e-2
    weight_decay: float = 0.0
    optimizer: str = "adam"
    seed: int = 0
    accelerator: str = "cpu"  # "cpu" | "gpu" | "auto"
    devices: int = 1
    val_fraction: float = 0.1
    num_threads: int | None = None
    objective: str = "accuracy"  # a registered objective (models.objectives): the loss, and what val_acc scores
    checks_per_epoch: int = 1  # validations (and ``stop_when`` checks) per epoch; PoLe stops nearer its target

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.devices < 1 or self.checks_per_epoch < 1:
            raise ConfigError("epochs, batch_size, devices and checks_per_epoch must be at least 1",
                              reason="train_settings")
        if self.accelerator not in ACCELERATORS:
            raise ConfigError(f"unknown accelerator '{self.accelerator}'; use one of {', '.join(ACCELERATORS)}", reason="accelerator")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction}", reason="train_settings")
        if self.num_threads is not None and self.num_threads < 1:
            raise ConfigError(f"num_threads must be at least 1, got {self.num_threads}", reason="train_settings")


@dataclass(frozen=True)
class EpochStat:
    """One finished epoch (``epoch`` counts from 1); accuracy is NaN without a validation part."""

    epoch: int
    train_loss: float
    val_accuracy: float
    seconds: float


@dataclass(frozen=True)
class TrainResult:
    """Trained weights (CPU float32 numpy) and what it took to get them."""

    weights: dict[str, np.ndarray] = field(repr=False)
    val_accuracy: float
    epochs: int
    seconds: float
    examples: int
    history: tuple[EpochStat, ...]


Order = Callable[[int, int], Sampler[int]]  # (fit examples, seed) -> the sampler of the fit split


class SplitDataModule(pl.LightningDataModule):
    """In-memory fit/validation splits; shuffling comes from a generator seeded by ``seed``, or from ``order``."""

    def __init__(self, fit: Split, val: Split, *, batch_size: int, seed: int, order: Order | None = None) -> None:
        super().__init__()
        self.fit, self.val, self.batch_size, self.seed, self.order = fit, val, batch_size, seed, order

    def train_dataloader(self) -> DataLoader:
        if self.order is not None:  # a transcript's derived order (models.transcript.DerivedOrder)
            sampler = self.order(len(self.fit), self.seed)
            return DataLoader(_dataset(self.fit), batch_size=self.batch_size, sampler=sampler, num_workers=0)
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(_dataset(self.fit), batch_size=self.batch_size, shuffle=True, generator=generator, num_workers=0)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(_dataset(self.val), batch_size=max(self.batch_size, 256), num_workers=0)


def _dataset(split: Split) -> TensorDataset:
    return TensorDataset(torch.tensor(split.x), torch.tensor(split.y))


class _EpochRecorder(pl.Callback):
    """Turns each finished epoch (after its validation) into an ``EpochStat``."""

    def __init__(self, on_epoch: Callable[[EpochStat], None] | None,
                 stop_when: Callable[[EpochStat], bool] | None = None) -> None:
        self.on_epoch, self.stop_when = on_epoch, stop_when
        self.history: list[EpochStat] = []
        self._started = 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._started = time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """With several checks an epoch, stop right after the validation that approves: the run ends at the
        step whose weights were validated (its epoch then counts as begun, ``EpochStat.epoch``)."""
        if not trainer.sanity_checking and self.stop_when is not None and self.stop_when(self._stat(trainer)):
            trainer.should_stop = True

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        stat = self._stat(trainer)
        self.history.append(stat)
        if self.on_epoch is not None:
            self.on_epoch(stat)
        if self.stop_when is not None and self.stop_when(stat):
            trainer.should_stop = True

    def _stat(self, trainer: pl.Trainer) -> EpochStat:
        metrics = trainer.callback_metrics
        return EpochStat(epoch=trainer.current_epoch + 1, train_loss=float(metrics.get("train_loss", float("nan"))),
                         val_accuracy=float(metrics.get("val_acc", float("nan"))),
                         seconds=time.perf_counter() - self._started)


def train(
    net: nn.Module,
    data: Split,
    settings: TrainSettings,
    *,
    regularizers: Sequence[Regularizer] = (),
    on_epoch: Callable[[EpochStat], None] | None = None,
    stop_when: Callable[[EpochStat], bool] | None = None,
    callbacks: Sequence[pl.Callback] = (),
    order: Order | None = None,
) -> TrainResult:
    """Train ``net`` in place on ``data`` minus a validation holdout; same inputs, same weights (CPU).

    ``stop_when`` ends training after the first epoch it approves (PoLe: a target reached), or right after the
    first of ``settings.checks_per_epoch`` validations an epoch that it approves.
    ``callbacks`` and ``order`` (the fit split's sampler) let a transcript record the run.
    """
    _prepare_process(settings)
    fit, val = holdout(data, settings.val_fraction, settings.seed)
    system = ClassifierSystem(
        net, lr=settings.lr, weight_decay=settings.weight_decay, optimizer=settings.optimizer, regularizers=regularizers,
        objective=settings.objective,
    )
    recorder = _EpochRecorder(on_epoch, stop_when)
    started = time.perf_counter()
    with quiet_lightning():
        trainer = _trainer(settings, [recorder, *callbacks], validate=len(val) > 0)
        datamodule = SplitDataModule(fit, val, batch_size=settings.batch_size, seed=settings.seed, order=order)
        trainer.fit(system, datamodule=datamodule)
    history = tuple(recorder.history)
    return TrainResult(
        weights=to_numpy(net),
        val_accuracy=history[-1].val_accuracy if history else float("nan"),
        epochs=len(history),
        seconds=time.perf_counter() - started,
        examples=len(fit),
        history=history,
    )


def _prepare_process(settings: TrainSettings) -> None:
    """Fail early on a missing GPU, then pin threads and seed the global torch stream (dropout)."""
    if settings.accelerator == "gpu" and not torch.cuda.is_available():
        raise ConfigError("accelerator 'gpu' was asked for but this machine has no CUDA device", reason="accelerator")
    if settings.num_threads is not None:
        torch.set_num_threads(settings.num_threads)
    torch.manual_seed(settings.seed)


def _trainer(settings: TrainSettings, callbacks: list[pl.Callback], *, validate: bool) -> pl.Trainer:
    return pl.Trainer(
        max_epochs=settings.epochs,
        accelerator=settings.accelerator,
        devices=settings.devices,
        callbacks=callbacks,
        limit_val_batches=None if validate else 0,
        val_check_interval=1 / settings.checks_per_epoch if validate and settings.checks_per_epoch > 1 else None,
        enable_progress_bar=False,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )


@contextmanager
def quiet_lightning() -> Iterator[None]:
    """Hide Lightning's info chatter and advice that does not apply; warnings and errors still show."""
    loggers = [logging.getLogger(name) for name in _LIGHTNING_LOGGERS]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        for pattern in _NOISY_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern)
        for lg in loggers:
            lg.setLevel(logging.WARNING)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)
