"""Uchida et al. (2017) DNN watermark, as DLBC uses it to bind a model to its miner.

The miner embeds T bits ``b`` in the filter mean ``w`` (length M) of one host weight (for a
Linear host, the means of row blocks: see ``filter_mean``) by
adding ``lam * sum_j BCE(sigmoid((w X)_j), b_j)`` to its task loss. ``X`` (M x T, N(0,1))
comes from a 32-byte secret, so only the owner, and whoever it reveals the secret to,
can read the mark; ``b`` comes from the miner's public key, so the mark names an identity.
Validators check ownership on plain numpy weights with one matrix-vector product:
``b_hat = 1[(w X) > 0]`` and the bit error rate against ``b`` (0 for a genuine model).

Capacity: with T <= M any bit string is reachable; past that, T random sign constraints
in M dimensions are jointly satisfiable only with shrinking probability (Cover: about
T < 2M; on sklearn digits a 128-long filter mean never reached BER 0 with T = 256), so
``derive_key`` refuses T > M; ``WatermarkConfig.bits_for`` picks T <= M/2 for small hosts.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from dlbc_ray.errors import ConfigError, InvalidModelFile, KeyFileError

SECRET_BYTES = 32
KEY_DOMAIN = b"dlbc/watermark-key/v1|"
BITS_DOMAIN = b"dlbc/watermark-bits/v1|"
KEYS_KEPT = 16  # derived keys a process keeps (8 MiB of X each at M = 8192, T = 256; 16 more with ``xt`` built)


class WatermarkConfig(BaseModel):
    """Watermark settings; defaults are Uchida's (T = 256 bits, lambda = 0.01, BER 0)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    t: int = Field(default=256, ge=1, description="watermark length in bits")
    lam: float = Field(default=0.01, ge=0.0, description="weight of the embedding loss")
    max_ber: float = Field(default=0.0, ge=0.0, le=1.0, description="largest bit error rate that proves ownership")

    def bits_for(self, m: int) -> int:
        """T for a host of M weights: ``t`` capped at M/2 (Uchida's own ratio is 256/576).

        Measured on digits with a 128-long host: at T = M embedding took 7-13 epochs and 65%
        pruning cost 2-6% BER; at T = M/2, 3-4 epochs and BER 0 after 65% pruning. The registry
        mlp's host is now 8192 long, so it carries Uchida's full 256 bits.
        """
        return max(1, min(self.t, m // 2))


@dataclass(frozen=True)
class WatermarkKey:
    """What a verifier needs: the host tensor's name, the secret projection X and the bits."""

    layer: str
    x: np.ndarray  # (M, T) float32, N(0, 1)
    bits: np.ndarray  # (T,) uint8 in {0, 1}

    @cached_property
    def xt(self) -> torch.Tensor:
        """X^T, contiguous, made once per key: the training term's ``X^T w`` is 2x faster than ``w X``, and
        the transposing copy (~14 ms at M = 8192) was paid by every regularizer, i.e. every audit's replay."""
        return torch.from_numpy(np.ascontiguousarray(self.x.T, dtype=np.float32))


def derive_key(secret: bytes, public_key: str, layer: str, m: int, t: int = 256) -> WatermarkKey:
    """The key of one owner for one host tensor of M weights: X from ``secret``, bits from ``public_key``.

    The last ``KEYS_KEPT`` keys are kept: a validator derives the same miner's key for every submission
    it audits (M x T normals, ~20-40 ms each), and the same read-only key object serves all of them."""
    if len(secret) != SECRET_BYTES:
        raise KeyFileError(f"watermark secret has {len(secret)} bytes; it needs {SECRET_BYTES}")
    if not 1 <= t <= m:
        raise ConfigError(f"cannot embed {t} watermark bits in host '{layer}' of M={m} weights; use 1 <= T <= M")
    return _derived_key(bytes(secret), public_key, layer, m, t)


@lru_cache(maxsize=KEYS_KEPT)
def _derived_key(secret: bytes, public_key: str, layer: str, m: int, t: int) -> WatermarkKey:
    label = KEY_DOMAIN + f"{layer}|{m}|{t}".encode()
    seed = hmac.new(secret, label, hashlib.sha256).digest()
    rng = np.random.Generator(np.random.PCG64(int.from_bytes(seed, "big")))
    x = rng.standard_normal((m, t), dtype=np.float32)
    x.flags.writeable = False
    return WatermarkKey(layer=layer, x=x, bits=owner_bits(public_key, t))


def owner_bits(public_key: str, t: int) -> np.ndarray:
    """T bits expanded from SHA-256 of the public key (counter mode), read-only."""
    blocks = math.ceil(t / 256)
    stream = b"".join(hashlib.sha256(BITS_DOMAIN + public_key.encode() + i.to_bytes(4, "big")).digest()
                      for i in range(blocks))
    bits = np.unpackbits(np.frombuffer(stream, dtype=np.uint8))[:t].copy()
    bits.flags.writeable = False
    return bits


MAX_LINEAR_HOST = 8192  # longest w a Linear host gives; X is M x T float32 per key (8 MiB at T = 256)


def _row_groups(weight_shape: tuple[int, ...]) -> int:
    """How many row blocks of a Linear host are averaged separately: every row while out*in fits."""
    if len(weight_shape) != 2:
        return 1
    out, inputs = weight_shape
    return max(1, min(out, MAX_LINEAR_HOST // inputs))


def host_size(weight_shape: tuple[int, ...]) -> int:
    """M, the length of w: ``D * prod(k)`` for Conv (L, D, *k); up to ``MAX_LINEAR_HOST`` for Linear."""
    if len(weight_shape) < 2:
        raise ConfigError(f"a watermark host needs a Linear or Conv weight, not shape {tuple(weight_shape)}")
    return _row_groups(tuple(weight_shape)) * math.prod(weight_shape[1:])


def filter_mean(weight: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """Uchida's w, flattened (torch layout); differentiable on tensors.

    A Conv host gives the mean over its output filters, as in the paper. A Linear host's
    filter mean (its ``in`` inputs) is too short: on the digits mlp a thief's own 64-bit mark
    overwrote the owner's in 3-4 epochs of fine-tuning. So a Linear host averages contiguous
    blocks of rows instead, as many blocks as fit in ``MAX_LINEAR_HOST`` (every row for small
    nets), which leaves room for the owner's mark to survive a second one.
    """
    groups = _row_groups(tuple(weight.shape))
    host_size(tuple(weight.shape))
    if groups == weight.shape[0]:  # one row a block: the weights themselves (a mean of one is a slow copy)
        return weight.reshape(-1)
    rows = weight.shape[0] // groups * groups
    blocks = weight[:rows].reshape(groups, rows // groups, *weight.shape[1:])
    return blocks.mean(1).reshape(-1) if isinstance(weight, torch.Tensor) else np.asarray(blocks).mean(1).reshape(-1)


class WatermarkRegularizer:
    """``lam * sum_j BCE-with-logits((w X)_j, b_j)``, added to the task loss while training.

    A plain callable, not an ``nn.Module``: the secret X must never reach a state_dict.
    """

    name = "watermark"

    def __init__(self, key: WatermarkKey, lam: float = 0.01) -> None:
        self.key = key
        self.lam = lam
        self._xt = key.xt  # shared by the key's regularizers; ``__call__`` moves its own copy to a GPU
        self._bits = torch.from_numpy(np.array(key.bits, dtype=np.float32))

    def __call__(self, net: nn.Module) -> torch.Tensor:
        weight = self._host(net)
        if self._xt.device != weight.device or self._xt.dtype != weight.dtype:
            self._xt = self._xt.to(weight.device, weight.dtype)
            self._bits = self._bits.to(weight.device, weight.dtype)
        logits = self._xt @ filter_mean(weight)
        return self.lam * F.binary_cross_entropy_with_logits(logits, self._bits, reduction="sum")

    def _host(self, net: nn.Module) -> torch.Tensor:
        params = dict(net.named_parameters())
        if self.key.layer not in params:
            raise ConfigError(f"watermark host '{self.key.layer}' is not a parameter of {type(net).__name__}")
        weight = params[self.key.layer]
        if host_size(tuple(weight.shape)) != self.key.x.shape[0]:
            raise ConfigError(f"watermark host '{self.key.layer}' has M={host_size(tuple(weight.shape))}, "
                              f"the key expects {self.key.x.shape[0]}")
        return weight


def _projection(weights: Mapping[str, np.ndarray], key: WatermarkKey | KeyRing) -> np.ndarray:
    """(w X) for the host tensor in ``weights``; rejects a missing, misshapen or non-finite host."""
    return host_vector(weights, key) @ key.x


def host_vector(weights: Mapping[str, np.ndarray], key: WatermarkKey | KeyRing) -> np.ndarray:
    """The host tensor's w (``filter_mean``) that ``key`` projects; rejects a missing, misshapen or non-finite host."""
    if key.layer not in weights:
        raise InvalidModelFile(f"model has no tensor '{key.layer}' to host the watermark", reason="wrong_architecture")
    weight = np.asarray(weights[key.layer])
    if weight.ndim < 2 or host_size(weight.shape) != key.x.shape[0]:
        raise InvalidModelFile(f"tensor '{key.layer}' has shape {weight.shape}, the watermark key expects "
                               f"M={key.x.shape[0]}", reason="wrong_architecture")
    w = filter_mean(weight.astype(np.float32, copy=False))
    if not np.all(np.isfinite(w)):
        raise InvalidModelFile(f"tensor '{key.layer}' holds non-finite values", reason="non_finite")
    return np.asarray(w)


@dataclass(frozen=True)
class KeyRing:
    """Many owners' keys over one host, side by side: one product ``w [X_1 .. X_N]`` reads every mark.

    A validator checks each submission against several owners; N separate ``w X_k`` each stream
    their own M x T matrix, the ring does it in one BLAS call with one filter mean. Key k owns
    columns ``bounds[k]:bounds[k + 1]``.
    """

    layer: str
    x: np.ndarray  # (M, sum of T) float32
    bits: np.ndarray  # (sum of T,) uint8
    bounds: np.ndarray  # (N + 1,) int64 column offsets


def key_ring(keys: Sequence[WatermarkKey]) -> KeyRing:
    """Stack keys of one host tensor (same layer, same M) into a ring; their T may differ."""
    if not keys:
        raise ConfigError("a key ring needs at least one watermark key")
    layers, sizes = {k.layer for k in keys}, {k.x.shape[0] for k in keys}
    if len(layers) != 1 or len(sizes) != 1:
        raise ConfigError(f"a key ring holds keys of one host; got layers {sorted(layers)} and M {sorted(sizes)}")
    x = np.ascontiguousarray(np.concatenate([k.x for k in keys], axis=1))
    bits = np.concatenate([k.bits for k in keys])
    bounds = np.concatenate([[0], np.cumsum([k.bits.shape[0] for k in keys])]).astype(np.int64)
    for a in (x, bits, bounds):
        a.flags.writeable = False
    return KeyRing(layer=keys[0].layer, x=x, bits=bits, bounds=bounds)


def bit_errors(weights: Mapping[str, np.ndarray], ring: KeyRing) -> np.ndarray:
    """Per key of the ring, how many of its bits the model gets wrong (the same counts as
    ``bit_error_rate(weights, key) * T`` key by key), from one projection."""
    wrong = (_projection(weights, ring) > 0).astype(np.uint8) != ring.bits
    return np.add.reduceat(wrong.astype(np.int64), ring.bounds[:-1])


def bit_errors_many(models: Sequence[Mapping[str, np.ndarray]], keys: Sequence[WatermarkKey]) -> np.ndarray:
    """``bit_errors`` of each of ``models`` (rows) under each of ``keys`` (columns, keys of one host): all models
    at once, one product per key. A ballot reads each key once, not once per submission (64 owners: 64 passes over
    a 512 MiB ring cost 2.5 s of CPU, the products 0.24 s), and needs no ring (building one of 64 keys: 2.9 s)."""
    if len({k.layer for k in keys}) > 1 or len({k.x.shape[0] for k in keys}) > 1:
        raise ConfigError("keys read together must be keys of one host")
    out = np.zeros((len(models), len(keys)), dtype=np.int64)
    if not models or not keys:
        return out
    hosts = np.stack([host_vector(weights, keys[0]) for weights in models])
    for i, key in enumerate(keys):
        out[:, i] = (((hosts @ key.x) > 0).astype(np.uint8) != key.bits[None, :]).sum(axis=1)
    return out


def extract_bits(weights: Mapping[str, np.ndarray], key: WatermarkKey) -> np.ndarray:
    """The bits the model carries under ``key``: 1 where sigmoid((w X)_j) > 0.5."""
    return (_projection(weights, key) > 0).astype(np.uint8)


def bit_error_rate(weights: Mapping[str, np.ndarray], key: WatermarkKey) -> float:
    """Share of the key's bits the model gets wrong (0 for the owner's model, ~0.5 otherwise)."""
    return float(np.mean(extract_bits(weights, key) != key.bits))


def projection_margin(weights: Mapping[str, np.ndarray], key: WatermarkKey) -> float:
    """Mean sigmoid output agreeing with the bits: ~1 for a strong embedding, ~0.5 for none."""
    probs = 0.5 * (1.0 + np.tanh(0.5 * _projection(weights, key).astype(np.float64)))  # overflow-free sigmoid
    return float(np.mean(np.where(key.bits == 1, probs, 1.0 - probs)))


def signed_margins(weights: Mapping[str, np.ndarray], key: WatermarkKey) -> np.ndarray:
    """Per bit, how far (w X)_j sits on the right side of 0 (negative where the bit is wrong)."""
    return _projection(weights, key) * np.where(key.bits == 1, 1.0, -1.0)


def chance_of_matching(errors: int, t: int) -> float:
    """P(a model that never saw this key shows at most ``errors`` bit errors): Binomial(T, 1/2)."""
    return sum(math.comb(t, k) for k in range(errors + 1)) / 2**t


def check_ownership(weights: Mapping[str, np.ndarray], key: WatermarkKey, max_ber: float = 0.0) -> bool:
    """True when the weights carry the key's owner's mark within ``max_ber`` bit errors."""
    return bit_error_rate(weights, key) <= max_ber


def settle(net: nn.Module, key: WatermarkKey, *, margin: float = 0.5, max_steps: int = 500,
           lr: float = 1e-2) -> int:
    """Nudge only the host layer until every bit reads back at least ``margin`` from 0; returns the steps.

    Training embeds the mark, but a task with very few epochs may stop short, or leave a
    bit so near 0 that pruning flips it; an honest miner settles the mark to a margin
    before signing rather than risk being judged a thief. The steps
    minimise the embedding loss alone with plain SGD (Adam would move every weight by ``lr``),
    so the task barely moves: on digits after 1-2 epochs, <= 211 steps, accuracy within 2 points.
    """
    regularizer = WatermarkRegularizer(key, lam=1.0)
    weight = regularizer._host(net)
    for step in range(max_steps + 1):
        weights = {key.layer: weight.detach().cpu().numpy()}
        if float(np.min(signed_margins(weights, key))) >= margin:
            return step
        if step == max_steps:
            break
        weight.grad = None
        regularizer(net).backward()
        with torch.no_grad():  # torch.optim.SGD's step without momentum or decay, minus its torch._dynamo import
            weight.add_(weight.grad, alpha=-lr)
    return max_steps
