"""BaaS fusion rules on numpy weight dicts, the ensemble, and fusing through Secure Mapping Layers."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from dlbc_ray.crypto import hash_weights
from dlbc_ray.errors import InvalidTask
from dlbc_ray.models.data import Split
from dlbc_ray.models.evaluate import evaluate, predict
from dlbc_ray.models.ensemble import EnsembleNet, ensemble_predict, evaluate_ensemble
from dlbc_ray.models.fusion import (
    Contribution,
    common_start,
    coordinate_median,
    ensemble_hash,
    fedavg,
    fuse,
    fused_net,
    stack_members,
    trim_count,
    trimmed_mean,
)
from dlbc_ray.models.nets import build_net
from dlbc_ray.models.sml import MappedNet, SecureMappingLayer, mapping_matrix
from dlbc_ray.models.weights import load_into, to_numpy

SHAPE, CLASSES = (1, 8, 8), 10
FIRST = "fc.0.weight"


def mlp(seed: int = 0) -> torch.nn.Module:
    return build_net("mlp", {"hidden": [16]}, SHAPE, CLASSES, seed=seed)


def const(value: float, **extra: np.ndarray) -> dict[str, np.ndarray]:
    return {"w": np.full((2, 3), value, dtype=np.float32), "b": np.full(3, value, dtype=np.float32), **extra}


def inputs(n: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, *SHAPE), dtype=np.float32)


# ------------------------------------------------------------------ averaging


def test_fedavg_of_identical_models_is_that_model_bit_for_bit() -> None:
    w = to_numpy(mlp())
    fused = fedavg([w, w, w], [10, 3, 7])
    assert fused.keys() == w.keys() and all(np.array_equal(fused[k], w[k]) for k in w)
    assert all(fused[k].dtype == np.float32 for k in w)


def test_fedavg_weights_by_example_counts_exactly() -> None:
    fused = fedavg([const(0.0), const(1.0)], [1, 3])
    assert np.all(fused["w"] == np.float32(0.75)) and np.all(fused["b"] == np.float32(0.75))
    assert np.all(fedavg([const(2.0), const(5.0), const(8.0)], [1, 1, 1])["w"] == 5.0)


def test_trimmed_mean_ignores_one_extreme_model_on_either_side() -> None:
    honest = [const(v) for v in (1.0, 2.0, 3.0, 4.0)]
    assert np.all(trimmed_mean([*honest, const(1e6)], k=1)["w"] == np.float32(3.0))  # mean of 2, 3, 4
    assert np.all(trimmed_mean([*honest, const(-1e6)], k=1)["w"] == np.float32(2.0))  # mean of 1, 2, 3
    assert np.all(fedavg([*honest, const(1e6)], [1] * 5)["w"] > 1e5)  # what the trimming saves us from


def test_median_of_three_with_one_garbage_model_stays_between_the_honest_ones() -> None:
    a, b = to_numpy(mlp(1)), to_numpy(mlp(1))
    b = {k: v + np.float32(0.01) for k, v in b.items()}
    garbage = {k: np.random.default_rng(9).normal(0, 1e3, v.shape).astype(np.float32) for k, v in a.items()}
    fused = coordinate_median([garbage, a, b])
    for k in a:
        assert np.all((np.minimum(a[k], b[k]) <= fused[k]) & (fused[k] <= np.maximum(a[k], b[k])))


def test_median_of_an_even_count_is_the_mean_of_the_middle_two() -> None:
    assert np.all(coordinate_median([const(1.0), const(2.0), const(4.0), const(100.0)])["w"] == 3.0)


@pytest.mark.parametrize("rule", ["fedavg", "trimmed", "median"])
def test_every_rule_gives_the_same_bytes_whatever_the_members_order(rule: str) -> None:
    members = [to_numpy(mlp(seed)) for seed in range(5)]
    counts = [5, 1, 9, 2, 7]
    fusers = {"fedavg": lambda ms, cs: fedavg(ms, cs), "trimmed": lambda ms, cs: trimmed_mean(ms, k=1),
              "median": lambda ms, cs: coordinate_median(ms)}
    hashes = {hash_weights(fusers[rule]([members[i] for i in p], [counts[i] for i in p]))
              for p in itertools.islice(itertools.permutations(range(5)), 0, 120, 7)}
    assert len(hashes) == 1


def test_integer_buffers_keep_their_maximum_whatever_the_order() -> None:
    members = [const(1.0, n=np.array(7, dtype=np.int64)), const(3.0, n=np.array(9, dtype=np.int64))]
    for ordered in (members, members[::-1]):
        fused = fedavg(ordered, [1, 1])
        assert fused["n"].dtype == np.int64 and int(fused["n"]) == 9


# ---------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(("other", "named"), [
    ({"w": np.zeros((2, 4), np.float32), "b": np.zeros(3, np.float32)}, "'w'"),
    ({"w": np.zeros((2, 3), np.float64), "b": np.zeros(3, np.float32)}, "'w'"),
    ({"w": np.zeros((2, 3), np.float32)}, "'b'"),
    ({**const(0.0), "extra": np.zeros(1, np.float32)}, "'extra'"),
])
def test_fusing_different_architectures_names_the_first_differing_tensor(other: dict[str, np.ndarray],
                                                                         named: str) -> None:
    for rule in (lambda ws: fedavg(ws, [1, 1, 1]), lambda ws: trimmed_mean(ws, k=1), coordinate_median,
                 stack_members):
        with pytest.raises(InvalidTask) as info:
            rule([const(1.0), const(2.0), other])
        assert info.value.reason == "wrong_architecture"
        assert named in str(info.value) and "model 2" in str(info.value) and "\n" not in str(info.value)


def test_trimmed_mean_needs_more_than_2k_models() -> None:
    with pytest.raises(InvalidTask, match="needs more than 4 models, got 4") as info:
        trimmed_mean([const(float(v)) for v in range(4)], k=2)
    assert info.value.reason == "too_few_models"
    assert trim_count(10, trim_fraction=0.2) == 2 and trim_count(3) == 1
    with pytest.raises(InvalidTask):
        trim_count(10, k=1, trim_fraction=0.1)
    with pytest.raises(InvalidTask):
        trim_count(10, trim_fraction=0.5)


@pytest.mark.parametrize("counts", [[1], [0, 0], [-1, 3]])
def test_fedavg_rejects_bad_example_counts(counts: list[int]) -> None:
    with pytest.raises(InvalidTask):
        fedavg([const(0.0), const(1.0)], counts)


def test_no_models_and_unknown_rules_are_refused() -> None:
    with pytest.raises(InvalidTask):
        coordinate_median([])
    with pytest.raises(InvalidTask, match="unknown fusion rule 'winner'"):
        fuse([Contribution(const(1.0))], "winner", first_layer="w")


# ------------------------------------------------------------------ ensemble


def test_ensemble_of_identical_models_predicts_like_the_model() -> None:
    net, w, x = mlp(), to_numpy(mlp(3)), inputs()
    assert np.array_equal(ensemble_predict(mlp, [w, w, w], x), predict(net, w, x))


def test_an_ensemble_is_scored_like_any_submission() -> None:
    members, x = [to_numpy(mlp(s)) for s in range(3)], inputs(200)
    test = Split(x, predict(mlp(), members[0], x))
    stacked = fuse([Contribution(m) for m in members], "ensemble", first_layer=FIRST)
    score = evaluate(fused_net("ensemble", mlp, 3), stacked, test)
    assert score == evaluate_ensemble(mlp, members, test) and 0.0 < score < 1.0
    assert isinstance(fused_net("ensemble", mlp, 3), EnsembleNet) and not isinstance(fused_net("fedavg", mlp, 3),
                                                                                       EnsembleNet)


def test_ensemble_order_and_hash_are_canonical() -> None:
    members = [to_numpy(mlp(s)) for s in range(3)]
    stacked = stack_members(members)
    assert hash_weights(stack_members(members[::-1])) == hash_weights(stacked)
    assert set(stacked) == {f"members.{i}.{k}" for i in range(3) for k in members[0]}
    hashes = [hash_weights(m) for m in members]
    assert ensemble_hash(hashes) == ensemble_hash(hashes[::-1]) != ensemble_hash(hashes[:2])
    with pytest.raises(InvalidTask):
        ensemble_hash([])
    probs = load_into(EnsembleNet([mlp() for _ in range(3)]), stacked)(torch.from_numpy(inputs()))
    assert torch.allclose(probs.sum(dim=1), torch.ones(len(probs)))


# ------------------------------------------------------- through the SML maps


def maps(n: int) -> list[np.ndarray]:
    return [mapping_matrix(bytes([i + 1]) * 32, 64) for i in range(n)]


def test_a_contributor_started_by_common_start_computes_the_common_init() -> None:
    init, x = to_numpy(mlp(5)), torch.from_numpy(inputs())
    q = maps(1)[0]
    mapped = MappedNet(load_into(mlp(), common_start(init, FIRST, q, "dense")), SecureMappingLayer(q, "dense"))
    assert torch.allclose(mapped(x), load_into(mlp(), init)(x), atol=1e-5)


def test_fuse_folds_each_map_first_so_the_fused_model_works_on_raw_inputs() -> None:
    raw, qs, x = to_numpy(mlp(5)), maps(3), inputs()
    contributions = [Contribution(common_start(raw, FIRST, q, "dense"), q, "dense", examples=i + 1)
                     for i, q in enumerate(qs)]
    for rule in ("fedavg", "trimmed-mean", "median"):
        fused = fuse(contributions, rule, first_layer=FIRST)
        assert all(np.allclose(fused[k], raw[k], atol=1e-5) for k in raw)
        assert np.array_equal(predict(mlp(), fused, x), predict(mlp(), raw, x))
    naive = fedavg([c.weights for c in contributions], [1, 2, 3])  # forgetting to fold: unrelated coordinates
    assert not np.allclose(naive[FIRST], raw[FIRST], atol=1e-2)
    stacked = fuse(contributions, "ensemble", first_layer=FIRST)
    assert np.array_equal(predict(fused_net("ensemble", mlp, 3), stacked, x), predict(mlp(), raw, x))


def test_a_contribution_needs_both_its_map_and_its_kind() -> None:
    with pytest.raises(InvalidTask):
        fuse([Contribution(to_numpy(mlp()), q=maps(1)[0])], "median", first_layer=FIRST)


# ----------------------------------------------------------------- the registry


@pytest.fixture
def geometric() -> Iterator[str]:
    """A rule a user adds in one place: the per-coordinate geometric mean of magnitudes, sign of the median."""
    from dlbc_ray.models import fusion

    def merge(raw: list[dict[str, np.ndarray]], _: list[int]) -> dict[str, np.ndarray]:
        med = coordinate_median(raw)
        return {k: (np.sign(med[k]) * np.exp(np.mean([np.log(np.abs(w[k]) + 1e-12) for w in raw], axis=0))
                    ).astype(med[k].dtype) for k in med}

    fusion.register_fusion_rule(fusion.FusionRule("geometric", merge))
    yield "geometric"
    del fusion.FUSION_RULES["geometric"]


def test_a_registered_rule_is_what_fuse_runs(geometric: str) -> None:
    from dlbc_ray.models import baas_fusion as baas

    members = [{"w": np.full(3, v, dtype=np.float32)} for v in (1.0, 4.0, 16.0)]
    fused = fuse([Contribution(weights=m, examples=1) for m in members], geometric, first_layer="w")
    assert np.allclose(fused["w"], 4.0)
    assert isinstance(fused_net(geometric, mlp, 3), torch.nn.Module) and not isinstance(fused_net(geometric, mlp, 3),
                                                                                         EnsembleNet)
    assert baas.fusion.rule_for(geometric, 1) == geometric


def test_rules_are_registered_once_and_unknown_ones_are_named() -> None:
    from dlbc_ray.models import fusion

    assert set(fusion.FUSION_RULES) >= {"fedavg", "trimmed-mean", "median", "ensemble"}
    with pytest.raises(ValueError, match="already registered"):
        fusion.register_fusion_rule(fusion.FusionRule("median", lambda raw, _: raw[0]))
    with pytest.raises(ValueError, match="already registered"):
        fusion.register_fusion_rule(fusion.FusionRule("winner", lambda raw, _: raw[0]))
    with pytest.raises(ValueError, match="fewer than 3"):
        fusion.register_fusion_rule(fusion.FusionRule("needs-three", lambda raw, _: raw[0], min_members=3))
    with pytest.raises(InvalidTask, match="unknown fusion rule 'nope'; use one of fedavg"):
        fuse([Contribution(weights={"w": np.zeros(1, np.float32)}, examples=1)], "nope", first_layer="w")
    assert fusion.rule_for("trimmed-mean", 2) == "median" and fusion.rule_for("trimmed-mean", 3) == "trimmed-mean"
