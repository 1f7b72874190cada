"""The objectives registry: what a task trains for and how validators score it.

Every score is a number in [0, 1] where higher is better, so the target, the median of
validators' scores and the difficulty treat every objective alike. Regression errors
(MSE, MAE; lower is better) are mapped to ``1 / (1 + error)``, a task file's regression
target (an error bound) too (``target_score``). A regression dataset has float targets and
its net one output (``n_classes`` 1 on the wire). Scores are computed in
float64 from the net's float32 outputs: a pure function of weights and data, the same
on every validator. Numpy only, no torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from dlbc_ray.errors import InvalidTask

Kind = Literal["classification", "regression"]
Loss = Literal["cross_entropy", "mse", "l1"]


@dataclass(frozen=True)
class Objective:
    """A named objective: the training loss and the score of outputs ``(N, K)`` against targets ``(N,)``."""

    name: str
    kind: Kind
    loss: Loss
    description: str
    score: Callable[[np.ndarray, np.ndarray], float]


OBJECTIVES: dict[str, Objective] = {}


def register_objective(objective: Objective) -> Objective:
    """Add an objective; a name is registered once."""
    if not objective.name or objective.name in OBJECTIVES:
        raise InvalidTask(f"cannot register objective {objective.name!r}: empty or taken", reason="bad_metric")
    OBJECTIVES[objective.name] = objective
    return objective


def get_objective(name: str) -> Objective:
    """The registered objective ``name``, or ``InvalidTask`` listing the known ones."""
    if name not in OBJECTIVES:
        raise InvalidTask(f"unknown metric {name[:64]!r}; known metrics are {', '.join(OBJECTIVES)}",
                          reason="unknown_metric")
    return OBJECTIVES[name]


def target_score(name: str, target: float) -> float:
    """A task file's ``target`` as the bounded score a winner must reach: a classification score as it is
    (in [0, 1]); a regression error bound (>= 0, lower is better) mapped as its score is, ``1 / (1 + error)``."""
    objective = get_objective(name)
    if not math.isfinite(target) or target < 0 or (objective.kind == "classification" and target > 1):
        bound = "a score in [0, 1]" if objective.kind == "classification" else "an error bound >= 0"
        raise InvalidTask(f"target for {name} must be {bound}, got {target!r}", reason="bad_target")
    return target if objective.kind == "classification" else 1.0 / (1.0 + target)


def check_task_objective(name: str, n_outputs: int, partition: str) -> Objective:
    """The objective a task names, if its data suits it: classification needs >= 2 classes; regression one
    output (float targets), and no label-skewed (non-iid) shards, which need classes."""
    objective = get_objective(name)
    if objective.kind == "classification" and n_outputs < 2:
        raise InvalidTask(f"metric {name!r} needs at least 2 classes, the dataset has {n_outputs}", reason="bad_metric")
    if objective.kind == "regression" and n_outputs != 1:
        raise InvalidTask(f"metric {name!r} is a regression objective: the dataset must have float targets "
                          f"(1 output), it has {n_outputs} classes", reason="bad_metric")
    if objective.kind == "regression" and partition == "non-iid":
        raise InvalidTask(f"metric {name!r}: non-iid shards skew labels by class; use partition iid or none",
                          reason="bad_partition")
    return objective


def score(name: str, outputs: np.ndarray, targets: np.ndarray) -> float:
    """``name``'s score in [0, 1] (higher is better) of ``outputs`` against ``targets``."""
    outputs, targets = np.asarray(outputs), np.asarray(targets)
    if len(outputs) == 0 or len(outputs) != len(targets):
        raise InvalidTask(f"cannot score {len(outputs)} outputs against {len(targets)} targets", reason="empty_split")
    value = float(get_objective(name).score(outputs, targets))
    return min(1.0, max(0.0, value)) if np.isfinite(value) else 0.0


def labels_of(outputs: np.ndarray) -> np.ndarray:
    """Predicted classes: the first highest logit of each row."""
    return np.asarray(outputs).reshape(len(outputs), -1).argmax(axis=1)


def accuracy(outputs: np.ndarray, targets: np.ndarray) -> float:
    return float(np.count_nonzero(labels_of(outputs) == targets)) / len(targets)


def macro_f1(outputs: np.ndarray, targets: np.ndarray) -> float:
    """Unweighted mean of per-class F1 over the classes present in the targets or the predictions."""
    predicted, targets = labels_of(outputs), np.asarray(targets, dtype=np.int64)
    classes = np.union1d(predicted, targets)
    tp = np.array([np.count_nonzero((predicted == c) & (targets == c)) for c in classes], dtype=np.float64)
    fp = np.array([np.count_nonzero((predicted == c) & (targets != c)) for c in classes], dtype=np.float64)
    fn = np.array([np.count_nonzero((predicted != c) & (targets == c)) for c in classes], dtype=np.float64)
    return float(np.mean(2 * tp / (2 * tp + fp + fn)))


def _predictions(outputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """A regression net's first output column, compared in float64."""
    return np.asarray(outputs, dtype=np.float64).reshape(len(targets), -1)[:, 0]


def mse_score(outputs: np.ndarray, targets: np.ndarray) -> float:
    error = float(np.mean((_predictions(outputs, targets) - np.asarray(targets, dtype=np.float64)) ** 2))
    return 1.0 / (1.0 + error)


def mae_score(outputs: np.ndarray, targets: np.ndarray) -> float:
    error = float(np.mean(np.abs(_predictions(outputs, targets) - np.asarray(targets, dtype=np.float64))))
    return 1.0 / (1.0 + error)


register_objective(Objective("accuracy", "classification", "cross_entropy", "share of correct labels", accuracy))
register_objective(Objective("macro_f1", "classification", "cross_entropy",
                             "mean F1 over classes (fair to rare classes)", macro_f1))
register_objective(Objective("mse", "regression", "mse", "1 / (1 + mean squared error)", mse_score))
register_objective(Objective("mae", "regression", "l1", "1 / (1 + mean absolute error)", mae_score))
