"""The LightningModule: loss, regularizers, metrics and optimizers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dlbc_ray.errors import ConfigError
from dlbc_ray.models.nets import build_net
from dlbc_ray.models.system import ClassifierSystem


class L2:
    """A tiny regularizer: c times the squared norm of every parameter."""

    name = "l2"

    def __init__(self, c: float) -> None:
        self.c = c

    def __call__(self, net: nn.Module) -> torch.Tensor:
        return self.c * sum(p.pow(2).sum() for p in net.parameters())


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(8, 4, generator=torch.Generator().manual_seed(0)), torch.arange(8) % 3


def _system(**kwargs: object) -> ClassifierSystem:
    return ClassifierSystem(build_net("mlp", {"hidden": [5]}, (4,), 3), **kwargs)  # type: ignore[arg-type]


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
def test_training_loss_is_cross_entropy_plus_every_regularizer() -> None:
    system = _system(regularizers=[L2(0.5), L2(0.25)])
    x, y = _batch()
    expected = F.cross_entropy(system(x), y) + 0.75 * sum(p.pow(2).sum() for p in system.net.parameters())
    torch.testing.assert_close(system.training_step((x, y), 0), expected)


def test_hyperparameters_are_saved_without_the_net_or_regularizers() -> None:
    system = _system(lr=0.5, optimizer="sgd", regularizers=[L2(1.0)])
    assert dict(system.hparams) == {"lr": 0.5, "weight_decay": 0.0, "optimizer": "sgd", "objective": "accuracy"}


def test_sgd_is_nesterov_with_momentum_and_adam_is_the_default() -> None:
    sgd = _system(optimizer="sgd", lr=0.1, weight_decay=1e-4).configure_optimizers()
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.defaults | {"lr": 0.1} == sgd.defaults and sgd.defaults["nesterov"] and sgd.defaults["momentum"] == 0.9
    assert isinstance(_system().configure_optimizers(), torch.optim.Adam)


def test_frozen_parameters_are_left_out_of_the_optimizer() -> None:
    system = _system()
    system.net.fc[0].weight.requires_grad_(False)
    optimizer = system.configure_optimizers()
    assert sum(len(g["params"]) for g in optimizer.param_groups) == 3


def test_unknown_optimizer_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="'lbfgs'"):
        _system(optimizer="lbfgs")
