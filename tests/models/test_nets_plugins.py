"""Users' nets: registered, from entry points or as module:factory, sized on the meta device, and refused
up front when they cannot carry the Secure Mapping Layer or the watermark."""

from __future__ import annotations

import json
import time
from pathlib import Path
from collections.abc import Iterator, Mapping
from importlib.metadata import EntryPoint
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
import torch
from torch import nn

from dlbc_ray.config import Limits, ProtectionConfig
from dlbc_ray.errors import InvalidTask
from dlbc_ray.models import plugins, probe, sml
from dlbc_ray.models.data import load_builtin
from dlbc_ray.models.evaluate import evaluate
from dlbc_ray.models.nets import NetInfo, build_net, count_parameters, net_factory, net_footprint, net_info, register_net
from dlbc_ray.models.protect import mapping_layer, read_mark, watermark_key
from dlbc_ray.models.training import TrainSettings, train
from dlbc_ray.models.watermark import WatermarkRegularizer, settle
from dlbc_ray.models.weights import load_into, to_numpy

HERE = __name__


class TinyRes(nn.Module):
    """A residual conv net over (C, H, W): stem, one residual block, pooled head."""

    def __init__(self, channels: int, width: int, n_classes: int) -> None:
        super().__init__()
        self.stem = nn.Conv2d(channels, width, 3, padding=1)
        self.block = nn.Conv2d(width, width, 3, padding=1)
        self.head = nn.Linear(width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.stem(x))
        h = torch.relu(h + self.block(h))
        return self.head(h.mean(dim=(2, 3)))


@net_factory(description="tiny residual CNN", defaults={"width": 8})
def tiny_res(params: Mapping[str, Any], input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    return TinyRes(input_shape[0], params["width"], n_classes)


@net_factory()
def plain_factory(params: Mapping[str, Any], input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """A factory with no parameters and no declared layers: probing finds them."""
    return nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(input_shape)), 6), nn.ReLU(), nn.Linear(6, n_classes))


def unmarked(params: Mapping[str, Any], input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """Builds a fine net, but nothing says it is one: a task cannot make nodes call it."""
    return plain_factory(params, input_shape, n_classes)


class GRUFirst(nn.Module):
    def __init__(self, length: int, n_classes: int) -> None:
        super().__init__()
        self.rnn = nn.GRU(1, 4, batch_first=True)
        self.head = nn.Linear(4, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x.transpose(1, 2))
        return self.head(out[:, -1])


@net_factory()
def gru_first(params: Mapping[str, Any], input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    return GRUFirst(input_shape[1], n_classes)


@net_factory()
def one_layer(params: Mapping[str, Any], input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(input_shape)), n_classes))


@net_factory()
def huge(params: Mapping[str, Any], input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """4e10 parameters: 160 GB if it were ever allocated."""
    return nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(input_shape)), 200_000), nn.Linear(200_000, 200_000),
                         nn.Linear(200_000, n_classes))


@net_factory()
def not_a_module(params: Mapping[str, Any], input_shape: tuple[int, ...], n_classes: int) -> Any:
    return "a string"


def moving_layers(params: Mapping[str, Any], input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    pad = [nn.Identity()] * params["pad"]
    return nn.Sequential(nn.Flatten(), *pad, nn.Linear(int(np.prod(input_shape)), 4), nn.Linear(4, n_classes))


moving_layers.__dlbc_net__ = {"defaults": {"pad": 1}}  # type: ignore[attr-defined]


@pytest.fixture(autouse=True)
def clean_registry() -> Iterator[None]:
    names = set(plugins.NETS)
    yield
    for name in set(plugins.NETS) - names:
        del plugins.NETS[name]
    for cache in (plugins._FOUND, probe._LAYERS, probe._PROBES):
        cache.clear()


def test_a_registered_net_is_built_sized_and_its_layers_found_like_a_builtin() -> None:
    register_net(plugins.info_from("tinyres", tiny_res, "test"))
    net = build_net("tinyres", {"width": 6}, (1, 8, 8), 10)
    assert net(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    assert net_footprint("tinyres", {"width": 6}, (1, 8, 8), 10).params == count_parameters(net)
    info = net_info("tinyres")
    assert (info.first_layer, info.watermark_layer) == ("stem.weight", "block.weight")
    with pytest.raises(InvalidTask, match="has no parameter 'depth'; it takes width"):
        build_net("tinyres", {"depth": 2}, (1, 8, 8), 10)
    with pytest.raises(InvalidTask, match="'width' must be a positive int"):
        build_net("tinyres", {"width": 0}, (1, 8, 8), 10)


def test_a_name_is_registered_once_and_builtins_cannot_be_replaced() -> None:
    with pytest.raises(InvalidTask, match="taken"):
        register_net(NetInfo("mlp", "", plain_factory))
    with pytest.raises(InvalidTask, match="':'"):
        register_net(NetInfo("a:b", "", plain_factory))


def test_module_factory_names_resolve_and_the_standard_library_is_refused() -> None:
    name = f"{HERE}:plain_factory"
    net = build_net(name, {}, (4,), 3)
    assert net_info(name).first_layer == "1.weight" and net_info(name).watermark_layer == "3.weight"
    probe._LAYERS.clear()  # a fresh process: undeclared layers are not known before a build
    with pytest.raises(InvalidTask, match="declares no first and watermark layers"):
        net_info(name)
    assert net(torch.zeros(1, 4)).shape == (1, 3)
    for bad, why in [("os:system", "standard library"), ("no_such_pkg_xyz:f", "no module"),
                     (f"{HERE}:missing", "no module"), ("../x:f", "not a name"),
                     (f"{HERE}:unmarked", "'unmarked' is not marked as a net factory"),
                     ("numpy:save", "not marked as a net factory")]:
        with pytest.raises(InvalidTask, match=why):
            build_net(bad, {}, (4,), 3)


def test_entry_points_register_nets_and_a_broken_one_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    eps = [EntryPoint("tinyres", f"{HERE}:tiny_res", plugins.ENTRY_POINT_GROUP),
           EntryPoint("broken", "no_such_pkg_xyz.nets:f", plugins.ENTRY_POINT_GROUP),
           EntryPoint("mlp", f"{HERE}:plain_factory", plugins.ENTRY_POINT_GROUP)]
    monkeypatch.setattr(plugins, "entry_points", lambda group: [ep for ep in eps if ep.group == group])
    assert build_net("tinyres", {}, (3, 6, 6), 4)(torch.zeros(1, 3, 6, 6)).shape == (1, 4)
    assert net_info("tinyres").source == f"entry point {HERE}:tiny_res"
    with pytest.raises(InvalidTask, match="'broken'.*does not load.*ModuleNotFoundError"):
        net_info("broken")
    rows = {name: (info, problem) for info, name, problem in plugins.available()}
    assert rows["tinyres"][0] is not None and rows["tinyres"][0].defaults == {"width": 8}
    assert rows["broken"][0] is None and "does not load" in rows["broken"][1]
    assert "shadowed" in rows["mlp"][1] and net_info("mlp").source == "built-in"
    with pytest.raises(InvalidTask, match="unknown net 'nope'; known nets are .*tinyres"):
        net_info("nope")


@pytest.mark.parametrize(("factory", "why"), [
    ("gru_first", "first layer with weights is 'rnn' \\(GRU\\), not a Linear or Conv"),
    ("one_layer", "no Linear or Conv layer after the first to host the mark"),
])
def test_a_net_that_cannot_carry_the_mark_or_the_map_is_refused_with_the_reason(factory: str, why: str) -> None:
    with pytest.raises(InvalidTask, match=why) as info:
        build_net(f"{HERE}:{factory}", {}, (1, 40), 10)
    assert info.value.reason == "unhostable_net"


def test_declared_layers_are_checked_against_the_net() -> None:
    register_net(NetInfo("liar", "", plain_factory, first_layer="3.weight"))
    with pytest.raises(InvalidTask, match="declared first layer '3.weight' is not 1.weight"):
        build_net("liar", {}, (4,), 3)


def test_layer_names_that_move_with_parameters_are_refused() -> None:
    name = f"{HERE}:moving_layers"
    build_net(name, {"pad": 1}, (4,), 3)
    with pytest.raises(InvalidTask, match="moves its first or watermark layer"):
        build_net(name, {"pad": 2}, (4,), 3)


def test_an_oversized_user_net_is_refused_before_anything_is_allocated() -> None:
    started = time.perf_counter()
    with pytest.raises(InvalidTask, match="parameters; the limit is") as info:
        build_net(f"{HERE}:huge", {}, (4,), 3)
    assert info.value.reason == "too_many_params" and time.perf_counter() - started < 5
    with pytest.raises(InvalidTask, match="GiB to train") as info:
        build_net(f"{HERE}:plain_factory", {}, (4,), 3, limits=Limits(max_memory_bytes=100))
    assert info.value.reason == "too_much_memory"


@pytest.mark.parametrize(("factory", "why"), [("not_a_module", "returned a str"),
                                              ("tiny_res", "cannot be built or run on inputs \\(5,\\)")])
def test_a_failing_factory_is_one_line(factory: str, why: str) -> None:
    with pytest.raises(InvalidTask, match=why) as info:
        build_net(f"{HERE}:{factory}", {}, (5,), 3)
    assert "\n" not in str(info.value)


@pytest.mark.slow
def test_a_user_net_trains_behind_the_mapping_layer_and_delivers_a_readable_mark() -> None:
    """The miner's and the client's path, end to end, for a net the registry has never seen before."""
    register_net(plugins.info_from("tinyres", tiny_res, "test"))
    bundle = load_builtin("digits")
    net = build_net("tinyres", {"width": 8}, bundle.input_shape, bundle.n_classes, seed=1)
    protection = ProtectionConfig()
    key = watermark_key(b"s" * 32, "owner-key", net, "tinyres", protection.watermark_bits)
    q, kind = mapping_layer(b"q" * 32, net, "tinyres", bundle.input_shape)
    mapped = sml.MappedNet(net, sml.SecureMappingLayer(q, kind))
    mapped_train = type(bundle.train)(sml.map_inputs(bundle.train.x, q, kind), bundle.train.y)
    train(mapped, mapped_train, TrainSettings(epochs=3, batch_size=64, lr=1e-2),
          regularizers=[WatermarkRegularizer(key, protection.watermark_lambda)])
    settle(net, key, margin=protection.mark_margin)
    delivered = sml.fold_into_first_layer(to_numpy(net), net_info("tinyres").first_layer, q, kind)
    assert read_mark(delivered, key, protection).owned
    fresh = build_net("tinyres", {"width": 8}, bundle.input_shape, bundle.n_classes)
    mapped_test = type(bundle.test)(sml.map_inputs(bundle.test.x, q, kind), bundle.test.y)
    as_trained = evaluate(net, to_numpy(net), mapped_test)
    assert as_trained > 0.15  # above chance (0.1) after 3 epochs of a tiny net
    assert abs(evaluate(load_into(fresh, delivered), delivered, bundle.test) - as_trained) < 0.01


def test_the_custom_model_example_declares_layers_the_probe_agrees_with(monkeypatch: pytest.MonkeyPatch) -> None:
    """examples/custom_model stays valid without installing it (the integration test installs it)."""
    monkeypatch.syspath_prepend(str(Path(__file__).parents[2] / "examples" / "custom_model"))
    from dlbc_resnet.nets import resnet_small

    register_net(plugins.info_from("resnet_small", resnet_small, "example"))
    for shape in [(1, 8, 8), (1, 40)]:
        for params in [{}, {"width": 4, "blocks": 3}]:
            net = build_net("resnet_small", params, shape, 10)
            assert net_footprint("resnet_small", params, shape, 10).params == count_parameters(net)
    assert (net_info("resnet_small").first_layer, net_info("resnet_small").watermark_layer) == (
        "stem.weight", "blocks.0.conv1.weight")
    with pytest.raises(InvalidTask, match="resnet_small takes \\(C, L\\) or \\(C, H, W\\) inputs"):
        build_net("resnet_small", {}, (64,), 10)


def test_dlbc_ray_nets_lists_plugins_with_their_parameters_and_names_broken_ones(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from dlbc_ray.cli.app import app

    eps = [EntryPoint("tinyres", f"{HERE}:tiny_res", plugins.ENTRY_POINT_GROUP),
           EntryPoint("broken", "no_such_pkg_xyz.nets:f", plugins.ENTRY_POINT_GROUP)]
    monkeypatch.setattr(plugins, "entry_points", lambda group: eps)
    monkeypatch.setenv("RAY_AUTH_MODE", "token")  # the root command writes it; restored afterwards
    monkeypatch.delenv("DLBC_INSECURE_NO_AUTH", raising=False)
    result = CliRunner().invoke(app, ["nets", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["tinyres"]["params"] == {"width": 8} and rows["tinyres"]["description"] == "tiny residual CNN"
    assert rows["mlp"]["params"] == {"hidden": [128, 64], "dropout": 0.0}
    assert "does not load" in rows["broken"]["problem"]
    table = CliRunner().invoke(app, ["nets"], catch_exceptions=False)
    assert table.exit_code == 0 and "tinyres" in table.stdout and "width=8" in table.stdout


@net_factory(defaults={"widths": (4,), "conv": 1})
def random_stack(params: Mapping[str, Any], input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """``conv`` 1-D convs (4 channels) then Linear layers of ``widths``: a family for the property below."""
    layers: list[nn.Module] = []
    channels = input_shape[0]
    for _ in range(params["conv"]):
        layers += [nn.Conv1d(channels, 4, 3, padding=1), nn.ReLU()]
        channels = 4
    widths = [channels * int(np.prod(input_shape[1:])), *params["widths"], n_classes]
    layers.append(nn.Flatten())
    for a, b in zip(widths, widths[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


@settings(max_examples=25, deadline=None)
@given(widths=st.lists(st.integers(1, 40), min_size=0, max_size=3), conv=st.integers(1, 2),
       shape=st.tuples(st.integers(1, 3), st.integers(1, 12)), n_classes=st.integers(2, 7))
def test_the_meta_probe_measures_what_a_real_build_holds(widths: list[int], conv: int, shape: tuple[int, int],
                                                         n_classes: int) -> None:
    """Parameters exactly, activations as a real forward's leaf outputs, and the special layers in call order."""
    name = f"{HERE}:random_stack"
    params = {"widths": widths or [3], "conv": conv}
    net = build_net(name, params, shape, n_classes)
    assert net_footprint(name, params, shape, n_classes).params == count_parameters(net)
    sizes = [int(np.prod(shape))]
    hooks = [m.register_forward_hook(lambda m, i, o: sizes.append(o.numel())) for m in net.modules()
             if not list(m.children())]
    net(torch.zeros(1, *shape))
    for hook in hooks:
        hook.remove()
    assert net_footprint(name, params, shape, n_classes).activations == sum(sizes)
    weighted = [f"{i}.weight" for i, m in enumerate(net) if isinstance(m, nn.Linear | nn.Conv1d)]
    assert (net_info(name).first_layer, net_info(name).watermark_layer) == (weighted[0], weighted[1])
    probe._LAYERS.clear()  # layer names legitimately move with this family's params; each example stands alone


def test_probing_a_built_in_neither_imports_dynamo_nor_moves_the_callers_rng() -> None:
    # The meta device's decompositions import torch._dynamo (~1 s of CPU in every fresh actor, on the
    # first block's path); a built-in, whose size formula is checked first, is probed on the CPU instead.
    import subprocess
    import sys

    script = (
        "import sys, torch\n"
        "from dlbc_ray.config import Limits\n"
        "from dlbc_ray.models.nets import build_net\n"
        "torch.manual_seed(0); expected = torch.rand(3)\n"
        "torch.manual_seed(0)\n"
        "for name, shape in (('mlp', (64,)), ('cnn', (1, 8, 8)), ('cnn1d', (1, 40))):\n"
        "    build_net(name, {}, shape, 10, seed=1, limits=Limits())\n"
        "assert 'torch._dynamo' not in sys.modules, 'a built-in probe imported torch._dynamo'\n"
        "torch.manual_seed(0)\n"
        "for name, shape in (('mlp', (64,)), ('cnn', (1, 8, 8))):\n"
        "    build_net(name, {'hidden': [32]} if name == 'mlp' else {}, shape, 5, seed=2, limits=Limits())\n"
        "assert torch.equal(torch.rand(3), expected), 'probing moved the global RNG stream'\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
