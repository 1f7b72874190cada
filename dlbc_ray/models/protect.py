"""What miners and validators must derive identically: a miner's watermark key and mapping layer.

A miner's two secrets are pure functions of its identity, so whoever holds the identity
(the miner itself, the process that assembles the network) derives them; no actor
method ever hands them out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from dlbc_ray.config import ProtectionConfig
from dlbc_ray.crypto import Identity
from dlbc_ray.errors import InvalidModelFile
from dlbc_ray.models import sml, watermark
from dlbc_ray.models.nets import net_info


def mark_secret(identity: Identity) -> bytes:
    """The secret behind a miner's watermark key; validators get it from the network's assembler."""
    return identity.derive("watermark")


def mapping_seed(identity: Identity, task_id: str, round_id: str) -> bytes:
    """The seed of a miner's Secure Mapping Layer for one round of one task, sealed until its window closes.

    Per round, not per task: a seed revealed when a round closes must not protect the
    same task's retry, whose window opens after everyone has seen it.
    """
    return sml.derive_seed(identity.derive("sml"), f"{task_id}|{round_id}")


def _shapes(net: nn.Module | Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    tensors = dict(net.named_parameters()) if isinstance(net, nn.Module) else net
    return {name: tuple(t.shape) for name, t in tensors.items()}


def watermark_key(secret: bytes, public_key: str, net: nn.Module | Mapping[str, Any], model: str,
                  bits: int) -> watermark.WatermarkKey:
    """A miner's key for the host layer of ``model``; T is capped at M/2 (``WatermarkConfig.bits_for``)."""
    layer = net_info(model).watermark_layer
    shapes = _shapes(net)
    if layer not in shapes:
        raise InvalidModelFile(f"model has no watermark host tensor '{layer}'", reason="wrong_architecture")
    m = watermark.host_size(shapes[layer])
    return watermark.derive_key(secret, public_key, layer, m, watermark.WatermarkConfig(t=bits).bits_for(m))


def mapping_layer(seed: bytes, net: nn.Module | Mapping[str, Any], model: str,
                  input_shape: tuple[int, ...]) -> tuple[np.ndarray, sml.Kind]:
    """The Secure Mapping Layer's matrix and kind for ``model`` on inputs of ``input_shape``."""
    first = _shapes(net)[net_info(model).first_layer]
    kind = sml.sml_kind(first, input_shape)
    return sml.mapping_matrix(seed, sml.map_size(kind, input_shape)), kind


@dataclass(frozen=True)
class MarkReading:
    """One key read against one model, judged the way validators judge it."""

    t: int
    errors: int
    ber: float
    chance: float  # P(an unmarked model matches this well)
    owned: bool  # the owner's mark is intact (BER <= max_ber)
    carried: bool  # the key's mark is there beyond chance (a stolen model if it is not the submitter's)


def read_mark(weights: Mapping[str, Any], key: watermark.WatermarkKey, protection: ProtectionConfig) -> MarkReading:
    t = int(key.bits.shape[0])
    errors = int(round(watermark.bit_error_rate(weights, key) * t))
    chance = watermark.chance_of_matching(errors, t)
    return MarkReading(t=t, errors=errors, ber=errors / t, chance=chance, owned=errors / t <= protection.max_ber,
                       carried=chance < protection.foreign_p)


def layer_distance(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> float:
    """Median over tensors of ||a_k - b_k|| / ||b_k||; inf when the architectures differ.

    Per tensor and by median, so re-marking one host layer (the cheapest disguise of a copy)
    moves one term, not the verdict; independently trained models differ in every tensor.
    """
    if a.keys() != b.keys() or any(np.shape(a[k]) != np.shape(b[k]) for k in a):
        return float("inf")
    ratios = [float(np.linalg.norm((a[k].astype(np.float64) - b[k]).ravel()))
              / max(float(np.linalg.norm(b[k].astype(np.float64).ravel())), 1e-30)
              for k in sorted(a) if np.issubdtype(np.asarray(a[k]).dtype, np.floating)]
    return float(np.median(ratios)) if ratios else float("inf")
