"""BaaS fusion as validators and the consensus run it: the same inputs give the same fused bytes.

Each accepted model is unmapped with its miner's revealed seed (its Secure Mapping Layer
folded into the first layer), then fused by the task's rule; the fused model and each
leave-one-out fusion are scored on raw test inputs. Leaving one out of a trimmed mean
that would then be too small falls back to the median, which for two models is their mean.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dlbc_ray.constants import SCORE_SCALE
from dlbc_ray.crypto import hash_weights
from dlbc_ray.models import fusion
from dlbc_ray.models.data import Split
from dlbc_ray.models.evaluate import evaluate
from dlbc_ray.models.nets import build_task_net, net_info
from dlbc_ray.models.protect import mapping_layer
from dlbc_ray.schema import Task

Weights = dict[str, np.ndarray]


@dataclass(frozen=True)
class FusionScores:
    weights: Weights
    fused_hash: str
    score: int
    without: tuple[int, ...]


def common_seed(task_id: str) -> int:
    """The shared initialization of a fusion task: every contributor starts from the same net."""
    return int.from_bytes(hashlib.sha256(b"dlbc/common-init/v1|" + task_id.encode()).digest()[:4], "big")


def contribution(task: Task, weights: Weights, seed_hex: str | None, examples: int) -> fusion.Contribution:
    """One accepted model with the mapping layer its miner revealed (None if it trained without one)."""
    if seed_hex is None:
        return fusion.Contribution(weights=weights, examples=examples)
    q, kind = mapping_layer(bytes.fromhex(seed_hex), weights, task.model.name, task.dataset.input_shape)
    return fusion.Contribution(weights=weights, q=q, kind=kind, examples=examples)


def fuse(task: Task, contributions: Sequence[fusion.Contribution]) -> Weights:
    first = net_info(task.model.name).first_layer
    if len(contributions) == 1:
        return fusion.to_raw(contributions[0], first)
    return fusion.fuse(contributions, fusion.rule_for(task.fusion, len(contributions)), first_layer=first)


def score(task: Task, weights: Weights, members: int, test: Split, rule: str) -> int:
    def builder():
        return build_task_net(task)

    net = fusion.fused_net(rule, builder, members) if members > 1 else builder()
    return round(evaluate(net, weights, test, metric=task.metric) * SCORE_SCALE)


def fuse_and_score(task: Task, contributions: Sequence[fusion.Contribution], test: Split) -> FusionScores:
    """The fused model, its hash and score, and the score of the fusion without each contributor."""
    fused = fuse(task, contributions)
    full = score(task, fused, len(contributions), test, task.fusion)
    without = []
    for i in range(len(contributions)):
        rest = [c for j, c in enumerate(contributions) if j != i]
        without.append(score(task, fuse(task, rest), len(rest), test, fusion.rule_for(task.fusion, len(rest))))
    return FusionScores(fused, hash_weights(fused), full, tuple(without))
