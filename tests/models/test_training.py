"""Training with a real pl.Trainer: reproducible, useful, quiet."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from dlbc_ray.crypto import hash_weights
from dlbc_ray.errors import ConfigError
from dlbc_ray.models.data import load_builtin
from dlbc_ray.models.evaluate import evaluate
from dlbc_ray.models.nets import build_net
from dlbc_ray.models.training import EpochStat, TrainSettings, train


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One intra-op thread, as in a Ray actor; OpenMP spinning makes 2 threads on a busy 2-core box 30x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _train_iris(seed: int, **settings: object) -> tuple[str, int]:
    bundle = load_builtin("iris")
    net = build_net("mlp", {"hidden": [16, 8], "dropout": 0.2}, bundle.input_shape, bundle.n_classes)
    result = train(net, bundle.train, TrainSettings(epochs=2, batch_size=16, seed=seed, **settings))  # type: ignore[arg-type]
    return hash_weights(result.weights), result.examples


def test_same_seed_gives_identical_weights_and_another_seed_does_not() -> None:
    first, _ = _train_iris(seed=1)
    assert _train_iris(seed=1)[0] == first
    assert _train_iris(seed=2)[0] != first


@pytest.mark.parametrize(
    ("net_name", "dataset", "epochs", "floor"),
    [("mlp", "digits", 3, 0.85), ("cnn", "digits", 5, 0.85), ("cnn1d", "mnist1d", 5, 0.7)],
)
def test_each_net_learns_its_natural_dataset(net_name: str, dataset: str, epochs: int, floor: float) -> None:
    bundle = load_builtin(dataset)
    net = build_net(net_name, {}, bundle.input_shape, bundle.n_classes)
    result = train(net, bundle.train, TrainSettings(epochs=epochs))
    assert evaluate(build_net(net_name, {}, bundle.input_shape, bundle.n_classes), result.weights, bundle.test) > floor
    assert result.val_accuracy > floor


def test_result_reports_history_examples_and_cpu_float32_weights() -> None:
    bundle = load_builtin("wine")
    seen: list[EpochStat] = []
    net = build_net("mlp", {}, bundle.input_shape, bundle.n_classes)
    result = train(net, bundle.train, TrainSettings(epochs=3, val_fraction=0.25), on_epoch=seen.append)
    assert [s.epoch for s in seen] == [1, 2, 3] and tuple(seen) == result.history and result.epochs == 3
    assert result.examples == len(bundle.train) - round(0.25 * len(bundle.train))
    assert result.val_accuracy == seen[-1].val_accuracy and all(0.0 <= s.val_accuracy <= 1.0 for s in seen)
    assert all(s.train_loss > 0 and s.seconds > 0 for s in seen) and result.seconds >= sum(s.seconds for s in seen)
    assert all(a.dtype == np.float32 and a.flags.c_contiguous for a in result.weights.values())
    assert hash_weights(result.weights) == hash_weights({k: v.numpy() for k, v in net.state_dict().items()})


def test_regularizers_enter_the_loss_and_change_the_weights() -> None:
    class Shrink:
        name = "shrink"

        def __call__(self, net: torch.nn.Module) -> torch.Tensor:
            return sum(p.pow(2).sum() for p in net.parameters())  # type: ignore[return-value]

    bundle = load_builtin("iris")
    plain = train(build_net("mlp", {}, (4,), 3), bundle.train, TrainSettings(epochs=2))
    shrunk = train(build_net("mlp", {}, (4,), 3), bundle.train, TrainSettings(epochs=2), regularizers=[Shrink()])
    norm = lambda w: sum(float((a**2).sum()) for a in w.values())  # noqa: E731
    assert norm(shrunk.weights) < 0.8 * norm(plain.weights)
    # The logged loss averages CE + norm while the norm was still falling, so it exceeds the final norm.
    assert shrunk.history[-1].train_loss > norm(shrunk.weights) > plain.history[-1].train_loss


def test_without_validation_every_example_trains() -> None:
    bundle = load_builtin("iris")
    result = train(build_net("mlp", {}, (4,), 3), bundle.train, TrainSettings(epochs=1, val_fraction=0.0))
    assert result.examples == len(bundle.train) and np.isnan(result.val_accuracy)


def test_num_threads_is_applied() -> None:
    torch.set_num_threads(2)
    _train_iris(seed=0, num_threads=1)
    assert torch.get_num_threads() == 1


def test_lightning_chatter_is_silenced(caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> None:
    with caplog.at_level(logging.INFO):
        _train_iris(seed=0)
    out, err = capfd.readouterr()
    chatter = caplog.text + out + err
    assert "GPU available" not in chatter and "max_epochs" not in chatter and "LeafSpec" not in chatter


@pytest.mark.parametrize(
    "bad", [{"epochs": 0}, {"batch_size": 0}, {"accelerator": "tpu"}, {"val_fraction": 1.0}, {"num_threads": 0}]
)
def test_bad_settings_are_config_errors(bad: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        TrainSettings(**bad)  # type: ignore[arg-type]


def test_unknown_optimizer_fails_before_training() -> None:
    with pytest.raises(ConfigError, match="rmsprop"):
        train(build_net("mlp", {}, (4,), 3), load_builtin("iris").train, TrainSettings(optimizer="rmsprop"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_asking_for_a_missing_gpu_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no CUDA"):
        train(build_net("mlp", {}, (4,), 3), load_builtin("iris").train, TrainSettings(accelerator="gpu"))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_training_returns_cpu_weights_that_score_the_same() -> None:
    bundle = load_builtin("digits")
    net = build_net("cnn", {}, bundle.input_shape, bundle.n_classes)
    result = train(net, bundle.train, TrainSettings(epochs=3, accelerator="gpu"))
    assert all(isinstance(a, np.ndarray) and a.dtype == np.float32 for a in result.weights.values())
    fresh = build_net("cnn", {}, bundle.input_shape, bundle.n_classes)
    on_gpu = evaluate(fresh, result.weights, bundle.test, device="cuda")
    assert on_gpu > 0.85 and abs(on_gpu - evaluate(fresh, result.weights, bundle.test)) < 0.01


def test_stop_when_ends_training_after_the_first_approved_epoch() -> None:
    from dlbc_ray.models.data import load_builtin
    from dlbc_ray.models.nets import build_net
    from dlbc_ray.models.training import TrainSettings, train

    bundle = load_builtin("digits")
    net = build_net("mlp", {}, bundle.input_shape, bundle.n_classes)
    result = train(net, bundle.train, TrainSettings(epochs=20, num_threads=1),
                   stop_when=lambda stat: stat.val_accuracy >= 0.8)
    assert result.epochs < 20 and result.history[-1].val_accuracy >= 0.8
    assert all(stat.val_accuracy < 0.8 for stat in result.history[:-1])
