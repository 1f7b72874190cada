"""The LightningModule: loss, regularizers, metrics and optimizers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dlbc_ray.errors import ConfigError, InvalidTask
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


def test_the_objective_chooses_the_loss() -> None:
    x, y = _batch()
    for objective, loss in [("mse", F.mse_loss), ("mae", F.l1_loss)]:
        system = _system(objective=objective)
        targets = y.float() / 2
        torch.testing.assert_close(system.loss(system(x), targets), loss(system(x)[:, 0], targets))
    with pytest.raises(InvalidTask, match="unknown metric .f2."):
        _system(objective="f2")


def test_val_acc_is_the_objective_over_the_whole_holdout_not_a_mean_of_batches() -> None:
    """Macro-F1 of two batches is not the mean of their F1s: the system scores the epoch's outputs at once."""
    system = _system(objective="macro_f1")
    logged: dict[str, float] = {}
    system.log = lambda name, value, **kw: logged.__setitem__(name, float(value))  # type: ignore[method-assign]
    system.net = nn.Identity()  # logits are the inputs: predictions are exactly what the batches say
    batches = [(torch.eye(3)[[0, 0, 1]], torch.tensor([0, 0, 0])), (torch.eye(3)[[2, 1]], torch.tensor([2, 1]))]
    system.on_validation_epoch_start()
    for i, batch in enumerate(batches):
        system.validation_step(batch, i)
    system.on_validation_epoch_end()
    from sklearn.metrics import f1_score

    assert logged["val_acc"] == pytest.approx(f1_score([0, 0, 0, 2, 1], [0, 0, 1, 2, 1], average="macro"))


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
@pytest.mark.parametrize("objective", ["accuracy", "mse"])
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_the_replay_system_steps_bit_for_bit_as_the_lightning_one(objective: str, optimizer: str) -> None:
    """Audits replay with models.step.StepSystem (no Lightning): three steps from the same weights must land
    on the same bits as ClassifierSystem's, regularizers included."""
    from dlbc_ray.models.step import StepSystem

    kwargs = {"regularizers": [L2(0.5)], "optimizer": optimizer, "objective": objective, "lr": 0.05}
    lightning, plain = _system(**kwargs), StepSystem(build_net("mlp", {"hidden": [5]}, (4,), 3), **kwargs)
    plain.net.load_state_dict(lightning.net.state_dict())
    optimizers = lightning.configure_optimizers(), plain.configure_optimizers()
    x, y = _batch()
    for _ in range(3):
        for system, opt in zip((lightning, plain), optimizers):
            opt.zero_grad()
            system.training_step((x, y), 0).backward()
            opt.step()
    assert all(torch.equal(a, b) for a, b in zip(lightning.net.state_dict().values(), plain.net.state_dict().values()))
    with pytest.raises(ConfigError):
        StepSystem(build_net("mlp", {"hidden": [5]}, (4,), 3), optimizer="lbfgs")
