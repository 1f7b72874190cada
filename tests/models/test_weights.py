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


@pytest.mark.parametrize("tensor", [
    torch.tensor(3), torch.tensor(2.5), torch.randn(3, 4), torch.randn(4, 3).T, torch.randn(2, 3, requires_grad=True),
    torch.randint(0, 5, (3,)), torch.tensor([True, False]), torch.randn(3, dtype=torch.float64), torch.randn(3).half(),
    torch.randn(6)[::2], torch.zeros(0, 3)], ids=lambda t: f"{t.dtype}{tuple(t.shape)}")
def test_fast_copies_keep_the_hashed_form(tensor: torch.Tensor) -> None:
    """``to_numpy`` and the transcript's ``exact_copy`` skip torch's general copy for CPU tensors; the arrays
    (bytes, dtype, shape, 0-d as 1-d for weights) must be what the general path gave, and never share memory."""
    from dlbc_ray.models.transcript import exact_copy

    dtype = torch.float32 if tensor.is_floating_point() else tensor.dtype
    general = np.ascontiguousarray(tensor.detach().to(device="cpu", dtype=dtype, copy=True).numpy())
    fast = to_numpy({"t": tensor})["t"]
    assert (fast.dtype, fast.shape, fast.tobytes()) == (general.dtype, general.shape, general.tobytes())
    assert fast.flags.c_contiguous and not np.shares_memory(fast, tensor.detach().numpy())
    kept, copied = tensor.detach().clone().numpy(), exact_copy(tensor)
    assert (copied.dtype, copied.shape) == (kept.dtype, kept.shape) and np.array_equal(copied, kept)
    assert not np.shares_memory(copied, tensor.detach().numpy())
