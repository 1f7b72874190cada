"""The nets registry: plain ``nn.Module``s that a task names with their hyperparameters.

Layer names never depend on hyperparameters (layers live in ``conv``/``fc`` lists and
parameter-free pieces are applied in ``forward``), so ``watermark_layer`` and
``first_layer`` are fixed state_dict keys per net.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from numbers import Integral, Real
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from dlbc_ray.config import LIMITS, Limits
from dlbc_ray.errors import InvalidTask


class MLP(nn.Module):
    """Linear layers with ReLU (and optional dropout) over the flattened input."""

    def __init__(self, input_shape: tuple[int, ...], n_classes: int, *, hidden: tuple[int, ...], dropout: float) -> None:
        super().__init__()
        if not hidden:
            raise InvalidTask("net 'mlp' needs at least one hidden layer", reason="bad_param")
        if not 0.0 <= dropout < 1.0:
            raise InvalidTask(f"net 'mlp' dropout must be in [0, 1), got {dropout}", reason="bad_param")
        widths = [math.prod(input_shape), *hidden, n_classes]
        self.fc = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths, widths[1:]))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for layer in self.fc[:-1]:
            x = self.dropout(torch.relu(layer(x)))
        return self.fc[-1](x)


class ConvNet(nn.Module):
    """3-wide convolutions (padding 1) + ReLU + 2x max-pool while the size allows, then two Linears."""

    def __init__(self, input_shape: tuple[int, ...], n_classes: int, *, channels: tuple[int, ...], hidden: int, dims: int) -> None:
        super().__init__()
        if len(channels) < 2:
            raise InvalidTask("a conv net needs at least two conv layers (the second hosts the watermark)", reason="bad_param")
        conv, pool = (nn.Conv1d, nn.MaxPool1d) if dims == 1 else (nn.Conv2d, nn.MaxPool2d)
        width, *size = input_shape
        layers, pools = [], []
        for out in channels:
            layers.append(conv(width, out, kernel_size=3, padding=1))
            pools.append(pool(2) if min(size) >= 2 else nn.Identity())
            width, size = out, [s // 2 for s in size] if min(size) >= 2 else size
        self.conv, self.pool = nn.ModuleList(layers), nn.ModuleList(pools)
        self.fc = nn.ModuleList([nn.Linear(width * math.prod(size), hidden), nn.Linear(hidden, n_classes)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv, pool in zip(self.conv, self.pool):
            x = pool(torch.relu(conv(x)))
        return self.fc[1](torch.relu(self.fc[0](x.flatten(1))))


@dataclass(frozen=True)
class Footprint:
    """A net's size, computed from its spec alone: scalar parameters and activations of one sample."""

    params: int
    activations: int

    def memory_bytes(self, batch: int) -> int:
        """float32 weights, gradients and two Adam moments, plus one batch's activations kept for backward."""
        return 4 * (4 * self.params + 2 * batch * self.activations)


def mlp_footprint(input_shape: tuple[int, ...], n_classes: int, *, hidden: tuple[int, ...], dropout: float) -> Footprint:
    widths = [math.prod(input_shape), *hidden, n_classes]
    return Footprint(sum(a * b + b for a, b in zip(widths, widths[1:])), sum(widths))


def conv_footprint(input_shape: tuple[int, ...], n_classes: int, *, channels: tuple[int, ...], hidden: int,
                   dims: int) -> Footprint:
    """Mirrors ``ConvNet``: 3-wide kernels with padding 1 keep the size; a 2x pool halves it while it can."""
    width, *size = input_shape
    params, activations = 0, math.prod(input_shape)
    for out in channels:
        params += out * width * 3**dims + out
        activations += out * math.prod(size)
        width, size = out, [s // 2 for s in size] if min(size) >= 2 else size
    flat = width * math.prod(size)
    return Footprint(params + flat * hidden + hidden + hidden * n_classes + n_classes,
                     activations + flat + hidden + n_classes)


@dataclass(frozen=True)
class NetInfo:
    """A registered net: how to build it and which tensors the watermark and mapping layer use."""

    name: str
    description: str
    builder: Callable[..., nn.Module]
    watermark_layer: str  # state_dict key of the conv/linear weight that hosts the DNN watermark
    first_layer: str  # state_dict key of the first layer's weight (the Secure Mapping Layer folds into it)
    input_ranks: tuple[int, ...]  # the len(input_shape) values it accepts
    footprint: Callable[..., Footprint]  # same arguments as builder, no allocation
    defaults: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


NETS: dict[str, NetInfo] = {
    "mlp": NetInfo(
        "mlp", "fully connected ReLU net over the flattened input", MLP, "fc.1.weight", "fc.0.weight",
        (1, 2, 3, 4), mlp_footprint, MappingProxyType({"hidden": (128, 64), "dropout": 0.0}),
    ),
    "cnn": NetInfo(
        "cnn", "2-D conv net for (C, H, W) images", partial(ConvNet, dims=2), "conv.1.weight", "conv.0.weight",
        (3,), partial(conv_footprint, dims=2), MappingProxyType({"channels": (16, 32), "hidden": 64}),
    ),
    "cnn1d": NetInfo(
        "cnn1d", "1-D conv net for (C, L) signals such as mnist1d", partial(ConvNet, dims=1), "conv.1.weight",
        "conv.0.weight", (2,), partial(conv_footprint, dims=1), MappingProxyType({"channels": (16, 32), "hidden": 64}),
    ),
}


def net_info(name: str) -> NetInfo:
    """The registry entry for ``name``, or ``InvalidTask`` listing the known nets."""
    if name not in NETS:
        raise InvalidTask(f"unknown net '{name}'; known nets are {', '.join(NETS)}", reason="unknown_net")
    return NETS[name]


def build_net(
    name: str, params: Mapping[str, Any], input_shape: tuple[int, ...], n_classes: int, *, seed: int = 0,
    limits: Limits = LIMITS,
) -> nn.Module:
    """A fresh net; the same arguments always give the same architecture and initial weights.

    Its size is checked against ``limits`` from the spec alone, before torch allocates anything.
    """
    info = net_info(name)
    kwargs = checked_kwargs(name, params, input_shape, n_classes, limits=limits)
    # A private RNG stream: building a net neither depends on nor disturbs global torch state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return info.builder(tuple(int(d) for d in input_shape), int(n_classes), **kwargs)


def net_footprint(name: str, params: Mapping[str, Any], input_shape: tuple[int, ...], n_classes: int) -> Footprint:
    """Parameters and per-sample activations of the net these arguments would build (nothing allocated)."""
    kwargs = checked_kwargs(name, params, input_shape, n_classes, limits=None)
    return net_info(name).footprint(tuple(int(d) for d in input_shape), int(n_classes), **kwargs)


def checked_kwargs(name: str, params: Mapping[str, Any], input_shape: tuple[int, ...], n_classes: int, *,
                   limits: Limits | None) -> dict[str, Any]:
    """The builder's keyword arguments, every one checked, and the net's size within ``limits``."""
    info = net_info(name)
    if not isinstance(params, Mapping):
        raise InvalidTask(f"net '{name}' parameters must be a mapping, got {type(params).__name__}", reason="bad_param")
    checked = {key: _checked_param(info, key, value) for key, value in params.items()}
    if len(input_shape) not in info.input_ranks or not all(_is_width(d) for d in input_shape):
        raise InvalidTask(f"net '{name}' cannot take inputs of shape {_short(tuple(input_shape))}", reason="bad_input_shape")
    if not isinstance(n_classes, Integral) or isinstance(n_classes, bool) or n_classes < 2:
        raise InvalidTask(f"net '{name}' needs at least 2 classes, got {_short(n_classes)}", reason="bad_param")
    kwargs = {**info.defaults, **checked}
    if limits is not None:
        _check_size(name, info.footprint(tuple(int(d) for d in input_shape), int(n_classes), **kwargs), limits)
    return kwargs


def _check_size(name: str, size: Footprint, limits: Limits) -> None:
    if size.params > limits.max_params:
        raise InvalidTask(f"net '{name}' would have {size.params:.3g} parameters; the limit is {limits.max_params:,}",
                          reason="too_many_params")
    memory = size.memory_bytes(limits.activation_batch)
    if memory > limits.max_memory_bytes:
        raise InvalidTask(f"net '{name}' would need about {memory / 2**30:.3g} GiB to train; the limit is "
                          f"{limits.max_memory_bytes / 2**30:.3g} GiB", reason="too_much_memory")


def _short(value: Any, n: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= n else text[: n - 3] + "..."


def _checked_param(info: NetInfo, key: str, value: Any) -> Any:
    """``value`` converted to the type of the parameter's default, or ``InvalidTask``."""
    if key not in info.defaults:
        raise InvalidTask(f"net '{info.name}' has no parameter {_short(key, 40)}; it takes {', '.join(info.defaults)}",
                          reason="unknown_param")
    default = info.defaults[key]
    if isinstance(default, tuple) and isinstance(value, list | tuple) and all(_is_width(v) for v in value):
        return tuple(int(v) for v in value)
    if isinstance(default, int) and _is_width(value):
        return int(value)
    if isinstance(default, float) and isinstance(value, Real) and not isinstance(value, bool):
        return float(value)
    kind = "a list of positive ints" if isinstance(default, tuple) else "a positive int" if isinstance(default, int) else "a number"
    raise InvalidTask(f"net '{info.name}' parameter '{key}' must be {kind}, got {_short(value)}", reason="bad_param")


def _is_width(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool) and value > 0


def count_parameters(net: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of scalar parameters (all of them unless ``trainable_only``)."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad or not trainable_only)


def estimate_flops(net: nn.Module, input_shape: tuple[int, ...]) -> int:
    """FLOPs of one sample's forward pass: 2 x the multiply-accumulates of every Linear and Conv."""
    macs = 0

    def count(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal macs
        if isinstance(module, nn.Linear):
            macs += output.numel() * module.in_features
        else:
            macs += output.numel() * (module.in_channels // module.groups) * math.prod(module.kernel_size)

    layers = [m for m in net.modules() if isinstance(m, nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d)]
    handles = [m.register_forward_hook(count) for m in layers]
    was_training, device = net.training, next(net.parameters(), torch.empty(0)).device
    try:
        net.eval()
        with torch.no_grad():
            net(torch.zeros(1, *input_shape, device=device))
    finally:
        net.train(was_training)
        for handle in handles:
            handle.remove()
    return 2 * macs
