"""Secure Mapping Layer: seeds, the orthogonal map, exact fold-in, state_dict hygiene, theft."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

from dlbc_ray.errors import ConfigError, InvalidModelFile, KeyFileError
from dlbc_ray.models.sml import (
    MappedNet,
    SecureMappingLayer,
    derive_seed,
    fold_into_first_layer,
    is_valid_reveal,
    map_inputs,
    map_size,
    mapping_matrix,
    seed_commitment,
    sml_kind,
)

SECRET_A, SECRET_B = b"a" * 32, b"b" * 32
TASK = "f" * 64


class DigitsMLP(nn.Module):
    """Like the registry mlp: Linear layers over the flattened (1, 8, 8) image."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.ModuleList([nn.Linear(64, 128), nn.Linear(128, 64), nn.Linear(64, 10)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        return self.fc[2](torch.relu(self.fc[1](torch.relu(self.fc[0](x)))))


def plain_copy(net: nn.Module, weights: dict[str, np.ndarray]) -> nn.Module:
    net.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in weights.items()})
    return net


def numpy_weights(net: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}


def test_seed_is_32_bytes_deterministic_and_per_miner_and_task() -> None:
    seed = derive_seed(SECRET_A, TASK)
    assert len(seed) == 32 and seed == derive_seed(SECRET_A, TASK)
    assert seed != derive_seed(SECRET_B, TASK) and seed != derive_seed(SECRET_A, "e" * 64)
    with pytest.raises(KeyFileError):
        derive_seed(b"short", TASK)


def test_commitment_opens_only_with_its_seed() -> None:
    seed = derive_seed(SECRET_A, TASK)
    commitment = seed_commitment(seed)
    assert len(commitment) == 64 and int(commitment, 16) >= 0
    assert is_valid_reveal(seed, commitment)
    assert not is_valid_reveal(derive_seed(SECRET_B, TASK), commitment)


def test_map_is_orthogonal_float32_and_read_only() -> None:
    q = mapping_matrix(derive_seed(SECRET_A, TASK), 64)
    assert q.shape == (64, 64) and q.dtype == np.float32
    assert np.allclose(q @ q.T, np.eye(64), atol=1e-5) and np.allclose(q.T @ q, np.eye(64), atol=1e-5)
    with pytest.raises(ValueError):
        q[0, 0] = 1.0


def test_map_is_deterministic_per_seed_and_differs_across_seeds() -> None:
    seed = derive_seed(SECRET_A, TASK)
    first = mapping_matrix(seed, 32).copy()
    mapping_matrix.cache_clear()
    assert np.array_equal(first, mapping_matrix(seed, 32))
    assert not np.allclose(first, mapping_matrix(derive_seed(SECRET_B, TASK), 32), atol=0.1)
    assert not np.allclose(first, mapping_matrix(derive_seed(SECRET_A, "e" * 64), 32), atol=0.1)
    with pytest.raises(ConfigError):
        mapping_matrix(b"short", 32)


def test_kind_follows_the_first_layer() -> None:
    assert sml_kind((128, 64), (1, 8, 8)) == "dense" and map_size("dense", (1, 8, 8)) == 64
    assert sml_kind((16, 3, 3, 3), (3, 32, 32)) == "channel" and map_size("channel", (3, 32, 32)) == 3
    assert sml_kind((16, 1, 3), (1, 40)) == "channel"
    with pytest.raises(ConfigError):
        sml_kind((128, 63), (1, 8, 8))
    with pytest.raises(ConfigError):
        sml_kind((16, 2, 3, 3), (3, 32, 32))


def test_map_inputs_agrees_on_numpy_and_torch() -> None:
    rng = np.random.default_rng(0)
    q = mapping_matrix(derive_seed(SECRET_A, TASK), 3)
    x = rng.standard_normal((4, 3, 5, 5)).astype(np.float32)
    mapped = map_inputs(x, q, "channel")
    assert isinstance(mapped, np.ndarray) and mapped.dtype == np.float32
    assert np.allclose(mapped[1, :, 2, 3], q @ x[1, :, 2, 3], atol=1e-6)
    assert torch.allclose(map_inputs(torch.from_numpy(x), q, "channel"), torch.from_numpy(mapped), atol=1e-6)
    with pytest.raises(ConfigError):
        map_inputs(x[:, :2], q, "channel")
    with pytest.raises(ConfigError):
        map_inputs(x, q, "diagonal")  # type: ignore[arg-type]


def test_dense_fold_in_equals_net_on_mapped_inputs() -> None:
    torch.manual_seed(0)
    net, x = DigitsMLP(), torch.randn(16, 1, 8, 8)
    q = mapping_matrix(derive_seed(SECRET_A, TASK), 64)
    folded = fold_into_first_layer(numpy_weights(net), "fc.0.weight", q, "dense")
    expected = net(map_inputs(x, q, "dense"))
    assert torch.allclose(plain_copy(DigitsMLP(), folded)(x), expected, atol=1e-5)
    assert not torch.allclose(net(x), expected, atol=1e-2)


@pytest.mark.parametrize("conv, shape", [(nn.Conv2d, (3, 8, 8)), (nn.Conv1d, (4, 20))])
def test_channel_fold_in_equals_net_on_mapped_inputs(conv: type[nn.Module], shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(conv(shape[0], 6, kernel_size=3, padding=1), nn.ReLU(), conv(6, 5, kernel_size=3))
    q, x = mapping_matrix(derive_seed(SECRET_A, TASK), shape[0]), torch.randn(8, *shape)
    kind = sml_kind(tuple(net[0].weight.shape), shape)
    folded = fold_into_first_layer(numpy_weights(net), "0.weight", q, kind)
    plain = plain_copy(nn.Sequential(conv(shape[0], 6, kernel_size=3, padding=1), nn.ReLU(), conv(6, 5, kernel_size=3)), folded)
    assert kind == "channel"
    assert torch.allclose(plain(x), net(map_inputs(x, q, kind)), atol=1e-5)


def test_fold_in_rejects_a_missing_or_misshapen_first_layer() -> None:
    weights, q = numpy_weights(DigitsMLP()), mapping_matrix(derive_seed(SECRET_A, TASK), 64)
    with pytest.raises(InvalidModelFile, match="fc.7.weight") as missing:
        fold_into_first_layer(weights, "fc.7.weight", q, "dense")
    with pytest.raises(InvalidModelFile, match="fc.1.weight") as wrong:
        fold_into_first_layer(weights, "fc.1.weight", q, "dense")
    assert missing.value.reason == wrong.value.reason == "wrong_architecture"


def test_mapped_net_keeps_the_inner_keys_and_never_saves_q() -> None:
    inner = DigitsMLP()
    q = mapping_matrix(derive_seed(SECRET_A, TASK), 64)
    mapped = MappedNet(inner, SecureMappingLayer(q, "dense"))
    assert list(mapped.state_dict()) == list(inner.state_dict())
    assert [n for n, _ in mapped.named_parameters()] == [n for n, _ in inner.named_parameters()]
    assert not any("q" in key.split(".") or "sml" in key for key in mapped.state_dict())
    assert all(not b.requires_grad for b in mapped.sml.buffers()) and not list(mapped.sml.parameters())
    x = torch.randn(5, 1, 8, 8)
    fresh = plain_copy(DigitsMLP(), numpy_weights(mapped))
    assert torch.allclose(mapped(x), fresh(map_inputs(x, q, "dense")), atol=1e-6)


def test_mapped_net_moves_and_switches_mode_with_its_map() -> None:
    mapped = MappedNet(DigitsMLP(), SecureMappingLayer(mapping_matrix(derive_seed(SECRET_A, TASK), 64), "dense"))
    mapped.double().eval()
    assert mapped.sml.q.dtype == torch.float64 and mapped.net.fc[0].weight.dtype == torch.float64
    assert not mapped.net.training and not mapped.sml.training
    assert mapped(torch.randn(2, 1, 8, 8, dtype=torch.float64)).shape == (2, 10)


def digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    x, y = load_digits(return_X_y=True)
    xs, ys = torch.tensor(x / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8), torch.tensor(y)
    order = torch.randperm(len(xs), generator=torch.Generator().manual_seed(0))
    return xs[order[:1400]], ys[order[:1400]], xs[order[1400:]], ys[order[1400:]]


def accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((net(x).argmax(1) == y).float().mean())


def test_model_trained_through_one_map_collapses_through_another() -> None:
    xtr, ytr, xte, yte = digits()
    q_a, q_b = (mapping_matrix(derive_seed(s, TASK), 64) for s in (SECRET_A, SECRET_B))
    torch.manual_seed(0)
    mapped = MappedNet(DigitsMLP(), SecureMappingLayer(q_a, "dense"))
    opt = torch.optim.Adam(mapped.parameters(), lr=1e-2)
    for _ in range(5):
        for idx in torch.randperm(len(xtr)).split(64):
            loss = F.cross_entropy(mapped(xtr[idx]), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    weights = numpy_weights(mapped)
    honest = accuracy(plain_copy(DigitsMLP(), weights), map_inputs(xte, q_a, "dense"), yte)
    stolen = accuracy(plain_copy(DigitsMLP(), weights), map_inputs(xte, q_b, "dense"), yte)
    delivered = accuracy(plain_copy(DigitsMLP(), fold_into_first_layer(weights, "fc.0.weight", q_a, "dense")), xte, yte)
    assert honest > 0.9 and abs(delivered - honest) < 0.01
    assert stolen < 0.4
