"""Datasets as plain numpy splits: built-ins, user files, holdouts and miner shards.

No torch here, so actors and the CLI can load, hash and shard data cheaply. Every
function is deterministic in its seed; every bad input is an ``InvalidTask``.
"""

from __future__ import annotations

import os
import random
import zipfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from dlbc_ray.config import LIMITS, Limits
from dlbc_ray.crypto import hash_weights
from dlbc_ray.errors import InvalidTask
from dlbc_ray.models.formats import dataset_format
from dlbc_ray.schema.task import MAX_INPUT_RANK

BUILTIN_DATASETS: tuple[str, ...] = ("digits", "mnist1d", "iris", "wine", "breast_cancer")
MNIST1D_CACHE_NAME = "mnist1d-v1.npz"
_SKLEARN = {"digits": "load_digits", "iris": "load_iris", "wine": "load_wine", "breast_cancer": "load_breast_cancer"}


@dataclass(frozen=True, eq=False)
class Split:
    """Examples ``x`` (float32, ``(N, *input_shape)``) and ``y`` (``(N,)``): class labels (int64) or, for a
    regression task, float targets (float32)."""

    x: np.ndarray
    y: np.ndarray

    def __post_init__(self) -> None:
        # Canonical dtypes and layout, so split_hash never depends on how a split was made.
        object.__setattr__(self, "x", np.ascontiguousarray(self.x, dtype=np.float32))
        y = np.asarray(self.y)
        object.__setattr__(self, "y", np.ascontiguousarray(y, dtype=np.float32 if y.dtype.kind == "f" else np.int64))
        if self.y.ndim != 1 or self.x.ndim < 1 or self.x.shape[0] != self.y.shape[0]:
            raise InvalidTask(f"split x {self.x.shape} and y {self.y.shape} do not pair up", reason="length_mismatch")

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def take(self, indices: np.ndarray) -> Split:
        """The examples at ``indices``, in that order."""
        return Split(self.x[indices], self.y[indices])


@dataclass(frozen=True, eq=False)
class DatasetBundle:
    """A named dataset: miners get ``train``, validators keep ``test``."""

    name: str
    train: Split
    test: Split
    input_shape: tuple[int, ...]
    n_classes: int


def load_builtin(
    name: str, *, seed: int = 0, test_fraction: float = 0.2, cache_dir: Path | None = None
) -> DatasetBundle:
    """A bundled or generated dataset; mnist1d keeps its own fixed 4000/1000 split (seed unused)."""
    if name == "mnist1d":
        x_train, y_train, x_test, y_test = _mnist1d_arrays(cache_dir)
        return _bundle(name, Split(x_train[:, None, :], y_train), Split(x_test[:, None, :], y_test))
    if name not in _SKLEARN:
        raise InvalidTask(f"unknown dataset '{name}'; built-ins are {', '.join(BUILTIN_DATASETS)}", reason="unknown_dataset")
    if not 0.0 < test_fraction < 1.0:
        raise InvalidTask(f"test_fraction must be in (0, 1), got {test_fraction}", reason="bad_fraction")
    return _sklearn_bundle(name, seed, test_fraction)


def _sklearn_bundle(name: str, seed: int, test_fraction: float) -> DatasetBundle:
    """Stratified split; digits scaled to [0, 1], tabular sets standardized with train statistics."""
    from sklearn import datasets
    from sklearn.model_selection import train_test_split

    raw = getattr(datasets, _SKLEARN[name])()
    x = raw.images[:, None, :, :] / 16.0 if name == "digits" else raw.data
    x_tr, x_te, y_tr, y_te = train_test_split(x, raw.target, test_size=test_fraction, random_state=seed, stratify=raw.target)
    if name != "digits":
        mean, std = x_tr.mean(axis=0), x_tr.std(axis=0)
        std[std == 0] = 1.0
        x_tr, x_te = (x_tr - mean) / std, (x_te - mean) / std
    return _bundle(name, Split(x_tr, y_tr), Split(x_te, y_te))


def _bundle(name: str, train: Split, test: Split) -> DatasetBundle:
    """``n_classes``: the labels' classes, or 1 (the net's one output) for float regression targets."""
    n_classes = 1 if train.y.dtype.kind == "f" else int(max(train.y.max(), test.y.max())) + 1
    return DatasetBundle(name, train, test, tuple(int(d) for d in train.x.shape[1:]), n_classes)


def _mnist1d_arrays(cache_dir: Path | None) -> tuple[np.ndarray, ...]:
    """mnist1d with its default args, from ``cache_dir`` when there (generation takes ~5 s)."""
    path = cache_dir / MNIST1D_CACHE_NAME if cache_dir is not None else None
    if path is not None and path.exists():
        try:
            with np.load(path, allow_pickle=False) as f:
                return tuple(f[k].copy() for k in ("x", "y", "x_test", "y_test"))
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            pass  # a torn or foreign cache file is simply regenerated
    arrays = tuple(a.copy() for a in _generate_mnist1d())
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.savez(f, **dict(zip(("x", "y", "x_test", "y_test"), arrays)))
        os.replace(tmp, path)
    return arrays


@cache
def _generate_mnist1d() -> tuple[np.ndarray, ...]:
    from mnist1d.data import get_dataset_args, make_dataset

    # make_dataset reseeds the global RNGs; give callers theirs back untouched.
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        d = make_dataset(get_dataset_args())
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    return tuple(d[k].astype(np.float32 if k.startswith("x") else np.int64) for k in ("x", "y", "x_test", "y_test"))


def load_file(path: Path, *, limits: Limits = LIMITS, regression: bool = False) -> DatasetBundle:
    """A user dataset in a registered format (``models.formats``): ``.npz`` (x_train, y_train, x_test,
    y_test), ``.csv`` or ``.parquet`` (label, split, features), or an image folder (see ``readers``).

    Sizes are checked before any array is read; labels must be 0..K-1 (``regression``: any finite float
    targets, kept as float32, one output) and features finite as float32.
    """
    path = Path(path)
    try:
        is_dir = path.is_dir()
        size = path.stat().st_size if path.is_file() else None
    except (OSError, ValueError) as e:
        raise InvalidTask(f"{_clip(str(path))}: cannot read ({type(e).__name__})", reason="unreadable") from None
    if size is None and not is_dir:
        raise InvalidTask(f"{path}: no such dataset file or image folder", reason="missing_file")
    fmt = dataset_format(path, is_dir=is_dir)
    if fmt.size_first and size is not None and size > limits.max_dataset_bytes:
        raise InvalidTask(f"{path}: {size:,} bytes is over the {limits.max_dataset_bytes:,}-byte limit", reason="too_large")
    if fmt.classes_only and regression:
        raise InvalidTask(f"{path}: {fmt.what} holds classes; a regression task needs float targets in a format "
                          "that holds them", reason="bad_labels")
    x_train, y_train, x_test, y_test = fmt.read(path, limits)
    train = _checked_split(path, "train", x_train, y_train, limits, regression)
    test = _checked_split(path, "test", x_test, y_test, limits, regression)
    if train.x.shape[1:] != test.x.shape[1:]:
        shapes = f"{train.x.shape[1:]} but test features {test.x.shape[1:]}"
        raise InvalidTask(f"{path}: train features have shape {shapes}", reason="shape_mismatch")
    return _bundle(path.stem, train, test)


def _checked_split(path: Path, part: str, x: np.ndarray, y: np.ndarray, limits: Limits,
                   regression: bool = False) -> Split:
    """One split of a user file, with every problem named; the arrays come back in their canonical dtypes."""
    if not 2 <= x.ndim <= 1 + MAX_INPUT_RANK or y.ndim != 1 or 0 in x.shape[1:]:
        raise InvalidTask(f"{path}: x_{part} must be (N, features...) with at most {MAX_INPUT_RANK} non-empty "
                          f"feature axes and y_{part} (N,)", reason="bad_shape")
    if len(x) != len(y):
        raise InvalidTask(f"{path}: x_{part} has {len(x)} rows but y_{part} has {len(y)}", reason="length_mismatch")
    if len(y) == 0:
        raise InvalidTask(f"{path}: the {part} split is empty", reason="empty_split")
    if x.dtype.kind not in "biuf" or y.dtype.kind not in "iuf":
        raise InvalidTask(f"{path}: x_{part} or y_{part} is not numeric", reason="not_numeric")
    labels = checked_targets(y) if regression else checked_labels(y, limits.max_classes)
    if labels is None and regression:
        raise InvalidTask(f"{path}: y_{part} targets must be finite as float32", reason="not_finite")
    if labels is None:
        raise InvalidTask(f"{path}: y_{part} labels must be integers in 0..{limits.max_classes - 1}", reason="bad_labels")
    with np.errstate(over="ignore", invalid="ignore"):
        features = x.astype(np.float32)
    if not np.isfinite(features).all():
        raise InvalidTask(f"{path}: x_{part} holds NaN or inf values (as float32)", reason="not_finite")
    return Split(features, labels)


def checked_labels(y: np.ndarray, max_classes: int) -> np.ndarray | None:
    """``y`` as int64 when every label is an integer in 0..max_classes-1, else None (checked before the cast)."""
    with np.errstate(invalid="ignore"):
        if y.dtype.kind == "f" and not (np.isfinite(y) & (y == np.floor(y))).all():
            return None
        if (y < 0).any() or (y >= max_classes).any():
            return None
    return y.astype(np.int64)


def checked_targets(y: np.ndarray) -> np.ndarray | None:
    """``y`` as float32 regression targets when every one is finite as float32, else None."""
    with np.errstate(over="ignore", invalid="ignore"):
        targets = y.astype(np.float32)
    return targets if np.isfinite(targets).all() else None


def _clip(text: str, n: int = 120) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def split_hash(split: Split) -> str:
    """The canonical hash of a split, as a task commits to its test data."""
    return hash_weights({"x": split.x, "y": split.y})


def holdout(split: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    """``(train_part, val_part)``: a random ``fraction`` held out, at least one example each side."""
    if not 0.0 <= fraction < 1.0:
        raise InvalidTask(f"holdout fraction must be in [0, 1), got {fraction}", reason="bad_fraction")
    if fraction == 0.0:
        return split, split.take(np.arange(0))
    if len(split) < 2:
        raise InvalidTask(f"cannot hold out a validation part of a {len(split)}-example split", reason="too_small")
    order = np.random.default_rng(seed).permutation(len(split))
    n_val = min(max(1, round(fraction * len(split))), len(split) - 1)
    return split.take(np.sort(order[n_val:])), split.take(np.sort(order[:n_val]))


def shard(split: Split, n_shards: int, index: int, *, iid: bool = True, seed: int = 0, alpha: float = 0.5) -> Split:
    """Shard ``index`` of ``n_shards`` disjoint, non-empty shards that together are the whole split."""
    if not 1 <= n_shards <= len(split):
        raise InvalidTask(f"cannot cut {len(split)} examples into {n_shards} shards", reason="bad_shards")
    if not 0 <= index < n_shards:
        raise InvalidTask(f"shard index {index} is outside 0..{n_shards - 1}", reason="bad_shards")
    return split.take(shard_indices(split.y, n_shards, iid=iid, seed=seed, alpha=alpha)[index])


def shard_indices(y: np.ndarray, n_shards: int, *, iid: bool = True, seed: int = 0, alpha: float = 0.5) -> list[np.ndarray]:
    """Sorted example indices of every shard: an equal random cut, or Dirichlet(alpha) label skew."""
    rng = np.random.default_rng(seed)
    if iid:
        return [np.sort(part) for part in np.array_split(rng.permutation(len(y)), n_shards)]
    if alpha <= 0:
        raise InvalidTask(f"Dirichlet alpha must be positive, got {alpha}", reason="bad_shards")
    owners = np.empty(len(y), dtype=np.int64)
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        cuts = (np.cumsum(rng.dirichlet(np.full(n_shards, alpha)))[:-1] * len(members)).astype(np.int64)
        for owner, part in enumerate(np.split(members, cuts)):
            owners[part] = owner
    _fill_empty_shards(owners, n_shards)
    return [np.flatnonzero(owners == s) for s in range(n_shards)]


def _fill_empty_shards(owners: np.ndarray, n_shards: int) -> None:
    """Give each empty shard one example from the largest shard, so every miner has data."""
    for empty in range(n_shards):
        if not (owners == empty).any():
            largest = int(np.bincount(owners, minlength=n_shards).argmax())
            owners[np.flatnonzero(owners == largest)[-1]] = empty
