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
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from importlib.metadata import entry_points
from numbers import Integral, Real
from types import MappingProxyType
from typing import Any

from torch import nn

from dlbc_ray.errors import InvalidTask
from dlbc_ray.models.probe import Footprint, Probe, found_layers, probe

__all__ = ["ENTRY_POINT_GROUP", "NETS", "Footprint", "NetInfo", "Probe", "available", "checked_params", "entry", "forget_package",
           "info_from", "is_width", "net_factory", "net_info", "probe", "register_net"]

ENTRY_POINT_GROUP = "dlbc_ray.nets"
NetFactory = Callable[[Mapping[str, Any], tuple[int, ...], int], nn.Module]
_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$")


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


NETS: dict[str, NetInfo] = {}
_FOUND: dict[str, NetInfo] = {}  # entry points and module:factory names, resolved once per process


def net_factory(*, description: str = "", defaults: Mapping[str, Any] | None = None, watermark_layer: str = "",
                first_layer: str = "") -> Callable[[NetFactory], NetFactory]:
    """Decorate a user's factory with what ``dlbc-ray nets`` shows and the parameters it takes."""
    def mark(factory: NetFactory) -> NetFactory:
        setattr(factory, "__dlbc_net__", {"description": description, "defaults": dict(defaults or {}),
                                          "watermark_layer": watermark_layer, "first_layer": first_layer})
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
    found = found_layers(name)
    if found is None:
        raise InvalidTask(f"net '{name}' declares no first and watermark layers and has not been built here yet; "
                          "declare them (net_factory(first_layer=..., watermark_layer=...))", reason="unhostable_net")
    first, host = found
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


def forget_package(package: str) -> None:
    """Drop what this process learned about nets named ``package.module:factory`` (a new version arrives)."""
    from dlbc_ray.models.probe import forget

    names = [n for n in _FOUND if n.startswith((package + ".", package + ":"))]
    for name in names:
        del _FOUND[name]
    forget(names)


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
