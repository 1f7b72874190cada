"""Building a net on PyTorch's meta device: its size, and the layers the SML and the watermark use.

No memory is allocated for a user's net: the factory runs under ``torch.device("meta")`` and one sample goes
through with hooks that record which parameter-holding modules are called, in order, and
how large every leaf's output is. The first must be a Linear or Conv reading the raw input
(the Secure Mapping Layer folds into it); the next Linear or Conv hosts the watermark.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from dlbc_ray.errors import DLBCError, InvalidTask

if TYPE_CHECKING:
    from dlbc_ray.models.plugins import NetInfo

LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
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
class Probe:
    """What building a net on the meta device showed: its size and its two special layers."""

    footprint: Footprint
    first_layer: str
    watermark_layer: str


_LAYERS: dict[str, tuple[str, str]] = {}  # layers probing found, per net name
_PROBES: dict[Any, Probe] = {}


def found_layers(name: str) -> tuple[str, str] | None:
    """(first layer, watermark layer) that probing found for net ``name`` in this process, if it ran."""
    return _LAYERS.get(name)


def forget(names: list[str]) -> None:
    """Drop the probes and layers found for these net names (their code is being replaced)."""
    for key in [k for k in _PROBES if k[0] in names]:
        del _PROBES[key]
    for name in names:
        _LAYERS.pop(name, None)


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
        # fork_rng: a CPU probe draws initial weights, which must not move the caller's RNG stream
        with torch.random.fork_rng(devices=[]), torch.device(_device(info)), torch.no_grad():
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


def _device(info: NetInfo) -> str:
    """Where to probe: a built-in whose size formula was already checked runs one real sample on the CPU.

    The meta device routes a forward through torch's Python decompositions, whose first call imports
    torch._dynamo (about a second of CPU in every fresh actor, on the first block's path); a built-in
    cannot allocate more than its checked formula says, so nothing is gained by avoiding memory for it.
    A user's net is always probed on the meta device, before any of its memory exists.
    """
    return "cpu" if info.source == "built-in" and info.footprint is not None else "meta"


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


def _short(value: Any, n: int = 60) -> str:
    text = repr(value) if not isinstance(value, BaseException) else " ".join(str(value).split())
    return text if len(text) <= n else text[: n - 3] + "..."


