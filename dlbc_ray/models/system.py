"""The one LightningModule: any registered net trained for the task's objective, plus regularizers.

Regularizers (the DNN watermark) are extra loss terms computed from the net itself,
so the system knows nothing about keys, owners or chains.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytorch_lightning as pl
import torch
from torch import nn

from dlbc_ray.models.objectives import get_objective, score
from dlbc_ray.models.step import OPTIMIZERS, Regularizer, check_optimizer, compute_loss, make_optimizer, step_loss

__all__ = ["OPTIMIZERS", "ClassifierSystem", "Regularizer"]


class ClassifierSystem(pl.LightningModule):
    """``net`` trained for ``objective``'s loss (cross-entropy by default), plus the sum of ``regularizers``."""

    def __init__(
        self,
        net: nn.Module,
        *,
        lr: float = 1e-2,
        weight_decay: float = 0.0,
        optimizer: str = "adam",
        objective: str = "accuracy",
        regularizers: Sequence[Regularizer] = (),
    ) -> None:
        super().__init__()
        check_optimizer(optimizer)
        self.objective = get_objective(objective)
        self.save_hyperparameters(ignore=["net", "regularizers"])
        self.net = net
        self.regularizers = tuple(regularizers)
        self._val: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def on_fit_start(self) -> None:
        # Module regularizers (holding key tensors) follow the net onto its device.
        for regularizer in self.regularizers:
            if isinstance(regularizer, nn.Module):
                regularizer.to(self.device)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch  # the arithmetic is models.step's, which audits replay with
        loss, terms = step_loss(self.net, self.objective, self.regularizers, x, y)
        for name, term in terms:
            self.log(f"reg_{name}", term, on_step=False, on_epoch=True, batch_size=len(y))
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(y))
        return loss

    def loss(self, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The objective's loss: cross-entropy on logits, or MSE / L1 on a regression net's first output."""
        return compute_loss(self.objective, outputs, y)

    def on_validation_epoch_start(self) -> None:
        self._val = []

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        outputs = self(x)
        self.log("val_loss", self.loss(outputs, y), on_epoch=True, batch_size=len(y))
        self._val.append((outputs.detach().float().cpu(), y.detach().cpu()))

    def on_validation_epoch_end(self) -> None:
        """``val_acc`` is the task's objective over the whole holdout (the name is kept for callers)."""
        if not self._val:
            return
        outputs, targets = (torch.cat(parts).numpy() for parts in zip(*self._val))
        self.log("val_acc", score(self.objective.name, outputs, targets))
        self._val = []

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return make_optimizer(self.net, self.hparams["optimizer"], self.hparams["lr"], self.hparams["weight_decay"])
