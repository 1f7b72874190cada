"""Merging weight dicts of one architecture: order-independent averaging rules and the ensemble stack.

Weight-averaging rules (``fedavg``, ``trimmed_mean``, ``coordinate_median``) work on plain
numpy weight dicts and return one of the same architecture. An ensemble is not one net's
weights, so ``stack_members`` packs its members into one dict that loads into
``models.ensemble.EnsembleNet`` (mean of the members' softmax): ``evaluate(net, weights,
test)`` then scores it unchanged. Numpy only: no torch here.

No rule depends on the members' order: values are sorted per coordinate before they are
summed sequentially in float64, so every validator gets the same bytes. Integer buffers
(step counters) are not averaged: the fused model keeps their maximum.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from dlbc_ray.crypto import hash_weights, sha256_hex
from dlbc_ray.errors import InvalidTask

Weights = Mapping[str, np.ndarray]
ENSEMBLE_DOMAIN = b"dlbc/ensemble/v1"


def _fail(message: str, reason: str) -> InvalidTask:
    return InvalidTask(message, reason=reason)


def check_same_architecture(weights_list: Sequence[Weights]) -> None:
    """Raise ``InvalidTask`` naming the first tensor in which a member differs from the first member."""
    if not weights_list:
        raise _fail("cannot fuse zero models", "too_few_models")
    first = weights_list[0]
    for i, other in enumerate(weights_list[1:], start=1):
        for name in sorted(set(first) | set(other)):
            if name not in first or name not in other:
                has, lacks = (i, 0) if name not in first else (0, i)
                raise _fail(f"cannot fuse: model {has} has tensor '{name}' but model {lacks} does not",
                            "wrong_architecture")
            a, b = np.asarray(first[name]), np.asarray(other[name])
            if a.shape != b.shape or a.dtype != b.dtype:
                raise _fail(f"cannot fuse: tensor '{name}' is {a.dtype}{list(a.shape)} in model 0 "
                            f"but {b.dtype}{list(b.shape)} in model {i}", "wrong_architecture")


def _ordered_sum(stack: np.ndarray) -> np.ndarray:
    """Sum over axis 0 in float64, values sorted per coordinate first: order-independent, bit-exact."""
    ordered = np.sort(stack, axis=0)
    total = ordered[0].copy()
    for row in ordered[1:]:
        total += row
    return total


def _fuse_each(weights_list: Sequence[Weights], reduce: Callable[[np.ndarray], np.ndarray]) -> dict[str, np.ndarray]:
    """Apply ``reduce`` to the float64 stack of every floating tensor; cast back to the tensor's dtype."""
    check_same_architecture(weights_list)
    fused: dict[str, np.ndarray] = {}
    for name, ref in weights_list[0].items():
        ref = np.asarray(ref)
        if ref.dtype.kind != "f":
            fused[name] = np.max(np.stack([np.asarray(w[name]) for w in weights_list]), axis=0)
            continue
        stack = np.stack([np.asarray(w[name], dtype=np.float64) for w in weights_list])
        fused[name] = np.ascontiguousarray(reduce(stack).astype(ref.dtype))
    return fused


def fedavg(weights_list: Sequence[Weights], examples: Sequence[int]) -> dict[str, np.ndarray]:
    """FedAvg: the mean of the members weighted by their training examples (McMahan et al. 2017)."""
    if len(examples) != len(weights_list):
        raise _fail(f"fedavg got {len(weights_list)} models but {len(examples)} example counts", "bad_fusion")
    if any(int(n) < 0 for n in examples) or sum(int(n) for n in examples) <= 0:
        raise _fail(f"fedavg needs non-negative example counts with a positive sum, got {list(examples)}",
                    "bad_fusion")
    counts = np.asarray([int(n) for n in examples], dtype=np.float64)
    total = float(counts.sum())
    shape = (-1,)

    def weighted_mean(stack: np.ndarray) -> np.ndarray:
        return _ordered_sum(stack * counts.reshape(shape + (1,) * (stack.ndim - 1))) / total

    return _fuse_each(weights_list, weighted_mean)


def trim_count(n_models: int, *, k: int | None = None, trim_fraction: float | None = None) -> int:
    """How many values trimmed-mean drops at each end: ``k``, or ``floor(trim_fraction * n)``; default 1."""
    if k is not None and trim_fraction is not None:
        raise _fail("give trimmed-mean either k or trim_fraction, not both", "bad_fusion")
    if trim_fraction is not None:
        if not 0.0 <= trim_fraction < 0.5:
            raise _fail(f"trim_fraction must be in [0, 0.5), got {trim_fraction}", "bad_fusion")
        k = int(trim_fraction * n_models)
    k = 1 if k is None else k
    if k < 0:
        raise _fail(f"trimmed-mean k must be >= 0, got {k}", "bad_fusion")
    if n_models <= 2 * k:
        raise _fail(f"trimmed-mean with k={k} needs more than {2 * k} models, got {n_models}", "too_few_models")
    return k


def trimmed_mean(weights_list: Sequence[Weights], *, k: int | None = None,
                 trim_fraction: float | None = None) -> dict[str, np.ndarray]:
    """Per coordinate, drop the ``k`` lowest and ``k`` highest values and average the rest (Yin et al. 2018)."""
    k = trim_count(len(weights_list), k=k, trim_fraction=trim_fraction)
    kept = len(weights_list) - 2 * k
    return _fuse_each(weights_list, lambda stack: _ordered_sum(np.sort(stack, axis=0)[k: k + kept]) / kept)


def coordinate_median(weights_list: Sequence[Weights]) -> dict[str, np.ndarray]:
    """Per coordinate median; with an even count, the mean of the middle two (in float64)."""

    def median(stack: np.ndarray) -> np.ndarray:
        ordered, mid = np.sort(stack, axis=0), len(stack) // 2
        return ordered[mid] if len(stack) % 2 else (ordered[mid - 1] + ordered[mid]) / 2.0

    return _fuse_each(weights_list, median)


# ------------------------------------------------------------------- ensemble stack


def ensemble_order(weights_list: Sequence[Weights]) -> list[int]:
    """Member indices sorted by model hash: the canonical order of an ensemble."""
    hashes = [hash_weights(w) for w in weights_list]
    return sorted(range(len(weights_list)), key=lambda i: hashes[i])


def stack_members(weights_list: Sequence[Weights]) -> dict[str, np.ndarray]:
    """One weight dict for ``EnsembleNet``: members in canonical order, keys ``members.{i}.{name}``."""
    check_same_architecture(weights_list)
    order = ensemble_order(weights_list)
    return {f"members.{slot}.{name}": np.asarray(array)
            for slot, i in enumerate(order) for name, array in weights_list[i].items()}


def ensemble_hash(member_hashes: Sequence[str]) -> str:
    """The ensemble's id: H(domain | sorted member model hashes); computable from submissions alone."""
    if not member_hashes:
        raise _fail("an ensemble needs at least one member", "too_few_models")
    return sha256_hex(ENSEMBLE_DOMAIN, *(b"|" + h.encode() for h in sorted(member_hashes)))
