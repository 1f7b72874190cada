"""A validator's mark keys are bounded by a byte budget, and eviction never changes a reading.

``judging.KeyCache`` replaced a dict that kept every key a validator ever derived (8 MiB per registered
miner on the mlp host). Pure tests, real keys (no Ray): the cache is checked against a plain LRU model,
and an evicted key is derived again from its secret (the process-wide ``watermark`` cache cleared, so it
really is derived again) and must be bitwise the key it was, reading every model the same.
"""

from __future__ import annotations

import gc
import threading
import weakref
from collections import OrderedDict

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlbc_ray.actors import judging
from dlbc_ray.actors.judging import Bench, KeyCache, key_bytes, mark_key
from dlbc_ray.config import ProtectionConfig, ValidatorConfig
from dlbc_ray.models import watermark
from dlbc_ray.models.nets import net_info
from dlbc_ray.schema import Verdict
from tests.actors.test_validator_mark_candidates import REGISTRY
from tests.actors.test_validator_verdicts import PROTECTION as PROTECTION_VERDICTS
from tests.actors.test_validator_verdicts import VICTIM, Setup, _copy_noise, judge, setup, validator

__all__ = ["setup"]  # the module-scoped fixture: the victim's model is trained once

PROTECTION = ProtectionConfig()
HOST = net_info("mlp").watermark_layer  # fc.1.weight, 64 x 128: M = 8192, the demo's host
OWNERS = [f"owner-{i:02d}" for i in range(20)]
MARKS = {o: bytes([i + 1]) * watermark.SECRET_BYTES for i, o in enumerate(OWNERS)}


def weights(seed: int) -> dict[str, np.ndarray]:
    return {HOST: np.random.default_rng(seed).standard_normal((64, 128)).astype(np.float32)}


def fake_key(nbytes: int) -> watermark.WatermarkKey:
    return watermark.WatermarkKey(layer=HOST, x=np.zeros(nbytes // 4, np.float32), bits=np.zeros(0, np.uint8))


def bench(budget_mb: float, marks: dict[str, bytes] = MARKS) -> Bench:
    return Bench(ValidatorConfig(mark_key_cache_mb=budget_mb), PROTECTION, marks, threading.Lock(), lambda ref: None)


@settings(max_examples=200, deadline=None)
@given(n=st.integers(0, 5), reads=st.lists(st.integers(0, 9), max_size=60))
def test_a_budget_of_n_keys_holds_the_n_most_recently_used(n: int, reads: list[int]) -> None:
    size = 4096
    cache, model = KeyCache(n * size), OrderedDict[int, None]()
    for r in reads:
        kid = (f"o{r}", "mlp", (64, 128))
        if cache.get(kid) is None:
            cache[kid] = fake_key(size)
        model[r] = None
        model.move_to_end(r)
        while len(model) > n:
            model.popitem(last=False)
        assert len(cache) <= n and cache.held == len(cache) * size <= cache.budget
        assert [o for o, _, _ in cache] == [f"o{r}" for r in model]


def test_a_key_replaced_under_its_own_id_is_counted_once() -> None:
    cache = KeyCache(10_000)
    for _ in range(3):
        cache[("a", "mlp", None)] = fake_key(4000)
    assert len(cache) == 1 and cache.held == 4000


def test_a_key_larger_than_the_budget_is_returned_but_not_kept() -> None:
    cache = KeyCache(0)
    key = mark_key(cache, MARKS, PROTECTION, OWNERS[0], "mlp", weights(0))
    assert key.x.shape == (8192, 256) and len(cache) == 0 and cache.held == 0


def test_an_evicted_key_is_derived_again_bitwise_the_same_and_reads_the_same() -> None:
    cache, w = KeyCache(key_bytes(mark_key({}, MARKS, PROTECTION, OWNERS[0], "mlp", weights(0)))), weights(0)
    first = mark_key(cache, MARKS, PROTECTION, OWNERS[0], "mlp", w)
    mark_key(cache, MARKS, PROTECTION, OWNERS[1], "mlp", w)  # a budget of one key: owner 0's is evicted
    assert [o for o, _, _ in cache] == [OWNERS[1]]
    watermark._derived_key.cache_clear()  # the process-wide cache would hand back the very same object
    again = mark_key(cache, MARKS, PROTECTION, OWNERS[0], "mlp", w)
    assert again is not first and again.layer == first.layer
    assert again.x.tobytes() == first.x.tobytes() and again.bits.tobytes() == first.bits.tobytes()
    # a marked model reads 0 errors under its owner's key, a stranger ~T/2: both the same with either copy
    x = first.x.astype(np.float64)
    host = x @ np.linalg.solve(x.T @ x, np.where(first.bits == 1, 1.0, -1.0))  # w X = +-1, bit by bit
    marked = {HOST: host.reshape(64, 128).astype(np.float32)}
    models = [marked, weights(1), weights(2)]
    assert (watermark.bit_errors_many(models, [first]) == watermark.bit_errors_many(models, [again])).all()
    assert watermark.bit_errors_many([marked], [again])[0, 0] == 0


def test_an_evicted_key_is_let_go() -> None:
    """The cache itself keeps no reference: once the process-wide cache is cleared, an evicted key is freed."""
    cache = KeyCache(key_bytes(mark_key({}, MARKS, PROTECTION, OWNERS[0], "mlp", weights(0))))
    ref = weakref.ref(mark_key(cache, MARKS, PROTECTION, OWNERS[0], "mlp", weights(0)))
    mark_key(cache, MARKS, PROTECTION, OWNERS[1], "mlp", weights(0))
    watermark._derived_key.cache_clear()
    gc.collect()
    assert ref() is None and len(cache) == 1


def test_a_small_budget_reads_every_mark_as_an_unbounded_one() -> None:
    """Readings of 6 owners in two models: a one-key budget evicts on every key read, reads all the same."""
    models, owners = [weights(i) for i in range(2)], OWNERS[:6]
    wide, narrow = bench(1_000), bench(8.5)
    expected = [wide.read_marks("mlp", m, owners) for m in models]
    watermark._derived_key.cache_clear()
    for m, want in zip(models, expected):
        assert narrow.read_marks("mlp", m, owners) == want
        assert len(narrow.keys) <= 1 and narrow.keys.held <= narrow.keys.budget
    assert len(wide.keys) == len(owners)


def test_the_default_budget_keeps_every_key_of_a_16_miner_network() -> None:
    """``all_marks_up_to`` = 16 registered miners are all read each ballot: none of their keys is evicted."""
    by = bench(ValidatorConfig().mark_key_cache_mb, {o: MARKS[o] for o in OWNERS[:16]})
    by.read_marks("mlp", weights(0))
    assert len(by.keys) == 16 == PROTECTION.all_marks_up_to


def test_a_negative_budget_is_refused() -> None:
    with pytest.raises(ValueError, match="mark_key_cache_mb"):
        ValidatorConfig(mark_key_cache_mb=-1)


def test_a_registry_past_the_budget_still_names_a_lone_copy(setup: Setup) -> None:
    """64 registered, all read (bound 64), default budget (20 mlp keys): keys are evicted within the ballot, and
    the copy of a model nobody submitted is still named by its victim's mark, as in test_validator_mark_candidates."""
    by = validator(PROTECTION_VERDICTS.model_copy(update={"all_marks_up_to": 64}), registered=REGISTRY)
    (vote,) = judge(setup, _copy_noise(setup), by=by)
    assert vote.verdict is Verdict.STOLEN and f"watermark of miner {VICTIM.public_key[:12]}" in vote.detail
    assert 0 < len(by._bench.keys) < len(REGISTRY) and by._bench.keys.held <= by._bench.keys.budget


def test_a_ballot_read_holds_no_more_keys_at_once_than_the_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading 6 owners under a two-key budget passes at most two keys to each product (a ballot of 64 owners held
    all 64 at once, 512 MiB, whatever the cache), and reads the same as one product of all six."""
    real, widths = watermark.bit_errors_many, []

    def spy(models: list[dict[str, np.ndarray]], keys: list[watermark.WatermarkKey]) -> np.ndarray:
        widths.append(len(keys))
        return real(models, keys)

    models, owners = [weights(i) for i in range(2)], OWNERS[:6]
    expected = [bench(1_000).read_marks("mlp", m, owners) for m in models]
    monkeypatch.setattr(watermark, "bit_errors_many", spy)
    narrow = bench(16.5)
    assert [narrow.read_marks("mlp", m, owners) for m in models] == expected
    assert widths == [2, 2, 2] * 2


def test_past_the_budget_every_held_key_is_used_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ballots of the same 6 owners under a 3-key budget: each ballot after the first derives only the 3 keys it does
    not hold (read in ballot order, least recently used eviction drops each key just before it is needed: 6 of 6)."""
    derived: list[str] = []
    real = judging.watermark_key

    def spy(secret: bytes, owner: str, *args: object) -> watermark.WatermarkKey:
        derived.append(owner)
        return real(secret, owner, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(judging, "watermark_key", spy)
    by, owners, w = bench(24.5), OWNERS[:6], weights(0)
    readings = [by.read_marks("mlp", w, owners) for _ in range(3)]
    assert len(derived) == 6 + 3 + 3 and readings[0] == readings[1] == readings[2] and len(by.keys) == 3
