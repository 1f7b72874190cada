"""Shared plumbing of the model benchmarks: flags, the miner's real training settings, tables.

The benchmarks are scripts: ``python benchmarks/NAME.py [--quick] [--json]`` or
``python -m benchmarks.NAME``.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from dlbc_ray.config import MinerConfig, ProtectionConfig, TaskDefaults
from dlbc_ray.crypto import Identity
from dlbc_ray.models.data import DatasetBundle, Split, load_builtin
from dlbc_ray.models.evaluate import evaluate
from dlbc_ray.models.nets import build_net
from dlbc_ray.models.system import Regularizer
from dlbc_ray.models.training import TrainSettings, train
from dlbc_ray.models.weights import to_numpy

Weights = dict[str, np.ndarray]
PROTECTION = ProtectionConfig()  # the network's watermark and mapping settings
MINER = MinerConfig()  # the miner's optimizer, batch size and validation holdout
TASK = TaskDefaults()  # the demo task: digits, 5 epochs


def parse_flags(description: str, argv: Sequence[str] | None = None,
                more: Callable[[argparse.ArgumentParser], object] | None = None) -> argparse.Namespace:
    """``--quick``, ``--json`` and the script's own flags (``more``); pins torch to one thread (2 cores here)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="a fast run: fewer seeds and nets")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    if more:
        more(parser)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    return args


def command_line() -> str:
    return shlex.join(["python", *sys.argv])


def dataset(name: str = "digits") -> DatasetBundle:
    return load_builtin(name)


def identity(role: str, seed: int) -> Identity:
    """A deterministic identity per role and seed, so every run derives the same keys."""
    return Identity.from_seed(f"{role}-{seed}", f"bench/{role}/{seed}".encode())


def settings(seed: int, epochs: int) -> TrainSettings:
    """The miner's training settings (``MinerConfig`` defaults) on one thread."""
    return TrainSettings(epochs=epochs, batch_size=MINER.batch_size, lr=MINER.lr, optimizer=MINER.optimizer,
                         seed=seed, val_fraction=MINER.val_fraction, num_threads=1)


def train_tracked(net: nn.Module, data: Split, train_settings: TrainSettings,
                  regularizers: Sequence[Regularizer] = ()) -> list[Weights]:
    """Train ``net`` in place through the real Lightning trainer; the weights after every epoch."""
    snapshots: list[Weights] = []
    train(net, data, train_settings, regularizers=regularizers, on_epoch=lambda _: snapshots.append(to_numpy(net)))
    return snapshots


class Scorer:
    """Test accuracy of weights on a separate net, so scoring never touches a net in training."""

    def __init__(self, model: str, bundle: DatasetBundle) -> None:
        self.net = build_net(model, {}, bundle.input_shape, bundle.n_classes)
        self.test = bundle.test

    def __call__(self, weights: Mapping[str, np.ndarray], test: Split | None = None) -> float:
        return evaluate(self.net, weights, test if test is not None else self.test)


def mean(values: Iterable[float]) -> float:
    vals = list(values)
    return float(np.mean(vals)) if vals else float("nan")


def sem(values: Sequence[float]) -> float:
    """Standard error of the mean (0 for a single value)."""
    return float(np.std(values, ddof=1) / math.sqrt(len(values))) if len(values) > 1 else 0.0


def pct(x: float) -> str:
    return "-" if x is None or math.isnan(x) else f"{100 * x:.1f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain fixed-width table (copies cleanly into reports)."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def section(title: str, body: str) -> str:
    return f"\n{title}\n{body}"


def emit(as_json: bool, figures: Mapping[str, Any], text: Callable[[], str]) -> None:
    """Print the figures as JSON, or the human report ``text()``."""
    if as_json:
        sys.stdout.write(json.dumps(figures, indent=2, default=_jsonable) + "\n")
    else:
        sys.stdout.write(text() + "\n")


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple | set):
        return list(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
