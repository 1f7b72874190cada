"""Scoring a model on held-out data, the same way on every validator.

Fixed batches, eval mode and inference mode make a score a pure function of the
weights and the data, so honest validators agree bit for bit.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from dlbc_ray.errors import InvalidTask
from dlbc_ray.models.data import Split
from dlbc_ray.models.objectives import get_objective, labels_of, score
from dlbc_ray.models.weights import load_into


def outputs_of(
    net: nn.Module, weights: Mapping[str, np.ndarray], x: np.ndarray, *, batch_size: int = 1024, device: str = "cpu"
) -> np.ndarray:
    """The raw outputs (float32, ``(N, K)``) of ``net`` carrying ``weights`` for every row of ``x``."""
    if batch_size < 1:
        raise InvalidTask(f"batch_size must be at least 1, got {batch_size}", reason="bad_batch_size")
    load_into(net, weights).to(device).eval()
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not x.flags.writeable:  # torch.from_numpy wants a writable buffer
        x = x.copy()
    outputs = []
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            batch = torch.from_numpy(x[start : start + batch_size]).to(device)
            outputs.append(net(batch).float().cpu().numpy())
    return np.concatenate(outputs) if outputs else np.empty((0, 0), dtype=np.float32)


def predict(
    net: nn.Module, weights: Mapping[str, np.ndarray], x: np.ndarray, *, batch_size: int = 1024, device: str = "cpu"
) -> np.ndarray:
    """Predicted labels (int64) of ``net`` carrying ``weights`` for every row of ``x``."""
    outputs = outputs_of(net, weights, x, batch_size=batch_size, device=device)
    return labels_of(outputs).astype(np.int64) if len(outputs) else np.empty(0, dtype=np.int64)


def evaluate(
    net: nn.Module, weights: Mapping[str, np.ndarray], test: Split, *, metric: str = "accuracy",
    batch_size: int = 1024, device: str = "cpu",
) -> float:
    """``metric``'s score in [0, 1] (higher is better; accuracy by default) of ``net`` carrying ``weights``."""
    get_objective(metric)
    if len(test) == 0:
        raise InvalidTask("cannot evaluate on an empty test split", reason="empty_split")
    return score(metric, outputs_of(net, weights, test.x, batch_size=batch_size, device=device), test.y)
