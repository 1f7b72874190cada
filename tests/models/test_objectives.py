"""The objectives registry: every score in [0, 1], higher is better, the same function for training and judging."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import f1_score

from dlbc_ray.errors import InvalidTask
from dlbc_ray.models import objectives
from dlbc_ray.models.data import Split
from dlbc_ray.models.evaluate import evaluate
from dlbc_ray.models.nets import build_net
from dlbc_ray.models.objectives import OBJECTIVES, Objective, get_objective, register_objective, score


@pytest.fixture(autouse=True)
def clean_registry() -> Iterator[None]:
    names = set(OBJECTIVES)
    yield
    for name in set(OBJECTIVES) - names:
        del OBJECTIVES[name]


def _onehot(labels: list[int], k: int) -> np.ndarray:
    return np.eye(k, dtype=np.float32)[labels]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4)), min_size=1, max_size=60))
def test_macro_f1_agrees_with_sklearn(pairs: list[tuple[int, int]]) -> None:
    predicted, truth = map(list, zip(*pairs))
    expected = f1_score(truth, predicted, average="macro", labels=sorted(set(truth) | set(predicted)))
    assert score("macro_f1", _onehot(predicted, 5), np.array(truth)) == pytest.approx(expected)


def test_macro_f1_punishes_ignoring_a_rare_class_where_accuracy_does_not() -> None:
    truth = np.array([0] * 9 + [1])
    always_zero = _onehot([0] * 10, 2)
    assert score("accuracy", always_zero, truth) == 0.9
    assert score("macro_f1", always_zero, truth) == pytest.approx((18 / 19) / 2)


@pytest.mark.parametrize("name", ["mse", "mae"])
def test_regression_scores_are_bounded_and_higher_is_better(name: str) -> None:
    y = np.array([1.0, 2.0, 3.0])
    perfect, close, far = (y[:, None] + d for d in (0.0, 0.1, 10.0))
    values = [score(name, o, y) for o in (perfect, close, far)]
    assert values[0] == 1.0 and 1.0 > values[1] > values[2] > 0.0
    assert score(name, np.full((3, 1), np.inf, np.float32), y) == 0.0  # an overflowing net scores nothing


def test_unknown_metric_and_mismatched_lengths_are_named() -> None:
    with pytest.raises(InvalidTask, match="unknown metric 'f2'; known metrics are accuracy, macro_f1"):
        get_objective("f2")
    with pytest.raises(InvalidTask, match="cannot score 2 outputs against 3 targets"):
        score("accuracy", _onehot([0, 1], 2), np.array([0, 1, 1]))
    with pytest.raises(InvalidTask, match="taken"):
        register_objective(OBJECTIVES["accuracy"])


def test_a_registered_objective_is_used_by_evaluate() -> None:
    """A new objective is one registration; validators' evaluate then scores with it."""
    register_objective(Objective("first_class_recall", "classification", "cross_entropy", "recall of class 0",
                                 lambda out, y: float(np.mean(objectives.labels_of(out)[y == 0] == 0))))
    net = build_net("mlp", {"hidden": [3]}, (3,), 3)
    eye, zero = np.eye(3, dtype=np.float32), np.zeros(3, np.float32)
    weights = {"fc.0.weight": eye, "fc.0.bias": zero, "fc.1.weight": eye, "fc.1.bias": zero}
    test = Split(np.array([[1, 0, 0], [0, 2, 0], [0, 0, 3], [0, 5, 0]], np.float32), np.array([0, 1, 0, 0]))
    assert evaluate(net, weights, test) == 0.5
    assert evaluate(net, weights, test, metric="first_class_recall") == pytest.approx(1 / 3)
    assert evaluate(net, weights, test, metric="macro_f1") == pytest.approx(np.mean([0.5, 2 / 3, 0.0]))
