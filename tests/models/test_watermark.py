"""Uchida watermark: key derivation, filter means, the regulariser, and extraction on numpy weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

from dlbc_ray.crypto import Identity
from dlbc_ray.errors import ConfigError, InvalidModelFile, KeyFileError
from dlbc_ray.models.protect import layer_distance
from dlbc_ray.models.watermark import (
    MAX_LINEAR_HOST,
    WatermarkConfig,
    WatermarkKey,
    WatermarkRegularizer,
    bit_error_rate,
    check_ownership,
    derive_key,
    extract_bits,
    filter_mean,
    host_size,
    projection_margin,
)

HOST = "2.weight"  # (64, 128): every row, M = 8192, like the registry mlp's fc.1.weight
M = 64 * 128
ALICE, BOB = Identity.from_seed("alice", b"alice"), Identity.from_seed("bob", b"bob")


def mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))


def key_of(identity: Identity, t: int = 64) -> WatermarkKey:
    return derive_key(identity.derive("watermark"), identity.public_key, HOST, M, t)


def numpy_weights(net: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}


def train_digits(regularizers: list[WatermarkRegularizer], epochs: int = 8) -> dict[str, np.ndarray]:
    """A few Adam epochs of a small MLP on sklearn digits, with the given regulariser terms."""
    x, y = load_digits(return_X_y=True)
    xs, ys = torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(y)
    torch.manual_seed(0)
    net = mlp()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(epochs):
        for idx in torch.randperm(len(xs)).split(64):
            loss = F.cross_entropy(net(xs[idx]), ys[idx]) + sum((r(net) for r in regularizers), torch.tensor(0.0))
            opt.zero_grad()
            loss.backward()
            opt.step()
    return numpy_weights(net)


@pytest.fixture(scope="module")
def alice_marked() -> dict[str, np.ndarray]:
    return train_digits([WatermarkRegularizer(key_of(ALICE), lam=0.1)])


@pytest.fixture(scope="module")
def unmarked() -> dict[str, np.ndarray]:
    return train_digits([])


def test_embedded_mark_reads_back_with_zero_errors(alice_marked: dict[str, np.ndarray]) -> None:
    key = key_of(ALICE)
    assert bit_error_rate(alice_marked, key) == 0.0
    assert np.array_equal(extract_bits(alice_marked, key), key.bits)
    assert check_ownership(alice_marked, key)
    assert projection_margin(alice_marked, key) > 0.8


def test_another_identity_does_not_own_the_marked_model(alice_marked: dict[str, np.ndarray]) -> None:
    bob = key_of(BOB)
    assert bit_error_rate(alice_marked, bob) > 0.25
    assert not check_ownership(alice_marked, bob, max_ber=0.1)


def test_unmarked_model_reads_as_coin_flips(unmarked: dict[str, np.ndarray]) -> None:
    key = key_of(ALICE)
    assert 0.3 < bit_error_rate(unmarked, key) < 0.7
    assert projection_margin(unmarked, key) < 0.7
    assert not check_ownership(unmarked, key)


def test_keys_are_deterministic_per_secret_and_differ_across_secrets() -> None:
    a1, a2, b = key_of(ALICE), key_of(ALICE), key_of(BOB)
    assert np.array_equal(a1.x, a2.x) and np.array_equal(a1.bits, a2.bits)
    assert not np.allclose(a1.x, b.x)
    assert a1.x.shape == (M, 64) and a1.x.dtype == np.float32
    assert abs(float(a1.x.mean())) < 0.05 and abs(float(a1.x.std()) - 1.0) < 0.05


def test_bits_are_bound_to_the_public_key_not_the_secret() -> None:
    secret = ALICE.derive("watermark")
    as_alice = derive_key(secret, ALICE.public_key, HOST, 128, 128)
    as_bob = derive_key(secret, BOB.public_key, HOST, 128, 128)
    assert np.array_equal(as_alice.x, as_bob.x)
    assert np.mean(as_alice.bits != as_bob.bits) > 0.25
    assert np.array_equal(as_alice.bits, derive_key(BOB.derive("watermark"), ALICE.public_key, HOST, 128, 128).bits)
    assert as_alice.bits.dtype == np.uint8 and set(np.unique(as_alice.bits)) == {0, 1}


def test_key_needs_a_32_byte_secret_and_at_most_m_bits() -> None:
    with pytest.raises(KeyFileError):
        derive_key(b"short", ALICE.public_key, HOST, 128)
    with pytest.raises(ConfigError):
        derive_key(ALICE.derive("watermark"), ALICE.public_key, HOST, 128, 256)


def test_kept_keys_are_one_read_only_object_per_owner_and_host() -> None:
    """A validator re-derives a miner's key per submission: the kept key must be the same values, read-only
    (a caller cannot corrupt the next one's), and never another owner's, host's or length's."""
    secret = ALICE.derive("watermark")
    key = derive_key(secret, ALICE.public_key, HOST, 128, 64)
    assert derive_key(bytes(secret), ALICE.public_key, HOST, 128, 64) is key
    assert not key.x.flags.writeable and not key.bits.flags.writeable
    with pytest.raises(ValueError):
        key.x[0, 0] = 0.0
    others = [derive_key(BOB.derive("watermark"), ALICE.public_key, HOST, 128, 64),
              derive_key(secret, BOB.public_key, HOST, 128, 64), derive_key(secret, ALICE.public_key, "0.weight", 128, 64),
              derive_key(secret, ALICE.public_key, HOST, 256, 64), derive_key(secret, ALICE.public_key, HOST, 128, 32)]
    assert all(other is not key for other in others)
    assert not np.array_equal(others[0].x, key.x) and not np.array_equal(others[1].bits, key.bits)


def test_regularizers_share_the_keys_transpose_and_match_w_times_x() -> None:
    key, net = key_of(ALICE), mlp()
    first, second = WatermarkRegularizer(key), WatermarkRegularizer(key)
    assert first._xt is second._xt is key.xt and key.xt.is_contiguous()
    assert torch.equal(key.xt, torch.from_numpy(np.array(key.x)).T)
    assert torch.equal(first(net), second(net))


def test_config_has_paper_defaults_and_caps_bits_at_the_host_size() -> None:
    cfg = WatermarkConfig()
    assert (cfg.t, cfg.lam, cfg.max_ber) == (256, 0.01, 0.0)
    assert cfg.bits_for(128) == 64 and cfg.bits_for(576) == 256 and cfg.bits_for(1) == 1


def test_a_small_linear_host_keeps_every_weight() -> None:
    weight = torch.randn(10, 7)
    assert host_size((10, 7)) == 70
    assert torch.equal(filter_mean(weight), weight.reshape(-1))
    assert np.allclose(filter_mean(weight.numpy()), weight.reshape(-1).numpy())


def test_a_large_linear_host_averages_row_blocks_up_to_the_cap() -> None:
    weight = torch.randn(9, MAX_LINEAR_HOST // 4)  # 4 blocks fit: rows 0-1, 2-3, 4-5, 6-7; row 8 left out
    w = filter_mean(weight)
    assert host_size(tuple(weight.shape)) == w.shape[0] == MAX_LINEAR_HOST
    assert torch.allclose(w[: weight.shape[1]], weight[:2].mean(0))
    assert torch.allclose(w[-weight.shape[1]:], weight[6:8].mean(0))
    assert host_size((3, MAX_LINEAR_HOST * 2)) == MAX_LINEAR_HOST * 2  # Uchida's plain mean: one block


def test_conv_filter_mean_averages_filters_in_torch_layout() -> None:
    weight = torch.randn(8, 4, 3, 3, generator=torch.Generator().manual_seed(0))  # unseeded, a mean near 0 failed
    w = filter_mean(weight)
    assert host_size((8, 4, 3, 3)) == w.shape[0] == 36
    assert torch.isclose(w[2 * 9 + 1 * 3 + 2], weight[:, 2, 1, 2].mean(), atol=1e-6)  # float32 sums, any order
    assert np.allclose(filter_mean(weight.numpy()), w.numpy(), atol=1e-6)
    assert host_size((8, 4, 5)) == 20


def test_filter_mean_refuses_a_bias() -> None:
    with pytest.raises(ConfigError):
        filter_mean(np.zeros(5, dtype=np.float32))


def test_regularizer_is_lambda_times_summed_bce_and_differentiable() -> None:
    key, net = key_of(ALICE), mlp()
    loss = WatermarkRegularizer(key, lam=0.5)(net)
    w = net[2].weight.reshape(-1)
    logits = w @ torch.from_numpy(np.array(key.x))
    bits = torch.from_numpy(key.bits.astype(np.float32))
    expected = -(bits * F.logsigmoid(logits) + (1 - bits) * F.logsigmoid(-logits)).sum() * 0.5
    assert torch.isclose(loss, expected, rtol=1e-5)
    loss.backward()
    assert net[2].weight.grad is not None and net[0].weight.grad is None


def test_regularizer_names_a_missing_or_misshapen_host() -> None:
    key = key_of(ALICE)
    with pytest.raises(ConfigError, match="fc.9.weight"):
        WatermarkRegularizer(WatermarkKey("fc.9.weight", key.x, key.bits))(mlp())
    with pytest.raises(ConfigError, match="M=640"):
        WatermarkRegularizer(WatermarkKey("4.weight", key.x, key.bits))(mlp())


def test_extraction_rejects_a_missing_or_misshapen_host_tensor() -> None:
    key, weights = key_of(ALICE), numpy_weights(mlp())
    with pytest.raises(InvalidModelFile, match=HOST) as missing:
        extract_bits({k: v for k, v in weights.items() if k != HOST}, key)
    assert missing.value.reason == "wrong_architecture"
    with pytest.raises(InvalidModelFile, match=HOST) as wrong:
        bit_error_rate({**weights, HOST: np.zeros((64, 127), np.float32)}, key)
    assert wrong.value.reason == "wrong_architecture"
    with pytest.raises(InvalidModelFile) as bias:
        projection_margin({**weights, HOST: np.zeros(128, np.float32)}, key)
    assert bias.value.reason == "wrong_architecture"


def test_extraction_rejects_non_finite_weights() -> None:
    key, weights = key_of(ALICE), numpy_weights(mlp())
    weights[HOST][0, 0] = np.nan
    with pytest.raises(InvalidModelFile) as err:
        extract_bits(weights, key)
    assert err.value.reason == "non_finite"


def test_layer_distance_is_the_median_tensor_so_one_re_marked_layer_does_not_hide_a_copy() -> None:
    rng = np.random.default_rng(0)
    a = {name: rng.standard_normal((8, 8)).astype(np.float32) for name in ("l1", "l2", "l3")}
    remarked = {**a, "l2": a["l2"] + 10.0}
    assert layer_distance(remarked, a) == 0.0
    assert layer_distance({k: v * 1.01 for k, v in a.items()}, a) == pytest.approx(0.01, rel=1e-3)
    assert layer_distance({k: rng.standard_normal((8, 8)) for k in a}, a) > 0.5  # independent weights
    assert layer_distance({"l1": a["l1"]}, a) == float("inf")
