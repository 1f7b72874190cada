"""The built-in nets and ``build_net``: plain ``nn.Module``s that a task names with their hyperparameters.

The registry itself (users' nets, entry points, ``module:factory``) is ``dlbc_ray.models.plugins``.

Layer names never depend on hyperparameters (layers live in ``conv``/``fc`` lists and
parameter-free pieces are applied in ``forward``), so ``watermark_layer`` and
``first_layer`` are fixed state_dict keys per net.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from functools import partial
from numbers import Integral
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from dlbc_ray.config import LIMITS, Limits
from dlbc_ray.errors import InvalidTask
from dlbc_ray.schema.task import Task
from dlbc_ray.models.plugins import (
    ENTRY_POINT_GROUP, NETS, Footprint, NetInfo, available, checked_params, entry, is_width, net_factory, net_info, probe,
    register_net,
)

__all__ = ["ENTRY_POINT_GROUP", "NETS", "Footprint", "NetInfo", "available", "build_net", "count_parameters",
           "estimate_flops", "net_factory", "net_footprint", "net_info", "register_net"]


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


def _factory(builder: Callable[..., nn.Module]) -> Callable[[Mapping[str, Any], tuple[int, ...], int], nn.Module]:
    """A keyword-argument builder as a registry factory ``(params, input_shape, n_classes)``."""
    return lambda params, input_shape, n_classes: builder(input_shape, n_classes, **params)


register_net(NetInfo(
    "mlp", "fully connected ReLU net over the flattened input", _factory(MLP),
    MappingProxyType({"hidden": (128, 64), "dropout": 0.0}), "fc.1.weight", "fc.0.weight", (1, 2, 3, 4),
    mlp_footprint))
register_net(NetInfo(
    "cnn", "2-D conv net for (C, H, W) images", _factory(partial(ConvNet, dims=2)),
    MappingProxyType({"channels": (16, 32), "hidden": 64}), "conv.1.weight", "conv.0.weight", (3,),
    partial(conv_footprint, dims=2)))
register_net(NetInfo(
    "cnn1d", "1-D conv net for (C, L) signals such as mnist1d", _factory(partial(ConvNet, dims=1)),
    MappingProxyType({"channels": (16, 32), "hidden": 64}), "conv.1.weight", "conv.0.weight", (2,),
    partial(conv_footprint, dims=1)))


def build_task_net(task: Task, *, seed: int = 0) -> nn.Module:
    """``build_net`` for what a task names: its model, its data's input shape and class count."""
    return build_net(task.model.name, task.model.params, task.dataset.input_shape, task.dataset.n_classes, seed=seed)


def build_net(
    name: str, params: Mapping[str, Any], input_shape: tuple[int, ...], n_classes: int, *, seed: int = 0,
    limits: Limits = LIMITS,
) -> nn.Module:
    """A fresh net; the same arguments always give the same architecture and initial weights.

    Its size is checked against ``limits`` from the spec alone (the built-ins' formulas, or a
    pass on the meta device for users' nets), and its special layers found, before torch
    allocates anything.
    """
    info = entry(name)
    kwargs = checked_kwargs(name, params, input_shape, n_classes, limits=limits)
    # A private RNG stream: building a net neither depends on nor disturbs global torch state.
    with torch.random.fork_rng(devices=[]):
        _seed_init(seed)
        net = info.factory(MappingProxyType(kwargs), tuple(int(d) for d in input_shape), int(n_classes))
    if not isinstance(net, nn.Module):
        raise InvalidTask(f"net '{name}': its factory returned a {type(net).__name__}", reason="bad_net")
    return net


def _seed_init(seed: int) -> None:
    """``torch.manual_seed`` for the CPU stream the factory draws from: the same weights, without its lazy CUDA
    seeding, which formats a stack trace on every call where CUDA is not initialised (~100 us, paid by every
    net a miner, validator or audit builds). A GPU machine seeds CUDA too, in case a factory builds there."""
    torch.default_generator.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def net_footprint(name: str, params: Mapping[str, Any], input_shape: tuple[int, ...], n_classes: int) -> Footprint:
    """Parameters and per-sample activations of the net these arguments would build (nothing allocated)."""
    kwargs = checked_kwargs(name, params, input_shape, n_classes, limits=None)
    return _footprint(entry(name), kwargs, tuple(int(d) for d in input_shape), int(n_classes))


def _footprint(info: NetInfo, kwargs: dict[str, Any], input_shape: tuple[int, ...], n_classes: int) -> Footprint:
    if info.footprint is not None:
        return info.footprint(input_shape, n_classes, **kwargs)
    return probe(info, kwargs, input_shape, n_classes).footprint


def checked_kwargs(name: str, params: Mapping[str, Any], input_shape: tuple[int, ...], n_classes: int, *,
                   limits: Limits | None) -> dict[str, Any]:
    """The factory's parameters, every one checked; the net probed on the meta device (it must be able to
    carry the watermark and mapping layer) and its size within ``limits``."""
    info = entry(name)
    kwargs = checked_params(info, params)
    if len(input_shape) not in info.input_ranks or not all(is_width(d) for d in input_shape):
        raise InvalidTask(f"net '{name}' cannot take inputs of shape {_short(tuple(input_shape))}", reason="bad_input_shape")
    if not isinstance(n_classes, Integral) or isinstance(n_classes, bool) or n_classes < 1:  # 1: regression
        raise InvalidTask(f"net '{name}' needs at least 1 output, got {_short(n_classes)}", reason="bad_param")
    shape = tuple(int(d) for d in input_shape)
    if limits is not None:
        if info.footprint is not None:  # the formula first: a huge built-in is refused before even a meta build
            _check_size(name, info.footprint(shape, int(n_classes), **kwargs), limits)
        found = probe(info, kwargs, shape, int(n_classes))
        if info.footprint is None:
            _check_size(name, found.footprint, limits)
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
