"""An ensemble as one net: the mean of its members' softmax, loaded from ``merging.stack_members``."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from dlbc_ray.errors import InvalidTask
from dlbc_ray.models.data import Split
from dlbc_ray.models.merging import Weights, stack_members
from dlbc_ray.models.weights import load_into


class EnsembleNet(nn.Module):
    """Mean of the members' softmax outputs; ``argmax`` of it is the ensemble's prediction.

    Its state_dict is ``members.{i}.{name}``, which is what ``stack_members`` produces,
    so ``load_into`` / ``evaluate`` / ``hash_weights`` treat it like any other net.
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise InvalidTask("an ensemble needs at least one member", reason="too_few_models")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = torch.stack([torch.softmax(m(x), dim=1) for m in self.members]).double()
        # Sorted per coordinate before the sum, so the members' order cannot move a rounding.
        return (probs.sort(dim=0).values.sum(dim=0) / len(self.members)).float()


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
        raise InvalidTask("cannot evaluate on an empty test split", reason="empty_split")
    labels = ensemble_predict(net_builder, weights_list, test.x, batch_size=batch_size)
    return float(np.count_nonzero(labels == test.y)) / len(test)
