"""The one LightningModule: any registered net trained for the task's objective, plus regularizers.

Regularizers (the DNN watermark) are extra loss terms computed from the net itself,
so the system knows nothing about keys, owners or chains.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from dlbc_ray.errors import ConfigError
from dlbc_ray.models.objectives import get_objective, score

OPTIMIZERS: tuple[str, ...] = ("adam", "sgd")


class Regularizer(Protocol):
    """A named loss term on the net's own weights; it must return a tensor on their device."""

    name: str

    def __call__(self, net: nn.Module) -> torch.Tensor: ...


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
        if optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer '{optimizer}'; use one of {', '.join(OPTIMIZERS)}", reason="optimizer")
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
        x, y = batch
        loss = self.loss(self(x), y)
        for regularizer in self.regularizers:
            term = regularizer(self.net)
            self.log(f"reg_{regularizer.name}", term, on_step=False, on_epoch=True, batch_size=len(y))
            loss = loss + term
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(y))
        return loss

    def loss(self, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The objective's loss: cross-entropy on logits, or MSE / L1 on a regression net's first output."""
        if self.objective.loss == "cross_entropy":
            return F.cross_entropy(outputs, y)
        prediction = outputs.reshape(len(y), -1)[:, 0]
        return (F.mse_loss if self.objective.loss == "mse" else F.l1_loss)(prediction, y.to(prediction.dtype))

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
        params = [p for p in self.net.parameters() if p.requires_grad]  # the mapping layer stays fixed
        lr, decay = self.hparams["lr"], self.hparams["weight_decay"]
        if self.hparams["optimizer"] == "sgd":
            return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=decay)
        return torch.optim.Adam(params, lr=lr, weight_decay=decay)
