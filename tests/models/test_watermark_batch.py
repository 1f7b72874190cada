"""A ballot reads every submission's marks together, one product per key for all of them
(``watermark.bit_errors_many``, ``Bench.read_marks_many``): the counts, and so every verdict, must equal reading
each model on its own, key by key."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlbc_ray.actors.judging import Bench
from dlbc_ray.config import MINIMAL
from dlbc_ray.crypto import Identity
from dlbc_ray.errors import ConfigError, InvalidModelFile
from dlbc_ray.models.nets import build_net, net_info
from dlbc_ray.models.protect import mark_secret, read_mark, watermark_key
from dlbc_ray.models.watermark import bit_errors, bit_errors_many, derive_key, key_ring, settle
from dlbc_ray.models.weights import load_into, to_numpy
from dlbc_ray.schema import Task

PROTECTION = MINIMAL.protection
OWNERS = [Identity.from_seed(f"miner-{i}", f"batch/{i}".encode()) for i in range(5)]
HOST = net_info("mlp").watermark_layer


def mlp(seed: int = 0):  # type: ignore[no-untyped-def]
    return build_net("mlp", {}, (64,), 10, seed=seed)


def key(owner: Identity, margin_net=None):  # type: ignore[no-untyped-def]
    return watermark_key(mark_secret(owner), owner.public_key, margin_net or mlp(), "mlp", PROTECTION.watermark_bits)


@pytest.fixture(scope="module")
def models() -> list[dict[str, np.ndarray]]:
    """Owner i's model carries owner i's mark; model 4 is owner 0's, re-marked by owner 1 (a thief's disguise);
    model 5 is a fresh net that carries nobody's."""
    out = []
    for i in range(4):
        net = mlp(seed=i + 1)
        settle(net, key(OWNERS[i]), margin=1.0)
        out.append(to_numpy(net))
    stolen = load_into(mlp(), out[0])
    settle(stolen, key(OWNERS[1]), margin=0.5)
    return [*out, to_numpy(stolen), to_numpy(mlp(seed=99))]


def test_one_product_counts_what_each_model_read_alone_counts(models) -> None:
    keys = [key(o) for o in OWNERS]
    ring = key_ring(keys)
    many = bit_errors_many(models, keys)
    assert many.shape == (len(models), len(OWNERS))
    assert many.tolist() == [bit_errors(w, ring).tolist() for w in models]
    assert [row[i] for i, row in enumerate(many[:4])] == [0, 0, 0, 0]  # each owner's own mark, every bit
    assert many[4][1] == 0 and many[4][0] < 0.25 * many.max()  # the re-marker's, and the owner's under it


def test_no_model_reads_as_no_row_and_no_key_as_no_column(models) -> None:
    assert bit_errors_many([], [key(o) for o in OWNERS[:3]]).shape == (0, 3)
    assert bit_errors_many(models[:2], []).shape == (2, 0)


def test_keys_of_two_hosts_are_not_read_together(models) -> None:
    other = derive_key(OWNERS[1].derive("watermark"), OWNERS[1].public_key, "fc.0.weight", 64 * 64, 16)
    with pytest.raises(ConfigError, match="one host"):
        bit_errors_many(models[:1], [key(OWNERS[0]), other])


def test_one_bad_model_is_refused_as_alone(models) -> None:
    keys = [key(o) for o in OWNERS[:2]]
    bad = {**models[0], HOST: np.full_like(models[0][HOST], np.nan)}
    with pytest.raises(InvalidModelFile) as alone:
        bit_errors(bad, key_ring(keys))
    with pytest.raises(InvalidModelFile) as batched:
        bit_errors_many([models[1], bad], keys)
    assert batched.value.reason == alone.value.reason == "non_finite"


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 6), rows=st.integers(1, 10), cols=st.integers(1, 20), seed=st.integers(0, 2**32 - 1),
       scale=st.sampled_from([1e-30, 1e-3, 1.0, 1e6, 1e30]), zeros=st.floats(0, 1))
def test_any_finite_hosts_read_the_same_batched(n: int, rows: int, cols: int, seed: int, scale: float,
                                                 zeros: float) -> None:
    rng = np.random.default_rng(seed)
    m = rows * cols
    keys = [derive_key(o.derive("watermark"), o.public_key, "h", m, min(t, m)) for o, t in zip(OWNERS, (16, 1, 40))]
    ring = key_ring(keys)
    hosts = [(rng.standard_normal((rows, cols)) * scale).astype(np.float32) for _ in range(n)]
    for h in hosts:
        h[rng.random(h.shape) < zeros] = 0.0  # exact zeros: a projection at 0 reads as bit 0 both ways
    assert bit_errors_many([{"h": h} for h in hosts], keys).tolist() == [bit_errors({"h": h}, ring).tolist()
                                                                         for h in hosts]


def _bench() -> Bench:
    marks = {o.public_key: mark_secret(o) for o in OWNERS}
    return Bench(MINIMAL.validator, PROTECTION, marks, threading.Lock(), fetch=lambda ref: None)


def test_a_bench_reads_a_ballot_batched_as_model_by_model(models) -> None:
    bench, owners = _bench(), [o.public_key for o in OWNERS]
    spec = Task.model_construct(model=type("M", (), {"name": "mlp"})())  # only the net's name is read
    misshapen = {**models[0], HOST: models[0][HOST][:8]}
    got = bench.read_marks_many(spec, [*models, None, misshapen], owners)
    assert got[:-2] == [bench.read_marks("mlp", w, owners) for w in models]
    assert got[-2:] == [None, None]  # not given; not readable by the keys (check_marks reads it alone, refuses it)
    assert got[0] == [read_mark(models[0], key(o), PROTECTION) for o in OWNERS]


def test_a_bench_without_watermarks_reads_nothing(models) -> None:
    bench = Bench(MINIMAL.validator, PROTECTION.model_copy(update={"watermark": False}),
                  {o.public_key: mark_secret(o) for o in OWNERS}, threading.Lock(), fetch=lambda ref: None)
    spec = Task.model_construct(model=type("M", (), {"name": "mlp"})())
    assert bench.read_marks_many(spec, models, [o.public_key for o in OWNERS]) == [None] * len(models)
