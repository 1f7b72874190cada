"""The nets registry: fixed layer names, parameter checks, sizes and FLOPs."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from dlbc_ray.config import Limits
from dlbc_ray.errors import InvalidTask
from dlbc_ray.models.nets import NETS, build_net, count_parameters, estimate_flops, net_footprint

NATURAL_SHAPES = {"mlp": (1, 8, 8), "cnn": (1, 8, 8), "cnn1d": (1, 40)}


@pytest.mark.parametrize("name", sorted(NETS))
def test_nets_give_logits_and_expose_their_special_layers(name: str) -> None:
    info, shape = NETS[name], NATURAL_SHAPES[name]
    net = build_net(name, {}, shape, 10)
    assert net(torch.zeros(5, *shape)).shape == (5, 10)
    modules = dict(net.named_modules())
    for key in (info.watermark_layer, info.first_layer):
        assert isinstance(modules[key.removesuffix(".weight")], nn.Linear | nn.Conv1d | nn.Conv2d)
    first_in = next(iter(net.state_dict()))  # the first tensor is the first layer's weight
    assert first_in == info.first_layer


@pytest.mark.parametrize(
    ("name", "params"),
    [("mlp", {"hidden": [7]}), ("mlp", {"hidden": [5, 6, 7], "dropout": 0.3}), ("cnn", {"channels": [4, 4, 4], "hidden": 9})],
)
def test_special_layer_keys_do_not_move_with_hyperparameters(name: str, params: dict[str, Any]) -> None:
    state = build_net(name, params, NATURAL_SHAPES[name], 3).state_dict()
    assert NETS[name].watermark_layer in state and NETS[name].first_layer in state


def test_same_arguments_give_same_architecture_and_weights_without_touching_global_rng() -> None:
    torch.manual_seed(0)
    expected = torch.rand(1)
    torch.manual_seed(0)
    a = build_net("cnn", {"channels": [8, 8]}, (3, 12, 12), 4)
    assert torch.rand(1) == expected
    b = build_net("cnn", {"channels": [8, 8]}, (3, 12, 12), 4)
    c = build_net("cnn", {"channels": [8, 8]}, (3, 12, 12), 4, seed=1)
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    assert not torch.equal(a.state_dict()["conv.0.weight"], c.state_dict()["conv.0.weight"])


@pytest.mark.parametrize("name", sorted(NATURAL_SHAPES))
def test_initial_weights_are_torch_manual_seeds(name: str) -> None:
    """Every chain's init (fusion's common start, audits' replays) was drawn after ``torch.manual_seed``:
    seeding only the CPU stream must give those weights bit for bit."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        expected = NETS[name].factory(MappingProxyType(dict(NETS[name].defaults)), NATURAL_SHAPES[name], 3)
    got = build_net(name, {}, NATURAL_SHAPES[name], 3, seed=7)
    assert all(torch.equal(t, expected.state_dict()[k]) for k, t in got.state_dict().items())


def test_mlp_default_widths() -> None:
    net = build_net("mlp", {}, (4,), 3)
    assert [tuple(t.shape) for k, t in net.state_dict().items() if k.endswith("weight")] == [(128, 4), (64, 128), (3, 64)]


def test_cnn_pools_only_while_the_input_is_big_enough() -> None:
    tiny = build_net("cnn", {"channels": [2, 2]}, (1, 2, 2), 2)  # 2x2 -> 1x1, then no more pooling
    assert tiny.state_dict()["fc.0.weight"].shape == (64, 2)
    assert tiny(torch.zeros(1, 1, 2, 2)).shape == (1, 2)


@pytest.mark.parametrize(
    ("name", "params", "shape", "match"),
    [
        ("resnet", {}, (4,), "unknown net 'resnet'"),
        ("mlp", {"width": 3}, (4,), "no parameter 'width'"),
        ("mlp", {"hidden": 64}, (4,), "'hidden' must be a list"),
        ("mlp", {"hidden": [64, 0]}, (4,), "'hidden'"),
        ("mlp", {"hidden": [True]}, (4,), "'hidden'"),
        ("mlp", {"hidden": []}, (4,), "at least one hidden"),
        ("mlp", {"dropout": "0.5"}, (4,), "'dropout' must be a number"),
        ("mlp", {"dropout": 1.0}, (4,), "dropout"),
        ("cnn", {"hidden": 2.5}, (1, 8, 8), "'hidden' must be a positive int"),
        ("cnn", {"channels": [8]}, (1, 8, 8), "two conv layers"),
        ("cnn", {}, (64,), "'cnn' cannot take inputs of shape"),
        ("cnn1d", {}, (1, 8, 8), "'cnn1d' cannot take inputs of shape"),
        ("mlp", {}, (0, 3), "cannot take inputs"),
    ],
)
def test_build_net_names_what_is_wrong(name: str, params: dict[str, Any], shape: tuple[int, ...], match: str) -> None:
    with pytest.raises(InvalidTask, match=match):
        build_net(name, params, shape, 10)


def test_one_class_is_not_a_classification_task() -> None:
    """One output is a regression net; a classification objective on it is refused at admission."""
    from dlbc_ray.models.objectives import check_task_objective

    assert build_net("mlp", {}, (4,), 1)(torch.zeros(2, 4)).shape == (2, 1)
    with pytest.raises(InvalidTask, match="at least 2 classes"):
        check_task_objective("accuracy", 1, "iid")
    with pytest.raises(InvalidTask, match="at least 1 output"):
        build_net("mlp", {}, (4,), 0)


def test_flops_of_a_known_linear_are_exact() -> None:
    assert estimate_flops(nn.Linear(10, 5), (10,)) == 2 * 10 * 5


def test_flops_of_a_known_conv_and_mlp_are_exact() -> None:
    assert estimate_flops(nn.Conv2d(3, 4, 3, padding=1), (3, 6, 6)) == 2 * (4 * 6 * 6) * (3 * 3 * 3)
    mlp = build_net("mlp", {"hidden": [16, 8]}, (1, 8, 8), 10)
    assert estimate_flops(mlp, (1, 8, 8)) == 2 * (64 * 16 + 16 * 8 + 8 * 10)
    assert mlp.training  # measuring does not leave the net in eval mode


def test_count_parameters() -> None:
    net = build_net("mlp", {"hidden": [3]}, (2,), 2)
    assert count_parameters(net) == (2 * 3 + 3) + (3 * 2 + 2)
    net.fc[0].weight.requires_grad_(False)
    assert count_parameters(net, trainable_only=True) == 3 + 8


# ------------------------------------------------------------------ size limits

SPECS = st.one_of(
    st.tuples(st.just("mlp"), st.fixed_dictionaries({"hidden": st.lists(st.integers(1, 40), min_size=1, max_size=3)}),
              st.lists(st.integers(1, 9), min_size=1, max_size=3).map(tuple)),
    *(st.tuples(st.just(name), st.fixed_dictionaries({"channels": st.lists(st.integers(1, 6), min_size=2, max_size=4),
                                                      "hidden": st.integers(1, 20)}),
                st.tuples(st.integers(1, 3), *[st.integers(1, 12)] * rank))
      for name, rank in (("cnn", 2), ("cnn1d", 1))),
)


@settings(max_examples=40, deadline=None)
@given(spec=SPECS, n_classes=st.integers(2, 12))
def test_footprint_counts_exactly_the_parameters_the_net_has(spec: tuple[str, dict[str, Any], tuple[int, ...]],
                                                             n_classes: int) -> None:
    name, params, shape = spec
    assert net_footprint(name, params, shape, n_classes).params == count_parameters(build_net(name, params, shape,
                                                                                              n_classes))


@pytest.mark.parametrize(("name", "params", "shape", "reason"), [
    ("mlp", {"hidden": [1_000_000, 1_000_000]}, (64,), "too_many_params"),  # 4 TB of weights asked of torch once
    ("mlp", {"hidden": [2**31 - 1]}, (1, 8, 8), "too_many_params"),
    ("cnn", {"channels": [64, 64], "hidden": 64}, (3, 4096, 4096), "too_many_params"),
    ("cnn1d", {"channels": [512, 512], "hidden": 8}, (1, 100_000), "too_many_params"),
    ("mlp", {"hidden": [200_000] * 3}, (8,), "too_many_params"),
])
def test_oversized_nets_are_refused_before_torch_allocates(monkeypatch: pytest.MonkeyPatch, name: str,
                                                           params: dict[str, Any], shape: tuple[int, ...],
                                                           reason: str) -> None:
    def no_allocation(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("torch was asked to allocate a layer")

    for layer in ("Linear", "Conv1d", "Conv2d"):
        monkeypatch.setattr(nn, layer, no_allocation)
    with pytest.raises(InvalidTask) as caught:
        build_net(name, params, shape, 10)
    assert caught.value.reason == reason and len(str(caught.value)) < 200


def test_memory_limit_counts_one_batch_of_activations() -> None:
    wide_input = ("mlp", {"hidden": [16]}, (3, 512, 512), 10)  # 12.6 M weights, 786k activations a sample
    size = net_footprint(*wide_input)
    assert size.memory_bytes(1024) == 4 * (4 * size.params + 2 * 1024 * size.activations)
    build_net(*wide_input[:3], 10, limits=Limits(max_memory_bytes=size.memory_bytes(1024)))
    with pytest.raises(InvalidTask, match="GiB to train") as caught:
        build_net(*wide_input[:3], 10, limits=Limits(max_memory_bytes=size.memory_bytes(1024) - 1))
    assert caught.value.reason == "too_much_memory"


def test_limits_come_from_config() -> None:
    build_net("mlp", {"hidden": [8]}, (4,), 3, limits=Limits(max_params=(4 * 8 + 8) + (8 * 3 + 3)))
    with pytest.raises(InvalidTask, match="would have 67 parameters; the limit is 66"):
        build_net("mlp", {"hidden": [8]}, (4,), 3, limits=Limits(max_params=66))
