"""Weights as plain numpy: the form that is hashed, signed, stored and shipped.

Floating tensors become float32 so a model hashes the same however it was trained
(GPU, mixed precision); integer buffers keep their dtype.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from dlbc_ray.errors import InvalidModelFile


def to_numpy(net_or_state_dict: nn.Module | Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Detached CPU copies (float32 for floating tensors), never views of live parameters."""
    state = net_or_state_dict.state_dict() if isinstance(net_or_state_dict, nn.Module) else net_or_state_dict
    return {name: _array(tensor) for name, tensor in state.items()}


def _array(tensor: torch.Tensor) -> np.ndarray:
    if tensor.is_cpu and (tensor.dtype == torch.float32 or not tensor.is_floating_point()):
        # already the form: one C-ordered copy, 0-d as 1-d like ``ascontiguousarray`` (a transcript makes ~100 a run)
        return np.array(tensor.detach().numpy(), order="C", ndmin=1)
    dtype = torch.float32 if tensor.is_floating_point() else tensor.dtype
    return np.ascontiguousarray(tensor.detach().to(device="cpu", dtype=dtype, copy=True).numpy())


def expected_dtype(tensor: torch.Tensor) -> np.dtype:
    """The numpy dtype ``to_numpy`` gives this tensor."""
    return np.dtype(np.float32) if tensor.is_floating_point() else torch.empty(0, dtype=tensor.dtype).numpy().dtype


def check_architecture(net: nn.Module, weights: Mapping[str, np.ndarray]) -> None:
    """Raise ``InvalidModelFile`` naming the first tensor that does not fit ``net`` exactly."""
    state = net.state_dict()
    for name, tensor in state.items():
        if name not in weights:
            raise _wrong(f"missing tensor '{name}'")
        array = np.asarray(weights[name])
        if tuple(array.shape) != tuple(tensor.shape):
            raise _wrong(f"tensor '{name}' has shape {tuple(array.shape)}, the net needs {tuple(tensor.shape)}")
        if np.dtype(array.dtype) != expected_dtype(tensor):
            raise _wrong(f"tensor '{name}' has dtype {array.dtype}, the net needs {expected_dtype(tensor)}")
    unexpected = [name for name in weights if name not in state]
    if unexpected:
        raise _wrong(f"unexpected tensor '{unexpected[0]}'")


def _wrong(message: str) -> InvalidModelFile:
    return InvalidModelFile(f"wrong architecture: {message}", reason="wrong_architecture")


def load_into(net: nn.Module, weights: Mapping[str, np.ndarray]) -> nn.Module:
    """Copy ``weights`` into ``net`` in place, strictly; returns ``net``."""
    check_architecture(net, weights)
    state = {name: _tensor(np.asarray(weights[name])) for name in net.state_dict()}
    net.load_state_dict(state, strict=True)
    return net


def _tensor(array: np.ndarray) -> torch.Tensor:
    # Arrays from the object store or safetensors are read-only; torch wants a writable buffer.
    if not (array.flags.writeable and array.flags.c_contiguous):
        array = np.array(array, order="C", copy=True)
    return torch.from_numpy(array)


def nbytes(weights: Mapping[str, np.ndarray]) -> int:
    """Total size of the tensors' data in bytes."""
    return sum(int(np.asarray(a).nbytes) for a in weights.values())
