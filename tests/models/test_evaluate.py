"""Scoring: strict loading, exact accuracy, bit-identical repeats."""

from __future__ import annotations

import numpy as np
import pytest
from torch import nn

from dlbc_ray.errors import InvalidModelFile, InvalidTask
from dlbc_ray.models.data import Split, load_builtin
from dlbc_ray.models.evaluate import evaluate, predict
from dlbc_ray.models.nets import build_net
from dlbc_ray.models.weights import to_numpy


def _identity_net_weights() -> tuple[nn.Module, dict[str, np.ndarray]]:
    """An mlp whose logits equal its 3 inputs (ReLU of non-negative inputs is the identity)."""
    net = build_net("mlp", {"hidden": [3]}, (3,), 3)
    eye, zero = np.eye(3, dtype=np.float32), np.zeros(3, np.float32)
    return net, {"fc.0.weight": eye, "fc.0.bias": zero, "fc.1.weight": eye, "fc.1.bias": zero}


def test_accuracy_is_exact_for_a_known_model() -> None:
    net, weights = _identity_net_weights()
    x = np.array([[1, 0, 0], [0, 2, 0], [0, 0, 3], [5, 0, 0]], np.float32)
    assert predict(net, weights, x, batch_size=3).tolist() == [0, 1, 2, 0]
    assert evaluate(net, weights, Split(x, [0, 1, 0, 1]), batch_size=3) == 0.5


def test_evaluation_repeats_bit_for_bit() -> None:
    bundle = load_builtin("digits")
    net = build_net("cnn", {}, bundle.input_shape, bundle.n_classes, seed=3)
    weights = to_numpy(net)
    scores = {evaluate(build_net("cnn", {}, bundle.input_shape, bundle.n_classes), weights, bundle.test) for _ in range(3)}
    assert len(scores) == 1 and 0.0 <= scores.pop() <= 1.0


def test_evaluation_leaves_dropout_off() -> None:
    bundle = load_builtin("digits")
    net = build_net("mlp", {"dropout": 0.9}, bundle.input_shape, bundle.n_classes)
    weights = to_numpy(net)
    first = predict(net, weights, bundle.test.x)
    net.train()
    assert (predict(net, weights, bundle.test.x) == first).all()


def test_wrong_architecture_is_rejected_before_scoring() -> None:
    bundle = load_builtin("iris")
    weights = to_numpy(build_net("mlp", {"hidden": [8]}, bundle.input_shape, bundle.n_classes))
    with pytest.raises(InvalidModelFile, match="fc.0.weight") as info:
        evaluate(build_net("mlp", {}, bundle.input_shape, bundle.n_classes), weights, bundle.test)
    assert info.value.reason == "wrong_architecture"


def test_empty_test_split_is_rejected() -> None:
    net, weights = _identity_net_weights()
    with pytest.raises(InvalidTask, match="empty"):
        evaluate(net, weights, Split(np.zeros((0, 3)), np.zeros(0)))
