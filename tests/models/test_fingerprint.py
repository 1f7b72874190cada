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
from benchmarks.provenance import NETS, Lab, Row, Specimen, claimed, lead
from dlbc_ray.consensus.provenance import (AGREEMENT_THRESHOLD, MEASURED, UNIT_THRESHOLD, WEIGHT_THRESHOLD, check_derived,
                                           compute_derived_reason, get_thresholds)
from dlbc_ray.consensus.verdicts import check_provenance
from dlbc_ray.models import watermark
from dlbc_ray.models.alignment import canonical, layer_similarity, match
from dlbc_ray.models.data import Split, load_builtin
from dlbc_ray.models.disguise import embed_mark, kill_units, layer_chain, permute_and_rescale, prune
from dlbc_ray.models.fingerprint import Fingerprint, Reference, ReferenceSet, compare, probe_inputs
from dlbc_ray.models.weights import load_into, to_numpy
from dlbc_ray.schema import Verdict

# Disguises the detector must catch (benchmarks/provenance.py's ``claimed``): every one but a brief
# distillation, and on the conv nets but a reset of a fully connected layer (measured, not claimed).
KINDS = ("permuted", "permuted+noise", "pruned", "dead-units", "permuted+fine-tune", "reset-first", "partial-reuse",
         "reset-last")


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


def _row(bench: Lab, pair: str, a: Specimen, b: Specimen) -> Row:
    sim = similar(bench, a, b)
    derived = compute_derived_reason(sim.units, sim.agreement, sim.weights, model=bench.model) is not None
    return Row(bench.model, pair, sim.units, sim.agreement, sim.weights, 0.0, derived)


def test_independently_trained_honest_models_are_not_derived(lab: tuple[Lab, list[Specimen]]) -> None:
    bench, (a, b) = lab
    for x, y in ((a, b), (b, a)):
        row = _row(bench, "honest", x, y)
        assert not row.derived and lead(row)[0] < -0.05, row  # every figure clear of its threshold


@pytest.mark.parametrize("kind", KINDS)
def test_every_claimed_disguise_of_a_model_is_derived_from_it(lab: tuple[Lab, list[Specimen]], kind: str) -> None:
    bench, (victim, _) = lab
    chain = layer_chain(victim.weights)
    kind = {"reset-first": f"reset {chain[0]}", "reset-last": f"reset {chain[-1]}"}.get(kind, kind)
    fake = bench.disguise(kind, victim, identity("thief", 0))
    row = _row(bench, kind, fake, victim)
    if not claimed(row):
        pytest.skip(f"{kind} on {bench.model}: measured, not claimed (benchmarks/provenance.py)")
    assert not any(np.array_equal(fake.weights[k], victim.weights[k]) for k in victim.weights if k.endswith("weight"))
    key = bench.key(fake.who, bench.net())
    assert watermark.bit_error_rate(fake.weights, key) == 0.0  # the thief's own mark reads back
    assert row.derived, row


def test_an_exact_reparametrization_matches_in_every_layer(lab: tuple[Lab, list[Specimen]]) -> None:
    bench, (victim, _) = lab
    moved = Specimen("moved", permute_and_rescale(victim.weights, np.random.default_rng(3)), victim.seed, victim.who)
    sim = similar(bench, moved, victim)
    assert min(sim.units) > 0.99 and sim.agreement == 1.0 and min(sim.weights) > 0.999, sim


def test_weight_matching_recovers_the_permutation(lab: tuple[Lab, list[Specimen]]) -> None:
    """The thief's own permutation, found again from the weights alone (both ends of the chain are fixed bases)."""
    bench, (victim, _) = lab
    moved = Specimen("moved", permute_and_rescale(victim.weights, np.random.default_rng(4)), victim.seed, victim.who)
    ref, other = bench.fingerprint(victim).canon, bench.fingerprint(moved).canon
    assert ref is not None and other is not None
    for k, perm in enumerate(match(ref, other)):
        assert np.allclose(other.layers[k][perm], ref.layers[k][:, _order(ref, other, k)], atol=1e-4)


def _order(ref, other, k):  # type: ignore[no-untyped-def]
    """``other``'s inputs of layer ``k`` in ``ref``'s order (the previous layer's matching; raw inputs: as they are)."""
    if k == 0:
        return slice(None)
    prev = match(ref, other)[k - 1]
    return np.argsort(np.concatenate([prev, [ref.layers[k].shape[1] - 1]]))


def test_pruning_and_dead_units_leave_most_units_of_every_kept_layer_shared(lab: tuple[Lab, list[Specimen]]) -> None:
    """Medians, not means: 30% pruned and a quarter of the units dead still leave the majority to speak."""
    bench, (victim, _) = lab
    rng = np.random.default_rng(5)
    thinned = kill_units(prune(permute_and_rescale(victim.weights, rng), 0.3), rng, 0.25)
    ref = bench.fingerprint(victim).canon
    got = layer_similarity(ref, bench.fingerprint(Specimen("thin", thinned, victim.seed, victim.who)).canon)  # type: ignore[arg-type]
    assert len(got) == len(layer_chain(victim.weights)), got
    assert compute_derived_reason((), 0.0, got, model=bench.model) is not None, got  # by the weights alone


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


@given(model=st.sampled_from(["", "unknown-net", *MEASURED]), data=st.data())
def test_any_one_figure_past_its_threshold_makes_a_pair_one_model(model: str, data: st.DataObject) -> None:
    """Per layer, per net: one kept layer is enough, whatever the others say (a thief resets one layer)."""
    t = get_thresholds(model)
    n_units = len(t.units) or data.draw(st.integers(0, 4))
    n_weights = len(t.weights) or data.draw(st.integers(0, 5))
    units = data.draw(st.lists(st.floats(-1, 1), min_size=n_units, max_size=n_units))
    weights = data.draw(st.lists(st.floats(-1, 1), min_size=n_weights, max_size=n_weights))
    agreement = data.draw(st.floats(0, 1))
    expected = (any(u >= th for u, th in zip(units, t.units or (UNIT_THRESHOLD,) * n_units))
                or agreement >= t.agreement
                or any(w >= th for w, th in zip(weights, t.weights or (WEIGHT_THRESHOLD,) * n_weights)))
    assert (compute_derived_reason(units, agreement, weights, model=model) is not None) == expected


def test_a_net_measured_at_another_depth_gets_the_defaults() -> None:
    """mlp's thresholds are for its default 3 layers; a 2-layer mlp is judged by the cautious defaults."""
    assert compute_derived_reason((), 0.0, (0.7, 0.0, 0.0), model="mlp") is None
    assert compute_derived_reason((), 0.0, (0.80, 0.0, 0.0), model="mlp") is not None  # mlp's first layer: 0.75
    assert compute_derived_reason((), 0.0, (0.80, 0.0), model="mlp") is None  # the default: 0.90


def test_check_derived_names_the_first_model_and_the_layer() -> None:
    assert check_derived([("aaa", (0.1,), 0.5, (0.1, 0.1, 0.1))], model="mlp") is None
    assert check_derived([], model="mlp") is None
    found = check_derived([("aaa", (0.1,), 0.5, (0.1, 0.1, 0.1)), ("bbb", (0.1,), 0.5, (0.1, 0.1, 0.95))], model="mlp")
    assert found is not None and found[0] is Verdict.DERIVED and "bbb" in found[1] and "layer 2" in found[1], found


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


def test_a_winner_read_back_from_the_chain_joins_the_winners() -> None:
    refs = ReferenceSet(winners=2, recent=2)
    refs.remember("k", _ref("a", "r1"), won=set())
    assert refs.knows("k", "a") and not refs.knows("k", "b") and not refs.knows("other", "a")
    for h in ("a", "b", "c"):  # "a" moves from the recent models to the winners; the oldest winner leaves
        refs.remember_winner("k", _ref(h, ""))
    assert {r.model_hash for r in refs.earlier("k", round_id="r9")} == {"b", "c"} and len(refs) == 2


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


# ------------------------------------------------------------------ weights, gauge-fixed


def test_the_canonical_gauge_undoes_any_positive_rescaling() -> None:
    bench = Lab("cnn", load_builtin("digits"))
    w = to_numpy(bench.net(seed=3))
    rng = np.random.default_rng(0)
    moved = permute_and_rescale(w, rng, spread=8.0)
    a, b = canonical(w, bench.init, "conv.0.weight"), canonical(moved, bench.init, "conv.0.weight")
    perms = match(a, b)
    assert all(sorted(p) == list(range(len(p))) for p in perms)  # permutations, never many-to-one
    assert layer_similarity(a, b) == pytest.approx((1.0,) * 4, abs=1e-4)


def test_an_independent_model_shares_no_layer() -> None:
    """Two random nets (nothing learned alike; an all-zero start, so their whole weights are the deltas): every
    layer far below any threshold, though weight matching picks the best of all pairings."""
    bench = Lab("mlp", load_builtin("digits"))
    zero = {k: np.zeros_like(v) for k, v in to_numpy(bench.net(seed=0)).items()}
    a = canonical(to_numpy(bench.net(seed=1)), zero, "fc.0.weight")
    b = canonical(to_numpy(bench.net(seed=2)), zero, "fc.0.weight")
    assert max(layer_similarity(a, b)) < 0.5


def test_models_of_other_shapes_are_not_compared() -> None:
    bench = Lab("mlp", load_builtin("digits"))
    a = canonical(to_numpy(bench.net()), bench.init, "fc.0.weight")
    wide = {k: np.concatenate([v, v]) if k == "fc.2.bias" else v for k, v in bench.init.items()}
    wide["fc.2.weight"] = np.concatenate([bench.init["fc.2.weight"]] * 2)
    assert layer_similarity(a, canonical(wide, wide, "fc.0.weight")) == ()


def test_a_one_output_net_has_no_labels_to_agree_on() -> None:
    """A regression net's argmax is 0 on every probe for every model: agreement would call any two the same."""
    rng = np.random.default_rng(2)
    a, b = _fp(rng), _fp(rng)
    a, b = Fingerprint(a.units, np.zeros(0, np.int16)), Fingerprint(b.units, np.zeros(0, np.int16))
    assert compare(a, [b], [_fp(rng)])[0].agreement == 0.0
