"""The nets registry: built-in and users' nets, found by name, by entry point or as ``module:factory``.

A net is a factory ``(params, input_shape, n_classes) -> nn.Module``. The built-ins register
with ``register_net`` like anyone's; an installed package adds nets through the entry-point
group ``dlbc_ray.nets`` (the entry's name is the net's name); a task may also name
``package.module:factory``. Before any real tensor exists, ``probe`` builds the net on the
meta device and runs one sample through it: that gives its size (checked against
``Limits``) and finds the layer the Secure Mapping Layer folds into (the first Linear or
Conv, reading the raw input) and the layer that hosts the watermark (the next one). A net
without them is refused with the reason.
"""

from __future__ import annotations

import importlib
import math
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from importlib.metadata import entry_points
from numbers import Integral, Real
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from dlbc_ray.errors import DLBCError, InvalidTask

ENTRY_POINT_GROUP = "dlbc_ray.nets"
NetFactory = Callable[[Mapping[str, Any], tuple[int, ...], int], nn.Module]
LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$")
_PROBES_KEPT = 256


@dataclass(frozen=True)
class Footprint:
    """A net's size, computed from its spec alone: scalar parameters and activations of one sample."""

    params: int
    activations: int

    def memory_bytes(self, batch: int) -> int:
        """float32 weights, gradients and two Adam moments, plus one batch's activations kept for backward."""
        return 4 * (4 * self.params + 2 * batch * self.activations)


@dataclass(frozen=True)
class NetInfo:
    """A registered net. Empty layer names are found by ``probe`` (and must not move with params)."""

    name: str
    description: str
    factory: NetFactory
    defaults: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    watermark_layer: str = ""  # state_dict key of the Linear/Conv weight that hosts the DNN watermark
    first_layer: str = ""  # state_dict key of the first layer's weight (the Secure Mapping Layer folds into it)
    input_ranks: tuple[int, ...] = (1, 2, 3, 4)  # the len(input_shape) values it accepts
    footprint: Callable[..., Footprint] | None = None  # exact size from kwargs; None: measured on the meta device
    source: str = "built-in"


@dataclass(frozen=True)
class Probe:
    """What building a net on the meta device showed: its size and its two special layers."""

    footprint: Footprint
    first_layer: str
    watermark_layer: str


NETS: dict[str, NetInfo] = {}
_FOUND: dict[str, NetInfo] = {}  # entry points and module:factory names, resolved once per process
_LAYERS: dict[str, tuple[str, str]] = {}  # layers probing found, per net name
_PROBES: dict[Any, Probe] = {}


def net_factory(*, description: str = "", defaults: Mapping[str, Any] | None = None, watermark_layer: str = "",
                first_layer: str = "") -> Callable[[NetFactory], NetFactory]:
    """Decorate a user's factory with what ``dlbc-ray nets`` shows and the parameters it takes."""
    def mark(factory: NetFactory) -> NetFactory:
        factory.__dlbc_net__ = {"description": description, "defaults": dict(defaults or {}),  # type: ignore[attr-defined]
                                "watermark_layer": watermark_layer, "first_layer": first_layer}
        return factory
    return mark


def register_net(info: NetInfo) -> NetInfo:
    """Add ``info`` to the registry; a name is registered once and never holds a ':'."""
    if not info.name or ":" in info.name or info.name in NETS:
        raise InvalidTask(f"cannot register net {info.name!r}: empty, has a ':' or is taken", reason="bad_net")
    NETS[info.name] = replace(info, defaults=MappingProxyType(dict(info.defaults)))
    return NETS[info.name]


def info_from(name: str, obj: Any, source: str) -> NetInfo:
    """A ``NetInfo`` for what an entry point or ``module:factory`` names (a NetInfo or a factory)."""
    if isinstance(obj, NetInfo):
        return replace(obj, name=name, source=source, defaults=MappingProxyType(dict(obj.defaults)))
    if not callable(obj):
        raise InvalidTask(f"net '{name}' ({source}) is neither a factory nor a NetInfo", reason="bad_net")
    meta = getattr(obj, "__dlbc_net__", {})
    doc = (getattr(obj, "__doc__", None) or "").strip().split("\n")[0]
    return NetInfo(name, meta.get("description") or doc, obj, MappingProxyType(dict(meta.get("defaults", {}))),
                   meta.get("watermark_layer", ""), meta.get("first_layer", ""), source=source)


def net_info(name: str) -> NetInfo:
    """The entry for ``name`` (registered, an installed entry point, or ``module:factory``) with both special
    layers named, or ``InvalidTask``. Undeclared layers are known once this process has built the net."""
    info = entry(name)
    if info.first_layer and info.watermark_layer:
        return info
    if name not in _LAYERS:
        raise InvalidTask(f"net '{name}' declares no first and watermark layers and has not been built here yet; "
                          "declare them (net_factory(first_layer=..., watermark_layer=...))", reason="unhostable_net")
    first, host = _LAYERS[name]
    return replace(info, first_layer=info.first_layer or first, watermark_layer=info.watermark_layer or host)


def entry(name: str) -> NetInfo:
    """The entry for ``name`` as registered (layer names only where declared)."""
    return NETS.get(name) or _FOUND.get(name) or _resolve(name)


def _resolve(name: str) -> NetInfo:
    if ":" in name:
        info = _from_module(name)
    else:
        found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
        if not found:
            known = dict.fromkeys([*NETS, *(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))])
            raise InvalidTask(f"unknown net '{name[:64]}'; known nets are {', '.join(known)} "
                              "(or name one as module:factory)", reason="unknown_net")
        info = _load_entry_point(found[0])
    _FOUND[name] = info
    return info


def _load_entry_point(ep: Any) -> NetInfo:
    source = f"entry point {ep.value}"
    try:
        obj = ep.load()
    except Exception as e:  # a user's package failing to import: named, never a traceback
        raise InvalidTask(f"net '{ep.name}': {source} does not load ({type(e).__name__}: {_short(e)})",
                          reason="bad_net") from None
    return info_from(ep.name, obj, source)


def _from_module(name: str) -> NetInfo:
    """``package.module:factory``, marked with ``net_factory`` (or a NetInfo); never the standard library."""
    if not _MODULE_NAME.match(name):
        raise InvalidTask(f"net {name[:64]!r} is not a name nor module:factory", reason="unknown_net")
    module, attr = name.split(":")
    if module.split(".")[0] in sys.stdlib_module_names:
        raise InvalidTask(f"net '{name}': the standard library holds no nets", reason="unknown_net")
    try:
        obj = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError):
        raise InvalidTask(f"net '{name}': no module '{module}' with '{attr}' is installed here",
                          reason="unknown_net") from None
    except Exception as e:  # the module's own code failed as it was imported
        raise InvalidTask(f"net '{name}': importing '{module}' failed ({type(e).__name__}: {_short(e)})",
                          reason="bad_net") from None
    if not isinstance(obj, NetInfo) and not hasattr(obj, "__dlbc_net__"):
        # A task must not make every node call any installed function it can name.
        raise InvalidTask(f"net '{name}': '{attr}' is not marked as a net factory (decorate it with "
                          "dlbc_ray.models.nets.net_factory)", reason="unknown_net")
    return info_from(name, obj, f"module {module}")


def available() -> list[tuple[NetInfo | None, str, str]]:
    """Every net this process can build: ``(info, name, problem)``; a broken plugin has info None."""
    rows: list[tuple[NetInfo | None, str, str]] = [(info, name, "") for name, info in NETS.items()]
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in NETS:
            rows.append((None, ep.name, f"{ep.value} is shadowed by the registered net of that name"))
            continue
        try:
            rows.append((_FOUND.setdefault(ep.name, _load_entry_point(ep)), ep.name, ""))
        except InvalidTask as e:
            rows.append((None, ep.name, str(e)))
    return rows


# ----------------------------------------------------------------- parameters


def checked_params(info: NetInfo, params: Mapping[str, Any]) -> dict[str, Any]:
    """The factory's parameters: the defaults, overridden by ``params`` converted to each default's type."""
    if not isinstance(params, Mapping):
        raise InvalidTask(f"net '{info.name}' parameters must be a mapping, got {type(params).__name__}",
                          reason="bad_param")
    return {**info.defaults, **{key: _checked_param(info, key, value) for key, value in params.items()}}


def _checked_param(info: NetInfo, key: Any, value: Any) -> Any:
    if key not in info.defaults:
        takes = ", ".join(info.defaults) or "no parameters"
        raise InvalidTask(f"net '{info.name}' has no parameter {_short(key, 40)}; it takes {takes}",
                          reason="unknown_param")
    default = info.defaults[key]
    if isinstance(default, bool) or isinstance(default, str):
        if type(value) is type(default):
            return value
    elif isinstance(default, tuple) and isinstance(value, list | tuple) and all(is_width(v) for v in value):
        return tuple(int(v) for v in value)
    elif isinstance(default, int) and is_width(value):
        return int(value)
    elif isinstance(default, float) and isinstance(value, Real) and not isinstance(value, bool):
        return float(value)
    kinds = {bool: "true or false", str: "text", tuple: "a list of positive ints", int: "a positive int"}
    kind = next((k for t, k in kinds.items() if isinstance(default, t)), "a number")
    raise InvalidTask(f"net '{info.name}' parameter '{key}' must be {kind}, got {_short(value)}", reason="bad_param")


def is_width(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool) and value > 0


def _short(value: Any, n: int = 60) -> str:
    text = repr(value) if not isinstance(value, BaseException) else " ".join(str(value).split())
    return text if len(text) <= n else text[: n - 3] + "..."


# --------------------------------------------------------------------- probing


def probe(info: NetInfo, kwargs: Mapping[str, Any], input_shape: tuple[int, ...], n_classes: int) -> Probe:
    """Build ``info``'s net on the meta device (no memory), run one sample, and find its special layers."""
    key = (info.name, info.source, _frozen(kwargs), input_shape, n_classes)
    if key not in _PROBES:
        if len(_PROBES) >= _PROBES_KEPT:
            _PROBES.clear()
        _PROBES[key] = _probe(info, kwargs, input_shape, n_classes)
        found = _PROBES[key].first_layer, _PROBES[key].watermark_layer
        if _LAYERS.setdefault(info.name, found) != found:
            raise InvalidTask(f"net '{info.name}' moves its first or watermark layer with its parameters; "
                              "layer names must be fixed per net", reason="unhostable_net")
    return _PROBES[key]


def _probe(info: NetInfo, kwargs: Mapping[str, Any], input_shape: tuple[int, ...], n_classes: int) -> Probe:
    calls: list[tuple[str, nn.Module, Any]] = []
    activations = [math.prod(input_shape)]
    try:
        with torch.device("meta"):
            net = info.factory(MappingProxyType(dict(kwargs)), input_shape, n_classes)
            if not isinstance(net, nn.Module):
                raise InvalidTask(f"net '{info.name}': its factory returned a {type(net).__name__}, not an "
                                  "nn.Module", reason="bad_net")
            x = torch.empty(1, *input_shape)
            hooks = _hooks(net, calls, activations)
            try:
                out = net(x)
            finally:
                for hook in hooks:
                    hook.remove()
    except DLBCError:
        raise
    except Exception as e:  # the user's factory or forward failed: one line, never a traceback
        raise InvalidTask(f"net '{info.name}' cannot be built or run on inputs {input_shape} "
                          f"({type(e).__name__}: {_short(e, 100)})", reason="bad_net") from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (1, n_classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise InvalidTask(f"net '{info.name}' gives {shape} for one sample, not (1, {n_classes})", reason="bad_net")
    params = sum(p.numel() for p in net.parameters())
    first, host = _special_layers(info, net, calls, x, input_shape)
    return Probe(Footprint(params, sum(activations)), first, host)


def _hooks(net: nn.Module, calls: list[tuple[str, nn.Module, Any]], activations: list[int]) -> list[Any]:
    """Record each parameter-holding module as it is called, and every leaf module's output size."""
    hooks = []
    for name, module in net.named_modules():
        if any(True for _ in module.parameters(recurse=False)):
            hooks.append(module.register_forward_pre_hook(
                lambda m, inputs, name=name: calls.append((name, m, inputs[0] if inputs else None))))
        if not any(True for _ in module.children()):
            hooks.append(module.register_forward_hook(
                lambda m, inputs, out: activations.append(out.numel() if isinstance(out, torch.Tensor) else 0)))
    return hooks


def _special_layers(info: NetInfo, net: nn.Module, calls: list[tuple[str, nn.Module, Any]], x: torch.Tensor,
                    input_shape: tuple[int, ...]) -> tuple[str, str]:
    from dlbc_ray.models import sml, watermark

    why = f"net '{info.name}' cannot carry the Secure Mapping Layer and watermark:"
    if not calls or not isinstance(calls[0][1], LAYERS) or not _reads(calls[0][2], x):
        what = f"'{calls[0][0]}' ({type(calls[0][1]).__name__})" if calls else "nothing"
        raise InvalidTask(f"{why} its first layer with weights is {what}, not a Linear or Conv reading the raw "
                          "input", reason="unhostable_net")
    first = f"{calls[0][0]}.weight"
    try:
        sml.sml_kind(tuple(calls[0][1].weight.shape), input_shape)
    except DLBCError as e:
        raise InvalidTask(f"{why} {e}", reason="unhostable_net") from None
    hosts = [f"{name}.weight" for name, m, _ in calls[1:] if isinstance(m, LAYERS) and f"{name}.weight" != first]
    weights = dict(net.named_parameters())
    if not hosts or watermark.host_size(tuple(weights[hosts[0]].shape)) < 1:
        raise InvalidTask(f"{why} no Linear or Conv layer after the first to host the mark", reason="unhostable_net")
    for declared, found, what in ((info.first_layer, first, "first"), (info.watermark_layer, None, "watermark")):
        if declared and (declared not in weights or weights[declared].dim() < 2 or found not in (None, declared)):
            raise InvalidTask(f"{why} its declared {what} layer {declared!r} is not {found or 'a Linear or Conv weight'}",
                              reason="unhostable_net")
    return first, info.watermark_layer or hosts[0]


def _reads(tensor: Any, x: torch.Tensor) -> bool:
    """``tensor`` is the raw input or a view of it (a flatten or reshape)."""
    return isinstance(tensor, torch.Tensor) and (tensor is x or tensor._base is x) and tensor.numel() == x.numel()


def _frozen(value: Any) -> Any:
    if isinstance(value, Mapping):
        return tuple(sorted((k, _frozen(v)) for k, v in value.items()))
    return tuple(value) if isinstance(value, list) else value
