"""The registry of dataset formats a task file may name: one registration adds a format everywhere.

A format is a reader ``(path, limits) -> (x_train, y_train, x_test, y_test)`` registered under
the suffix that names it (``".npz"``), or under ``"/"`` for a folder. ``data.load_file`` picks
the format, checks what it returns (shapes, labels, finite features) like any other's, and
every error names the file. Sizes are the reader's to check before it reads, within ``Limits``;
``size_first`` has the whole file checked against the limit first (text and tables).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dlbc_ray.config import Limits
from dlbc_ray.errors import InvalidTask
from dlbc_ray.models import readers

Reader = Callable[[Path, Limits], tuple[np.ndarray, ...]]
FOLDER = "/"


@dataclass(frozen=True)
class DatasetFormat:
    """How to read one kind of dataset file (or folder, ``suffix="/"``); ``what`` names it in messages."""

    suffix: str
    read: Reader
    what: str
    size_first: bool = False
    classes_only: bool = False  # holds class labels only: a regression task cannot use it


DATASET_FORMATS: dict[str, DatasetFormat] = {}


def register_dataset_format(fmt: DatasetFormat) -> DatasetFormat:
    """Add ``fmt`` (a suffix is registered once; it is lower case and starts with a dot, or is "/")."""
    if fmt.suffix != FOLDER and not (fmt.suffix.startswith(".") and fmt.suffix == fmt.suffix.lower()
                                     and len(fmt.suffix) > 1):
        raise ValueError(f"dataset format suffix {fmt.suffix!r} must be a lower-case '.ext' or '/' (a folder)")
    if fmt.suffix in DATASET_FORMATS:
        raise ValueError(f"dataset format '{fmt.suffix}' is already registered")
    DATASET_FORMATS[fmt.suffix] = fmt
    return fmt


def known_formats() -> str:
    """The registered formats for a message: '.npz, .csv, .parquet or an image folder'."""
    names = [f.what for f in DATASET_FORMATS.values()]
    return ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else "".join(names)


def dataset_format(path: Path, *, is_dir: bool) -> DatasetFormat:
    """The format that reads ``path``, or ``bad_extension`` naming the ones there are."""
    key = FOLDER if is_dir else path.suffix.lower()
    if key not in DATASET_FORMATS:
        found = "a folder" if is_dir else f"extension '{path.suffix}'"
        raise InvalidTask(f"{path}: unknown dataset {found}; use {known_formats()}", reason="bad_extension")
    return DATASET_FORMATS[key]


register_dataset_format(DatasetFormat(".npz", readers.read_npz, ".npz"))
register_dataset_format(DatasetFormat(".csv", readers.read_csv, ".csv", size_first=True))
register_dataset_format(DatasetFormat(".parquet", readers.read_parquet, ".parquet", size_first=True))
register_dataset_format(DatasetFormat(FOLDER, readers.read_image_folder, "an image folder", classes_only=True))
