"""Provenance computes a reference's weight figures only when the rule reads them (``lineage.lazily``): the
verdict and its detail must be those of the full list, whatever the figures, and a thief costs one matching."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlbc_ray.actors import lineage
from dlbc_ray.consensus.provenance import check_derived
from dlbc_ray.models.fingerprint import Fingerprint, Reference, Similarity

FIGURE = st.floats(-1.0, 1.0)
PAIR = st.tuples(st.lists(FIGURE, min_size=2, max_size=3), FIGURE, st.lists(FIGURE, min_size=3, max_size=4))


def refs_of(figures: list[tuple[list[float], float, list[float]]]) -> tuple[list[Reference], list[Similarity]]:
    refs, sims = [], []
    for i, (units, agreement, weights) in enumerate(figures):
        fp = Fingerprint(units=(), labels=np.zeros(0, np.int16), canon=None)
        refs.append(Reference(f"ref-{i}", f"miner-{i}", "r0", f"{i:064x}", fp))
        sims.append(Similarity(units=tuple(units), agreement=agreement, weights=tuple(weights)))
    return refs, sims


@settings(max_examples=200, deadline=None)
@given(figures=st.lists(PAIR, max_size=6), model=st.sampled_from(["", "mlp", "cnn", "cnn1d"]))
def test_the_lazy_list_judges_as_the_full_list(figures, model: str) -> None:
    refs, sims = refs_of(figures)
    asked: list[str] = []
    weights = {id(r.fingerprint): s.weights for r, s in zip(refs, sims)}

    def weight_similarity(fp: Fingerprint, ref: Fingerprint) -> tuple[float, ...]:
        asked.append(next(r.name for r in refs if r.fingerprint is ref))
        return weights[id(ref)]

    with pytest.MonkeyPatch.context() as m:  # per example (a function-scoped fixture is not)
        m.setattr(lineage, "weight_similarity", weight_similarity)
        cheap = [Similarity(units=s.units, agreement=s.agreement) for s in sims]
        lazy = check_derived(lineage.lazily(Fingerprint((), np.zeros(0, np.int16)), refs, cheap), model=model)
    full = check_derived([(r.name, s.units, s.agreement, s.weights) for r, s in zip(refs, sims)], model=model)
    assert lazy == full
    if full is not None:  # nothing matched past the reference the verdict names
        named = full[1].split(":")[0].removeprefix("derived from ")
        assert all(int(a.split("-")[1]) <= int(named.split("-")[1]) for a in asked)
    else:
        assert asked == [r.name for r in refs]  # the honest case reads every reference's weights, as before


def test_a_copy_named_by_its_activations_costs_no_weight_matching(monkeypatch: pytest.MonkeyPatch) -> None:
    refs, sims = refs_of([([0.99, 0.99], 0.5, [0.0, 0.0, 0.0]), ([0.0, 0.0], 0.5, [1.0, 1.0, 1.0])])
    monkeypatch.setattr(lineage, "weight_similarity", lambda fp, ref: pytest.fail("matched weights"))
    got = check_derived(lineage.lazily(Fingerprint((), np.zeros(0, np.int16)), refs, sims), model="mlp")
    assert got is not None and got[1].startswith("derived from ref-0: hidden layer 0 matches 0.99")
