"""The provenance detector on its own: disguises of real trained models (known bad) against independently
trained honest models (known good), for each built-in net, plus the rule, the probes and the reference set.

Models come from ``benchmarks/provenance.py``'s ``Lab``: honest miners trained the way miners train (the task's
shared init, each behind its own mapping layer, its own mark, MINIMAL's 2 epochs) and the thief's disguises.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from benchmarks._common import identity
from benchmarks.provenance import NETS, Lab, Specimen
from dlbc_ray.consensus.provenance import AGREEMENT_THRESHOLD, UNIT_THRESHOLD, compute_derived_reason
from dlbc_ray.consensus.verdicts import check_provenance
from dlbc_ray.models import watermark
from dlbc_ray.models.data import Split, load_builtin
from dlbc_ray.models.disguise import embed_mark, layer_chain, permute_and_rescale
from dlbc_ray.models.fingerprint import Fingerprint, Reference, ReferenceSet, compare, probe_inputs
from dlbc_ray.models.weights import load_into, to_numpy
from dlbc_ray.schema import Verdict

# Disguises the detector must catch on every net, and those it must catch on the mlp (on the conv nets a
# fine-tuned or partly reset copy is not told from honest work: see benchmarks/provenance.py).
EVERY_NET = ("permuted", "permuted+noise")
MLP_ONLY = ("permuted+fine-tune", "partial-reuse")


@pytest.fixture(scope="module", autouse=True)
def one_thread():  # type: ignore[no-untyped-def]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=list(NETS))
def lab(request: pytest.FixtureRequest) -> tuple[Lab, list[Specimen]]:
    model = request.param
    lab = Lab(model, load_builtin(NETS[model]))
    return lab, [lab.honest(0), lab.honest(1)]


def similar(lab: Lab, a: Specimen, b: Specimen):  # type: ignore[no-untyped-def]
    """As a validator compares them: chance from random nets, or from ``a``'s own shared start."""
    return lab.similarity(a, lab.fingerprint(b))


# ---------------------------------------------------------------- known good / known bad


def test_independently_trained_honest_models_are_not_derived(lab: tuple[Lab, list[Specimen]]) -> None:
    bench, (a, b) = lab
    for x, y in ((a, b), (b, a)):
        sim = similar(bench, x, y)
        assert compute_derived_reason(sim.units, sim.agreement) is None, sim
        assert max(sim.units) < UNIT_THRESHOLD - 0.05 and sim.agreement < AGREEMENT_THRESHOLD - 0.1, sim


@pytest.mark.parametrize("kind", EVERY_NET + MLP_ONLY)
def test_every_disguise_of_a_model_is_derived_from_it(lab: tuple[Lab, list[Specimen]], kind: str) -> None:
    bench, (victim, _) = lab
    if kind in MLP_ONLY and bench.model != "mlp":
        pytest.skip("not claimed on conv nets (measured in benchmarks/provenance.py)")
    fake = bench.disguise(kind, victim, identity("thief", 0))
    assert not any(np.array_equal(fake.weights[k], victim.weights[k]) for k in victim.weights if k.endswith("weight"))
    key = bench.key(fake.who, bench.net())
    assert watermark.bit_error_rate(fake.weights, key) == 0.0  # the thief's own mark reads back
    sim = similar(bench, fake, victim)
    reason = compute_derived_reason(sim.units, sim.agreement)
    assert reason is not None and max(sim.units) >= UNIT_THRESHOLD + 0.05, sim


def test_an_exact_reparametrization_matches_in_every_layer(lab: tuple[Lab, list[Specimen]]) -> None:
    bench, (victim, _) = lab
    moved = Specimen("moved", permute_and_rescale(victim.weights, np.random.default_rng(3)), victim.seed, victim.who)
    sim = similar(bench, moved, victim)
    assert min(sim.units) > 0.99 and sim.agreement == 1.0, sim


# ------------------------------------------------------------------- the disguise itself


@pytest.mark.parametrize("model", list(NETS))
def test_permuting_and_rescaling_keeps_the_function_and_changes_every_hidden_tensor(model: str) -> None:
    bench = Lab(model, load_builtin(NETS[model]))
    weights = to_numpy(bench.net(seed=5))
    moved = permute_and_rescale(weights, np.random.default_rng(0))
    x = torch.from_numpy(bench.probes)
    with torch.no_grad():
        before, after = load_into(bench.net(), weights)(x), load_into(bench.net(), moved)(x)
    assert torch.allclose(before, after, atol=1e-5, rtol=1e-4)
    chain = layer_chain(weights)
    assert all(not np.allclose(moved[f"{name}.weight"], weights[f"{name}.weight"]) for name in chain)


@pytest.mark.parametrize("model", list(NETS))
def test_embed_mark_writes_every_bit(model: str) -> None:
    bench = Lab(model, load_builtin(NETS[model]))
    weights = to_numpy(bench.net(seed=5))
    key = bench.key(identity("thief", 0), bench.net())
    assert watermark.bit_error_rate(weights, key) > 0.2
    marked = embed_mark(weights, key, 0.05)
    assert watermark.bit_error_rate(marked, key) == 0.0
    assert min(watermark.signed_margins(marked, key)) > 0.04
    assert all(np.array_equal(marked[k], weights[k]) for k in weights if k != key.layer)


# ---------------------------------------------------------------------------- the rule


@given(units=st.lists(st.floats(-1, 1), max_size=5), agreement=st.floats(0, 1))
def test_the_rule_is_a_threshold_on_the_best_layer_or_the_agreement(units: list[float], agreement: float) -> None:
    derived = compute_derived_reason(units, agreement) is not None
    assert derived == (max(units, default=-1.0) >= UNIT_THRESHOLD or agreement >= AGREEMENT_THRESHOLD)


def test_check_provenance_names_the_first_model_it_was_derived_from() -> None:
    assert check_provenance([("aaa", (0.1, 0.2), 0.5)]) is None
    assert check_provenance([]) is None
    verdict, detail = check_provenance([("aaa", (0.1,), 0.5), ("bbb", (0.95, 0.2), 0.5), ("ccc", (1.0,), 1.0)])  # type: ignore[misc]
    assert verdict is Verdict.DERIVED and "bbb" in detail and "layer 0" in detail


# ------------------------------------------------------------------ probes, comparing, memory


def test_probes_are_fixed_by_their_key_and_differ_between_keys() -> None:
    test = load_builtin("digits").test
    a, b, c = probe_inputs(test, "k1"), probe_inputs(test, "k1"), probe_inputs(test, "k2")
    assert a.shape == (384, *test.x.shape[1:]) and a.dtype == np.float32 and np.isfinite(a).all()
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_probes_of_a_one_class_split_are_still_made() -> None:
    test = Split(x=np.random.default_rng(0).random((10, 4)).astype(np.float32), y=np.zeros(10, dtype=np.int64))
    assert probe_inputs(test, "k", n=30).shape == (30, 4)


def _fp(rng: np.random.Generator, widths: tuple[int, ...] = (6, 4)) -> Fingerprint:
    units = []
    for w in widths:
        a = rng.standard_normal((20, w))
        a -= a.mean(0)
        units.append((a / np.linalg.norm(a, axis=0)).astype(np.float32))
    return Fingerprint(units=tuple(units), labels=rng.integers(0, 3, 20).astype(np.int16))


def test_comparing_against_many_at_once_equals_one_by_one() -> None:
    rng = np.random.default_rng(0)
    fp, refs, nulls, start = _fp(rng), [_fp(rng), _fp(rng, (6,)), _fp(rng, (3, 5))], [_fp(rng)], _fp(rng)
    together = compare(fp, refs, nulls, start)
    assert together == [compare(fp, [r], nulls, start)[0] for r in refs]
    same = compare(fp, [fp], nulls)[0]
    assert all(u == pytest.approx(1.0) for u in same.units) and same.agreement == 1.0
    assert compare(fp, [], nulls) == []


def _ref(h: str, round_id: str = "r1", miner: str = "m") -> Reference:
    return Reference(h[:12], miner, round_id, h, _fp(np.random.default_rng(len(h))))


def test_the_reference_set_is_bounded_and_keeps_the_latest_winners_and_the_latest_others() -> None:
    refs = ReferenceSet(winners=2, recent=2)
    for i in range(6):  # each round: two valid models, the first of which wins (named won the round after)
        won = {f"w{k}" for k in range(i)}
        refs.remember("k", _ref(f"w{i}", f"r{i}"), won)
        refs.remember("k", _ref(f"o{i}", f"r{i}"), won)
    kept = {r.model_hash for r in refs.earlier("k", round_id="next")}
    assert len(refs) == 4 and kept == {"w3", "w4", "w5", "o5"}
    refs.remember("other", _ref("x"), won=set())
    assert len(refs) == 5 and [r.model_hash for r in refs.earlier("other", round_id="r2")] == ["x"]


def test_old_winners_never_crowd_out_the_latest_round() -> None:
    refs = ReferenceSet(winners=2, recent=2)
    for i in range(10):
        refs.remember("k", _ref(f"w{i}", f"r{i}"), {f"w{k}" for k in range(i)})
    assert "w9" in {r.model_hash for r in refs.earlier("k", round_id="next")}


def test_the_reference_set_offers_only_other_rounds() -> None:
    refs = ReferenceSet()
    refs.remember("k", _ref("a", "r1"), won=set())
    refs.remember("k", _ref("b", "r2"), won=set())
    assert [r.model_hash for r in refs.earlier("k", round_id="r2")] == ["a"]
    assert refs.earlier("unknown", round_id="r2") == []


def test_what_the_shared_start_explains_is_no_evidence() -> None:
    """A layer that matches the reference only as well as it matches the public init scores 0 there."""
    rng = np.random.default_rng(1)
    fp, null = _fp(rng), _fp(rng)
    near_start = Fingerprint(units=fp.units, labels=fp.labels)
    assert compare(fp, [fp], [null])[0].units[0] == pytest.approx(1.0)
    assert compare(fp, [fp], [null], near_start)[0].units == (0.0, 0.0)
