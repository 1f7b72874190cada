"""The one LightningModule: a classifier around any registered net, plus regularizers.

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

OPTIMIZERS: tuple[str, ...] = ("adam", "sgd")


class Regularizer(Protocol):
    """A named loss term on the net's own weights; it must return a tensor on their device."""

    name: str

    def __call__(self, net: nn.Module) -> torch.Tensor: ...


class ClassifierSystem(pl.LightningModule):
    """Cross-entropy classification of ``net``'s logits, plus the sum of ``regularizers``."""

    def __init__(
        self,
        net: nn.Module,
        *,
        lr: float = 1e-2,
        weight_decay: float = 0.0,
        optimizer: str = "adam",
        regularizers: Sequence[Regularizer] = (),
    ) -> None:
        super().__init__()
        if optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer '{optimizer}'; use one of {', '.join(OPTIMIZERS)}", reason="optimizer")
        self.save_hyperparameters(ignore=["net", "regularizers"])
        self.net = net
        self.regularizers = tuple(regularizers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def on_fit_start(self) -> None:
        # Module regularizers (holding key tensors) follow the net onto its device.
        for regularizer in self.regularizers:
            if isinstance(regularizer, nn.Module):
                regularizer.to(self.device)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        for regularizer in self.regularizers:
            term = regularizer(self.net)
            self.log(f"reg_{regularizer.name}", term, on_step=False, on_epoch=True, batch_size=len(y))
            loss = loss + term
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(y))
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log("val_loss", F.cross_entropy(logits, y), on_epoch=True, batch_size=len(y))
        self.log("val_acc", (logits.argmax(dim=1) == y).float().mean(), on_epoch=True, batch_size=len(y))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        params = [p for p in self.net.parameters() if p.requires_grad]  # the mapping layer stays fixed
        lr, decay = self.hparams["lr"], self.hparams["weight_decay"]
        if self.hparams["optimizer"] == "sgd":
            return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=decay)
        return torch.optim.Adam(params, lr=lr, weight_decay=decay)
