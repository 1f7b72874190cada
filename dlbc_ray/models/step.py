"""One training step's arithmetic, without Lightning: the loss, the regularizer terms, the optimizer.

``ClassifierSystem`` (the LightningModule miners train) and ``StepSystem`` (what an audit
replays a transcript's segments with) both compute through these functions, in the same
order, so a replay is bit for bit the miner's step. A validator then never imports
Lightning (with torchmetrics, SciPy's signal package and matplotlib behind it: about 1.6 s
of CPU per process on these cores), only torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from dlbc_ray.errors import ConfigError
from dlbc_ray.models.objectives import Objective, get_objective

OPTIMIZERS: tuple[str, ...] = ("adam", "sgd")


class Regularizer(Protocol):
    """A named loss term on the net's own weights; it must return a tensor on their device."""

    name: str

    def __call__(self, net: nn.Module) -> torch.Tensor: ...


def check_optimizer(optimizer: str) -> str:
    if optimizer not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer '{optimizer}'; use one of {', '.join(OPTIMIZERS)}", reason="optimizer")
    return optimizer


def compute_loss(objective: Objective, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The objective's loss: cross-entropy on logits, or MSE / L1 on a regression net's first output."""
    if objective.loss == "cross_entropy":
        return F.cross_entropy(outputs, y)
    prediction = outputs.reshape(len(y), -1)[:, 0]
    return (F.mse_loss if objective.loss == "mse" else F.l1_loss)(prediction, y.to(prediction.dtype))


def step_loss(net: nn.Module, objective: Objective, regularizers: Sequence[Regularizer], x: torch.Tensor,
              y: torch.Tensor) -> tuple[torch.Tensor, list[tuple[str, torch.Tensor]]]:
    """The loss one step minimises (task loss, then each regularizer added in order) and each term."""
    loss = compute_loss(objective, net(x), y)
    terms = []
    for regularizer in regularizers:
        term = regularizer(net)
        terms.append((regularizer.name, term))
        loss = loss + term
    return loss, terms


def make_optimizer(net: nn.Module, optimizer: str, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    params = [p for p in net.parameters() if p.requires_grad]  # the mapping layer stays fixed
    if optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


class StepSystem(nn.Module):
    """``ClassifierSystem``'s training step and optimizer on a plain module: what an audit replays with."""

    def __init__(self, net: nn.Module, *, lr: float = 1e-2, weight_decay: float = 0.0, optimizer: str = "adam",
                 objective: str = "accuracy", regularizers: Sequence[Regularizer] = ()) -> None:
        super().__init__()
        self.net, self.lr, self.weight_decay = net, lr, weight_decay
        self.optimizer, self.objective = check_optimizer(optimizer), get_objective(objective)
        self.regularizers = tuple(regularizers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return step_loss(self.net, self.objective, self.regularizers, *batch)[0]

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return make_optimizer(self.net, self.optimizer, self.lr, self.weight_decay)
