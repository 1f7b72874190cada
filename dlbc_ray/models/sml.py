"""PoLe's Secure Mapping Layer (SML): a fixed, secret, invertible linear map at the model's input.

PoLe only says the SML is a linear layer that exposes cheating nodes; the construction is
ours. Each (miner, task) pair gets an orthogonal Q from ``derive_seed(secret, task_id)``.
The miner trains ``net(Q x)`` and its submission commits to ``seed_commitment(seed)``; the
seed is revealed after the submission window closes and validators score the weights on
``Q x``. Weights copied from another miner and scored through the copier's own map see
rotated inputs and fall to about chance. The requester gets Q folded into the first layer
(``fold_into_first_layer``), so the delivered model works on raw inputs.

Where Q acts, chosen by the first layer: "dense" (a Linear over the flattened input; Q is
n x n, n = prod(input_shape); fold W' = W Q) or "channel" (a Conv with C input channels;
Q is C x C, mixing channels at every position; fold W'[o, i] = sum_c W[o, c] Q[c, i]).

Limits, honestly:
- A 1-channel conv input gets a 1 x 1 map, i.e. +-1: it protects nothing, and a 3-channel
  one has only 3 degrees of freedom to search. There validators rely on the watermark.
- The map protects the submission window only. Once a seed is revealed or a folded model
  delivered, anyone can re-map those weights to their own Q (W Q_a Q_b^T).
- A thief can always fine-tune stolen weights through its own map; the SML then costs it
  a relearnt first layer, which is most of the work for a small MLP but little for a deep
  net. The watermark, not the SML, is the primary ownership proof.
- Q comes from LAPACK's QR; different BLAS builds may differ in the last float32 bits, so
  scores near a rounding boundary could differ across validators by one unit.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Mapping
from functools import lru_cache
from typing import Any, Literal, TypeVar

import numpy as np
import torch
from torch import nn

from dlbc_ray.errors import ConfigError, InvalidModelFile, KeyFileError

SECRET_BYTES = 32
SEED_DOMAIN = b"dlbc/sml-seed/v1|"
COMMIT_DOMAIN = b"dlbc/sml-commit/v1|"
MATRIX_DOMAIN = b"dlbc/sml-matrix/v1|"
Kind = Literal["dense", "channel"]
ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


def derive_seed(secret: bytes, task_id: str) -> bytes:
    """The 32-byte seed of one miner's map for one task: HMAC-SHA256(secret, domain | task_id)."""
    if len(secret) != SECRET_BYTES:
        raise KeyFileError(f"SML secret has {len(secret)} bytes; it needs {SECRET_BYTES}")
    return hmac.new(secret, SEED_DOMAIN + task_id.encode(), hashlib.sha256).digest()


def seed_commitment(seed: bytes) -> str:
    """Hex SHA-256 of the seed under a domain tag; goes in the submission before the reveal."""
    return hashlib.sha256(COMMIT_DOMAIN + seed).hexdigest()


def is_valid_reveal(seed: bytes, commitment: str) -> bool:
    """True when a revealed seed matches the commitment made with the submission."""
    return len(seed) == SECRET_BYTES and hmac.compare_digest(seed_commitment(seed), commitment)


@lru_cache(maxsize=8)
def mapping_matrix(seed: bytes, n: int) -> np.ndarray:
    """A deterministic Haar-random orthogonal (n, n) float32 matrix; read-only because it is cached."""
    if len(seed) != SECRET_BYTES or n < 1:
        raise ConfigError(f"an SML map needs a {SECRET_BYTES}-byte seed and n >= 1, got {len(seed)} bytes, n={n}")
    digest = hashlib.sha256(MATRIX_DOMAIN + seed).digest()
    rng = np.random.Generator(np.random.PCG64(int.from_bytes(digest, "big")))
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    q = (q * np.sign(np.diag(r))).astype(np.float32)  # sign fix makes QR's Q Haar-distributed (Mezzadri 2007)
    q.flags.writeable = False
    return q


def sml_kind(first_weight_shape: tuple[int, ...], input_shape: tuple[int, ...]) -> Kind:
    """"dense" for a Linear over the flattened input, "channel" for a Conv over the input's channels."""
    first, n = tuple(first_weight_shape), math.prod(input_shape)
    if len(first) == 2 and first[1] == n:
        return "dense"
    if len(first) == len(input_shape) + 1 and len(first) >= 3 and first[1] == input_shape[0]:
        return "channel"
    raise ConfigError(f"first layer of shape {first} does not read inputs of shape {tuple(input_shape)}")


def map_size(kind: Kind, input_shape: tuple[int, ...]) -> int:
    """The side of Q: all input features for "dense", the input channels for "channel"."""
    return math.prod(input_shape) if kind == "dense" else input_shape[0]


def map_inputs(x: ArrayT, q: np.ndarray | torch.Tensor, kind: Kind) -> ArrayT:
    """Apply Q to every example of a batch (numpy or torch, result of the same type)."""
    _check_kind(kind)
    is_torch = isinstance(x, torch.Tensor)
    qq: Any = _torch_q(q, x) if is_torch else np.asarray(q, dtype=x.dtype)
    lib: Any = torch if is_torch else np
    if kind == "dense":
        flat = x.reshape(x.shape[0], -1)
        _check_side(flat.shape[1], qq.shape[0], kind)
        return (flat @ qq.T).reshape(x.shape)
    _check_side(x.shape[1], qq.shape[0], kind)
    return lib.einsum("ij,bj...->bi...", qq, x)


def _torch_q(q: np.ndarray | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    if isinstance(q, torch.Tensor):
        return q.to(device=x.device, dtype=x.dtype)
    return torch.tensor(np.asarray(q), dtype=x.dtype, device=x.device)  # copies: cached Q is read-only


def _check_kind(kind: str) -> None:
    if kind not in ("dense", "channel"):
        raise ConfigError(f"unknown SML kind '{kind}'; use 'dense' or 'channel'")


def _check_side(features: int, side: int, kind: str) -> None:
    if features != side:
        raise ConfigError(f"{kind} SML map is {side} x {side} but the batch has {features} features/channels")


class SecureMappingLayer(nn.Module):
    """The fixed map as a layer; Q is a non-persistent buffer, so it never reaches a state_dict."""

    q: torch.Tensor

    def __init__(self, q: np.ndarray, kind: Kind) -> None:
        super().__init__()
        self.kind: Kind = kind
        self.register_buffer("q", torch.tensor(np.asarray(q), dtype=torch.float32), persistent=False)
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return map_inputs(x, self.q, self.kind)

    def extra_repr(self) -> str:
        return f"kind={self.kind}, n={self.q.shape[0]}"


class MappedNet(nn.Module):
    """``net(sml(x))`` whose parameter and state_dict names are exactly the inner net's.

    It shares the inner net's parameter, buffer and child tables instead of nesting the net,
    so the miner's weights load straight into the plain registry net and the watermark's
    host name is unchanged. The SML is held outside those tables and moved alongside them.
    """

    def __init__(self, net: nn.Module, sml: SecureMappingLayer) -> None:
        super().__init__()
        object.__setattr__(self, "net", net)  # not a child: that would prefix every key with "net."
        object.__setattr__(self, "sml", sml)
        self._parameters = net._parameters
        self._buffers = net._buffers
        self._non_persistent_buffers_set = net._non_persistent_buffers_set
        self._modules = net._modules

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.sml(x))

    def _apply(self, fn: Any, recurse: bool = True) -> MappedNet:
        self.sml._apply(fn, recurse)
        return super()._apply(fn, recurse)

    def train(self, mode: bool = True) -> MappedNet:
        self.net.training = self.sml.training = mode
        return super().train(mode)

    def extra_repr(self) -> str:
        return f"sml={self.sml.extra_repr()}"


def fold_into_first_layer(weights: Mapping[str, np.ndarray], first_layer: str, q: np.ndarray,
                          kind: Kind) -> dict[str, np.ndarray]:
    """New weights whose plain net on raw x equals the original weights' net on ``Q x``."""
    _check_kind(kind)
    if first_layer not in weights:
        raise InvalidModelFile(f"model has no first-layer tensor '{first_layer}'", reason="wrong_architecture")
    w = np.asarray(weights[first_layer])
    if w.ndim < 2 or w.shape[1] != q.shape[0]:
        raise InvalidModelFile(f"tensor '{first_layer}' of shape {w.shape} does not fit a {q.shape[0]}-wide "
                               f"{kind} map", reason="wrong_architecture")
    q64 = np.asarray(q, dtype=np.float64)
    folded = w @ q64 if kind == "dense" else np.einsum("oc...,ci->oi...", w, q64)
    return {**weights, first_layer: folded.astype(w.dtype)}
