"""BaaS model fusion: verified contributions merged into one model validators score like any submission.

Weight-averaging rules (``fedavg``, ``trimmed_mean``, ``coordinate_median``) work on plain
numpy weight dicts of one architecture and return a weight dict of that architecture.
An ensemble is not one net's weights, so ``stack_members`` packs its members into one
dict that loads into ``EnsembleNet`` (mean of the members' softmax): the existing
``evaluate(net, weights, test)`` then scores it unchanged.

Averaging only makes sense for nets that started from one common initialization
(permutation symmetry otherwise mixes unrelated hidden units), and only in raw-input
coordinates: a contributor that trained through its own Secure Mapping Layer Q starts
from ``common_start`` (the shared init with Q undone, W0 Q^T) and its result is folded
(W Q) before fusing, so every member lives in the same coordinates as the shared init.

Every rule is a pure function of its inputs and does not depend on the members' order:
values are sorted per coordinate before they are summed sequentially in float64, so
every validator on IEEE-754 hardware gets the same bytes and so the same model hash.
Integer buffers (step counters) are not averaged: the fused model keeps their maximum.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from dlbc_ray.crypto import hash_weights, sha256_hex
from dlbc_ray.errors import InvalidTask
from dlbc_ray.models.data import Split
from dlbc_ray.models.sml import Kind, fold_into_first_layer
from dlbc_ray.models.weights import load_into

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


# ------------------------------------------------------------------- ensemble


class EnsembleNet(nn.Module):
    """Mean of the members' softmax outputs; ``argmax`` of it is the ensemble's prediction.

    Its state_dict is ``members.{i}.{name}``, which is what ``stack_members`` produces,
    so ``load_into`` / ``evaluate`` / ``hash_weights`` treat it like any other net.
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise _fail("an ensemble needs at least one member", "too_few_models")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = torch.stack([torch.softmax(m(x), dim=1) for m in self.members]).double()
        # Sorted per coordinate before the sum, so the members' order cannot move a rounding.
        return (probs.sort(dim=0).values.sum(dim=0) / len(self.members)).float()


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


def ensemble_probabilities(net_builder: Callable[[], nn.Module], weights_list: Sequence[Weights],
                           x: np.ndarray, *, batch_size: int = 1024) -> np.ndarray:
    """(N, classes) mean softmax of the members on ``x`` (members in canonical order)."""
    net = load_into(EnsembleNet([net_builder() for _ in weights_list]), stack_members(weights_list)).eval()
    x = np.array(x, dtype=np.float32, copy=True)
    with torch.inference_mode():
        parts = [net(torch.from_numpy(x[s: s + batch_size])).numpy() for s in range(0, len(x), batch_size)]
    return np.concatenate(parts) if parts else np.empty((0, 0), dtype=np.float32)


def ensemble_predict(net_builder: Callable[[], nn.Module], weights_list: Sequence[Weights],
                     x: np.ndarray, *, batch_size: int = 1024) -> np.ndarray:
    """Predicted labels (int64) of the ensemble: argmax of the mean softmax."""
    return ensemble_probabilities(net_builder, weights_list, x, batch_size=batch_size).argmax(axis=1).astype(np.int64)


def evaluate_ensemble(net_builder: Callable[[], nn.Module], weights_list: Sequence[Weights], test: Split,
                      *, batch_size: int = 1024) -> float:
    """Accuracy in [0, 1] of the ensemble on ``test``."""
    if len(test) == 0:
        raise _fail("cannot evaluate on an empty test split", "empty_split")
    labels = ensemble_predict(net_builder, weights_list, test.x, batch_size=batch_size)
    return float(np.count_nonzero(labels == test.y)) / len(test)


# ------------------------------------------------- contributors through their SML


@dataclass(frozen=True)
class Contribution:
    """One verified model: its weights as trained, its Secure Mapping Layer (None if none) and data size."""

    weights: Weights
    q: np.ndarray | None = None
    kind: Kind | None = None
    examples: int = 1


def common_start(init: Weights, first_layer: str, q: np.ndarray, kind: Kind) -> dict[str, np.ndarray]:
    """Where a contributor with map Q starts training: the shared init with Q undone (W0 Q^T).

    The mapped net then computes exactly the shared init on raw inputs, so after
    ``fold_into_first_layer`` every contributor is a descendant of one raw-space model.
    """
    return fold_into_first_layer(init, first_layer, np.ascontiguousarray(np.asarray(q).T), kind)


def to_raw(contribution: Contribution, first_layer: str) -> dict[str, np.ndarray]:
    """The contribution's weights in raw-input coordinates (its SML folded into the first layer)."""
    c = contribution
    if (c.q is None) != (c.kind is None):
        raise _fail("a contribution needs both its SML matrix and kind, or neither", "bad_fusion")
    if c.q is None or c.kind is None:
        return dict(c.weights)
    return fold_into_first_layer(c.weights, first_layer, c.q, c.kind)


def fuse(contributions: Sequence[Contribution], rule: str, *, first_layer: str, **options: float | int | None,
         ) -> dict[str, np.ndarray]:
    """Fold each contributor's SML, then merge with the registered ``rule``; the result is scored on RAW inputs.

    For an ensemble rule the result is ``stack_members`` (load it into an ``EnsembleNet`` of
    ``len(contributions)`` members, see ``fused_net``); otherwise the task's own net.
    """
    merge = fusion_rule(rule).merge
    return merge([to_raw(c, first_layer) for c in contributions], [c.examples for c in contributions], **options)


def fused_net(rule: str, net_builder: Callable[[], nn.Module], n_members: int) -> nn.Module:
    """The net a fused model of ``rule`` loads into: the task's net, or an ensemble of ``n_members``."""
    if fusion_rule(rule).ensemble:
        return EnsembleNet([net_builder() for _ in range(n_members)])
    return net_builder()


# ----------------------------------------------------------------- the registry of fusion rules

Merge = Callable[..., dict[str, np.ndarray]]  # (raw weights, example counts, **options) -> fused weights


@dataclass(frozen=True)
class FusionRule:
    """A way to merge a round's accepted models, registered under the name a task file gives.

    ``merge`` gets every contribution in raw-input coordinates and its example count, and must
    not depend on their order (every validator must get the same bytes). With fewer than
    ``min_members`` contributions the round fuses with ``fewer`` instead; ``ensemble`` says the
    result loads into an ``EnsembleNet`` of the members rather than into the task's net.
    """

    name: str
    merge: Merge
    min_members: int = 1
    fewer: str | None = None
    ensemble: bool = False


FUSION_RULES: dict[str, FusionRule] = {}


def register_fusion_rule(rule: FusionRule) -> FusionRule:
    """Add ``rule`` to the registry (a name is registered once; ``winner`` is not a fusion)."""
    if rule.name in FUSION_RULES or rule.name == "winner":
        raise ValueError(f"fusion rule '{rule.name}' is already registered")
    if rule.min_members > 1 and rule.fewer is None:
        raise ValueError(f"fusion rule '{rule.name}' needs a rule for fewer than {rule.min_members} members")
    FUSION_RULES[rule.name] = rule
    return rule


def fusion_rule(name: str) -> FusionRule:
    """The registered rule ``name``, or InvalidTask naming the ones there are."""
    try:
        return FUSION_RULES[name]
    except KeyError:
        raise _fail(f"unknown fusion rule '{name}'; use one of {', '.join(FUSION_RULES)}", "bad_fusion") from None


def rule_for(name: str, members: int) -> str:
    """The rule a fusion of ``members`` models runs: ``name``, or its fallback when too few take part."""
    rule = fusion_rule(name)
    return rule.fewer if members < rule.min_members and rule.fewer else name


register_fusion_rule(FusionRule("fedavg", lambda raw, examples: fedavg(raw, examples)))
register_fusion_rule(FusionRule("trimmed-mean", lambda raw, _, **opts: trimmed_mean(raw, **opts),
                                min_members=3, fewer="median"))
register_fusion_rule(FusionRule("median", lambda raw, _: coordinate_median(raw)))
register_fusion_rule(FusionRule("ensemble", lambda raw, _: stack_members(raw), ensemble=True))
