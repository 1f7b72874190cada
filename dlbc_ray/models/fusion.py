"""BaaS model fusion: verified contributions merged into one model validators score like any submission.

Averaging only makes sense for nets that started from one common initialization
(permutation symmetry otherwise mixes unrelated hidden units), and only in raw-input
coordinates: a contributor that trained through its own Secure Mapping Layer Q starts
from ``common_start`` (the shared init with Q undone, W0 Q^T) and its result is folded
(W Q) before fusing, so every member lives in the same coordinates as the shared init.

The rules are one registry (``register_fusion_rule``): a task names one by the name it was
registered under, and admission (``check_fusion_mode``) refuses any other. The built-in
merges live in ``models.merging``; each is a pure function of its inputs that does not
depend on the members' order, so every validator gets the same bytes and model hash.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from dlbc_ray.errors import InvalidTask
from dlbc_ray.models.merging import (  # noqa: F401 - re-exported: what a new rule's merge is written with
    Weights,
    check_same_architecture,
    coordinate_median,
    ensemble_hash,
    ensemble_order,
    fedavg,
    stack_members,
    trim_count,
    trimmed_mean,
)
from dlbc_ray.schema.task import FUSION_NAME

if TYPE_CHECKING:  # torch loads where a net is built or folded, not where a task file names a rule
    from torch import nn

    from dlbc_ray.models.sml import Kind


def _fail(message: str, reason: str) -> InvalidTask:
    return InvalidTask(message, reason=reason)


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
    from dlbc_ray.models.sml import fold_into_first_layer

    return fold_into_first_layer(init, first_layer, np.ascontiguousarray(np.asarray(q).T), kind)


def to_raw(contribution: Contribution, first_layer: str) -> dict[str, np.ndarray]:
    """The contribution's weights in raw-input coordinates (its SML folded into the first layer)."""
    c = contribution
    if (c.q is None) != (c.kind is None):
        raise _fail("a contribution needs both its SML matrix and kind, or neither", "bad_fusion")
    if c.q is None or c.kind is None:
        return dict(c.weights)
    from dlbc_ray.models.sml import fold_into_first_layer

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
        from dlbc_ray.models.ensemble import EnsembleNet

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
    """Add ``rule`` to the registry (a name is registered once; ``winner`` is not a fusion).

    The name is what task files and the signed task carry: lower case, digits and dashes
    (``schema.task.FUSION_NAME``), so every name the registry holds fits on the wire.
    """
    if not re.fullmatch(FUSION_NAME, rule.name):
        raise ValueError(f"fusion rule name {rule.name!r} must match {FUSION_NAME} (a task carries it)")
    if rule.name in FUSION_RULES or rule.name == "winner":
        raise ValueError(f"fusion rule '{rule.name}' is already registered")
    if rule.min_members > 1 and rule.fewer is None:
        raise ValueError(f"fusion rule '{rule.name}' needs a rule for fewer than {rule.min_members} members")
    FUSION_RULES[rule.name] = rule
    return rule


def fusion_rule(name: str) -> FusionRule:
    """The registered rule ``name``, or InvalidTask (``unknown_fusion``) naming the ones there are."""
    try:
        return FUSION_RULES[name]
    except KeyError:
        raise _fail(f"unknown fusion rule '{name[:64]}'; use one of {', '.join(FUSION_RULES)}",
                    "unknown_fusion") from None


def check_fusion_mode(mode: str) -> FusionRule | None:
    """Admission: a task's ``fusion`` is ``winner`` (None) or a registered rule, else ``unknown_fusion``."""
    if mode == "winner":
        return None
    if mode not in FUSION_RULES:
        raise _fail(f"unknown fusion {mode[:64]!r}; use winner or one of {', '.join(FUSION_RULES)}",
                    "unknown_fusion")
    return FUSION_RULES[mode]


def rule_for(name: str, members: int) -> str:
    """The rule a fusion of ``members`` models runs: ``name``, or its fallback when too few take part."""
    rule = fusion_rule(name)
    return rule.fewer if members < rule.min_members and rule.fewer else name


register_fusion_rule(FusionRule("fedavg", lambda raw, examples: fedavg(raw, examples)))
register_fusion_rule(FusionRule("trimmed-mean", lambda raw, _, **opts: trimmed_mean(raw, **opts),
                                min_members=3, fewer="median"))
register_fusion_rule(FusionRule("median", lambda raw, _: coordinate_median(raw)))
register_fusion_rule(FusionRule("ensemble", lambda raw, _: stack_members(raw), ensemble=True))
