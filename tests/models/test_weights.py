"""Weights as numpy: copies, dtypes and strict loading."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn

from dlbc_ray.crypto import hash_weights
from dlbc_ray.errors import InvalidModelFile
from dlbc_ray.models.nets import build_net
from dlbc_ray.models.weights import load_into, nbytes, to_numpy


def _net() -> nn.Module:
    return build_net("mlp", {"hidden": [4]}, (3,), 2)


def test_to_numpy_gives_float32_and_keeps_integer_buffers() -> None:
    weights = to_numpy(nn.Sequential(nn.Linear(3, 2).double(), nn.BatchNorm1d(2)))
    assert weights["0.weight"].dtype == np.float32 and weights["1.num_batches_tracked"].dtype == np.int64
    assert all(a.flags.c_contiguous for a in weights.values())


def test_to_numpy_copies_rather_than_viewing_live_tensors() -> None:
    net = nn.Linear(3, 2)
    weights = to_numpy(net)
    with torch.no_grad():
        net.weight.add_(1.0)
    np.testing.assert_allclose(weights["weight"] + 1.0, net.weight.detach().numpy())


def test_round_trip_preserves_the_hash_and_accepts_read_only_arrays() -> None:
    source, target = _net(), build_net("mlp", {"hidden": [4]}, (3,), 2, seed=5)
    weights = to_numpy(source)
    for array in weights.values():
        array.flags.writeable = False
    assert load_into(target, weights) is target
    assert hash_weights(to_numpy(target)) == hash_weights(weights)


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda w: w.pop("fc.1.bias"), "missing tensor 'fc.1.bias'"),
        (lambda w: w.update(extra=np.zeros(1, np.float32)), "unexpected tensor 'extra'"),
        (lambda w: w.update({"fc.0.weight": np.zeros((5, 3), np.float32)}), r"'fc.0.weight' has shape \(5, 3\)"),
        (lambda w: w.update({"fc.0.bias": np.zeros(4, np.float64)}), "'fc.0.bias' has dtype float64"),
    ],
)
def test_load_into_names_the_first_wrong_tensor(mutate: Callable[[dict[str, np.ndarray]], object], match: str) -> None:
    weights = to_numpy(_net())
    mutate(weights)
    with pytest.raises(InvalidModelFile, match=match) as info:
        load_into(_net(), weights)
    assert info.value.reason == "wrong_architecture"


def test_a_failed_load_leaves_the_net_untouched() -> None:
    net = _net()
    before = hash_weights(to_numpy(net))
    weights = {k: np.zeros_like(v) for k, v in to_numpy(net).items()}
    weights["fc.1.bias"] = np.zeros(3, np.float32)
    with pytest.raises(InvalidModelFile):
        load_into(net, weights)
    assert hash_weights(to_numpy(net)) == before


def test_nbytes() -> None:
    assert nbytes(to_numpy(_net())) == 4 * ((3 * 4 + 4) + (4 * 2 + 2))
