"""A key ring reads N owners' marks with one product; its counts, and so every verdict, equal the key-by-key reads."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from dlbc_ray.config import ProtectionConfig
from dlbc_ray.crypto import Identity
from dlbc_ray.errors import ConfigError, InvalidModelFile
from dlbc_ray.models.protect import MarkReading, read_mark
from dlbc_ray.models.watermark import (
    WatermarkKey,
    bit_error_rate,
    bit_errors,
    chance_of_matching,
    derive_key,
    key_ring,
    settle,
)

HOST = "2.weight"  # (32, 64): every row, M = 2048
M = 32 * 64
PROTECTION = ProtectionConfig()
OWNERS = [Identity.from_seed(f"miner-{i}", f"ring/{i}".encode()) for i in range(6)]


def key_of(identity: Identity, t: int = 128, layer: str = HOST, m: int = M) -> WatermarkKey:
    return derive_key(identity.derive("watermark"), identity.public_key, layer, m, t)


def net() -> nn.Sequential:
    return nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def weights_of(model: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def one_by_one(weights: dict[str, np.ndarray], keys: list[WatermarkKey]) -> list[int]:
    return [int(round(bit_error_rate(weights, k) * k.bits.shape[0])) for k in keys]


def reading(errors: int, t: int) -> MarkReading:
    """What the validator's ``read_mark`` makes of an error count (its fields are functions of it)."""
    chance = chance_of_matching(errors, t)
    return MarkReading(t=t, errors=errors, ber=errors / t, chance=chance, owned=errors / t <= PROTECTION.max_ber,
                       carried=chance < PROTECTION.foreign_p)


@pytest.fixture(scope="module")
def marked() -> tuple[dict[str, np.ndarray], list[WatermarkKey]]:
    """A model carrying owner 0's mark, then re-marked by owner 1 (a thief's disguise): both marks read."""
    model = net()
    keys = [key_of(o) for o in OWNERS]
    settle(model, keys[0], margin=1.0)
    settle(model, keys[1], margin=0.5)
    return weights_of(model), keys


def test_ring_counts_and_verdicts_equal_the_key_by_key_reads(marked) -> None:
    weights, keys = marked
    errors = bit_errors(weights, key_ring(keys))
    assert errors.tolist() == one_by_one(weights, keys)
    assert [reading(int(e), 128) for e in errors] == [read_mark(weights, k, PROTECTION) for k in keys]
    assert errors[1] == 0 and reading(int(errors[0]), 128).carried  # the re-marker's mark, the owner's under it
    assert all(30 < e < 98 for e in errors[2:])  # ... and nobody else's (coin flips around T/2)


def test_ring_order_does_not_matter(marked) -> None:
    weights, keys = marked
    order = [3, 0, 5, 1, 4, 2]
    assert bit_errors(weights, key_ring([keys[i] for i in order])).tolist() == [
        one_by_one(weights, keys)[i] for i in order]


def test_keys_of_different_lengths_share_a_ring(marked) -> None:
    weights, _ = marked
    keys = [key_of(o, t) for o, t in zip(OWNERS, (8, 128, 256, 1, 64, 1024))]
    assert bit_errors(weights, key_ring(keys)).tolist() == one_by_one(weights, keys)


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 12), cols=st.integers(1, 24), ts=st.lists(st.integers(1, 32), min_size=1, max_size=5),
       seed=st.integers(0, 2**32 - 1), scale=st.sampled_from([1e-30, 1e-3, 1.0, 1e6, 1e30]),
       zeros=st.floats(0, 1))
def test_any_finite_host_reads_the_same_in_a_ring(rows: int, cols: int, ts: list[int], seed: int, scale: float,
                                                   zeros: float) -> None:
    rng = np.random.default_rng(seed)
    host = (rng.standard_normal((rows, cols)) * scale).astype(np.float32)
    host[rng.random(host.shape) < zeros] = 0.0  # exact zeros: projections at 0 read as bit 0 both ways
    m = rows * cols
    keys = [key_of(OWNERS[i % len(OWNERS)], min(t, m), "h", m) for i, t in enumerate(ts)]
    weights = {"h": host}
    assert bit_errors(weights, key_ring(keys)).tolist() == one_by_one(weights, keys)


def test_a_ring_refuses_what_a_single_key_refuses(marked) -> None:
    weights, keys = marked
    ring = key_ring(keys[:3])
    cases = {"wrong_architecture": {k: v for k, v in weights.items() if k != HOST},
             "non_finite": {**weights, HOST: np.where(np.eye(32, 64, dtype=bool), np.nan, weights[HOST])}}
    cases["misshapen"] = {**weights, HOST: weights[HOST][:16]}
    for name, bad in cases.items():
        with pytest.raises(InvalidModelFile) as single:
            bit_error_rate(bad, keys[0])
        with pytest.raises(InvalidModelFile) as ringed:
            bit_errors(bad, ring)
        assert ringed.value.reason == single.value.reason, name


def test_a_ring_holds_keys_of_one_host_only() -> None:
    with pytest.raises(ConfigError, match="at least one"):
        key_ring([])
    with pytest.raises(ConfigError, match="one host"):
        key_ring([key_of(OWNERS[0]), key_of(OWNERS[1], layer="0.weight")])
    with pytest.raises(ConfigError, match="one host"):
        key_ring([key_of(OWNERS[0]), key_of(OWNERS[1], m=M // 2)])


def test_a_ring_is_read_only() -> None:
    ring = key_ring([key_of(o) for o in OWNERS[:2]])
    for array in (ring.x, ring.bits, ring.bounds):
        with pytest.raises(ValueError):
            array[0] = 1
