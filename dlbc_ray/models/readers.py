"""The built-in dataset readers (registered in ``formats``), each reading within ``Limits``.

Each reader returns ``(x_train, y_train, x_test, y_test)`` as raw arrays; ``data.load_file``
checks them (shapes, labels 0..K-1, finite features) like any other format's. Sizes are
checked from metadata or headers before the data is read.

- npz: arrays ``x_train``, ``y_train``, ``x_test``, ``y_test`` (no pickles).
- CSV: a header with ``label``, ``split`` (``train``/``test``) and numeric feature columns.
- Parquet: columns ``label``, ``split`` (``train``/``test``) and numeric feature columns,
  the same layout as a CSV file. Needs pyarrow.
- Image folder: ``train/<class>/*`` and ``test/<class>/*`` (png, jpg, bmp, gif); classes are
  the sorted subfolder names of ``train``; every image the size and mode of the first,
  scaled to [0, 1] as ``(C, H, W)``.
"""

from __future__ import annotations

import csv
import math
import tokenize
import zipfile
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dlbc_ray.config import Limits
from dlbc_ray.errors import InvalidTask

if TYPE_CHECKING:  # pyarrow is imported only for a .parquet file
    import pyarrow as pa

NPZ_ARRAYS = ("x_train", "y_train", "x_test", "y_test")
# What a damaged .npz can raise from zipfile, zlib and numpy's header parser.
_NPZ_ERRORS = (OSError, ValueError, EOFError, KeyError, SyntaxError, zipfile.BadZipFile, zlib.error,
               tokenize.TokenError)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


def read_npz(path: Path, limits: Limits) -> tuple[np.ndarray, ...]:
    try:
        with zipfile.ZipFile(path) as archive:
            members = {info.filename.removesuffix(".npy"): info.file_size for info in archive.infolist()}
        missing = [k for k in NPZ_ARRAYS if k not in members]
        if missing:
            raise InvalidTask(f"{path}: missing array '{missing[0]}'", reason="missing_array")
        total = sum(members[k] for k in NPZ_ARRAYS)
        if total > limits.max_dataset_bytes:
            raise InvalidTask(f"{path}: its arrays hold {total:,} bytes, over the {limits.max_dataset_bytes:,}-byte "
                              "limit", reason="too_large")
        with np.load(path, allow_pickle=False) as f:
            return tuple(f[k] for k in NPZ_ARRAYS)
    except _NPZ_ERRORS as e:
        raise InvalidTask(f"{path}: not a readable .npz file ({_clip(' '.join(str(e).split()), 80)})",
                          reason="unreadable") from None


def read_csv(path: Path, limits: Limits) -> tuple[np.ndarray, ...]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise InvalidTask(f"{path}: not a readable .csv file ({_clip(str(e), 80)})", reason="unreadable") from None
    header = [h.strip() for h in rows[0]] if rows else []
    features = [h for h in header if h not in ("label", "split")]
    for column in ("label", "split"):
        if column not in header:
            raise InvalidTask(f"{path}: missing column '{column}'", reason="missing_column")
    if not features:
        raise InvalidTask(f"{path}: no feature columns besides 'label' and 'split'", reason="missing_column")
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise InvalidTask(f"{path}: line {line} has {len(row)} fields, the header has {len(header)}", reason="bad_row")
    columns = {h: np.array([row[i].strip() for row in rows[1:]], dtype=str) for i, h in enumerate(header)}
    is_train = columns["split"] == "train"
    if not (is_train | (columns["split"] == "test")).all():
        raise InvalidTask(f"{path}: column 'split' may only hold 'train' or 'test'", reason="bad_split")
    x = np.stack([_numbers(path, h, columns[h]) for h in features], axis=1)
    y = _numbers(path, "label", columns["label"])
    return x[is_train], y[is_train], x[~is_train], y[~is_train]


def _numbers(path: Path, column: str, values: np.ndarray) -> np.ndarray:
    try:
        return values.astype(np.float64)
    except ValueError:
        raise InvalidTask(f"{path}: column {_clip(repr(column), 60)} holds a non-numeric value",
                          reason="not_numeric") from None


def read_parquet(path: Path, limits: Limits) -> tuple[np.ndarray, ...]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InvalidTask(f"{path}: reading .parquet needs pyarrow (pip install pyarrow)", reason="unreadable") from None
    try:
        meta = pq.ParquetFile(path).metadata
        columns = [meta.schema.column(i).name for i in range(meta.num_columns)]
        _check_columns(path, columns)
        size = meta.num_rows * meta.num_columns * 8
        if size > limits.max_dataset_bytes:
            raise InvalidTask(f"{path}: {meta.num_rows:,} rows of {meta.num_columns} columns are over the "
                              f"{limits.max_dataset_bytes:,}-byte limit", reason="too_large")
        table = pq.read_table(path)
    except InvalidTask:
        raise
    except Exception as e:  # pyarrow's own errors (ArrowInvalid, OSError ...) for a damaged file
        raise InvalidTask(f"{path}: not a readable .parquet file ({_clip(' '.join(str(e).split()), 80)})",
                          reason="unreadable") from None
    split = np.asarray(table.column("split").to_pylist(), dtype=object)
    is_train = split == "train"
    if not (is_train | (split == "test")).all():
        raise InvalidTask(f"{path}: column 'split' may only hold 'train' or 'test'", reason="bad_split")
    features = [c for c in columns if c not in ("label", "split")]
    x = np.stack([_numeric(path, table, c) for c in features], axis=1)
    y = _numeric(path, table, "label")
    return x[is_train], y[is_train], x[~is_train], y[~is_train]


def _check_columns(path: Path, columns: list[str]) -> None:
    for column in ("label", "split"):
        if column not in columns:
            raise InvalidTask(f"{path}: missing column '{column}'", reason="missing_column")
    if len(columns) < 3:
        raise InvalidTask(f"{path}: no feature columns besides 'label' and 'split'", reason="missing_column")


def _numeric(path: Path, table: pa.Table, column: str) -> np.ndarray:
    values = table.column(column)
    if values.null_count or not (str(values.type).startswith(("int", "uint", "float", "double", "bool"))):
        raise InvalidTask(f"{path}: column {_clip(repr(column), 60)} holds a non-numeric or missing value",
                          reason="not_numeric")
    return np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.float64)


def read_image_folder(path: Path, limits: Limits) -> tuple[np.ndarray, ...]:
    classes = _classes(path / "train", path)
    if len(classes) > limits.max_classes:
        raise InvalidTask(f"{path}: {len(classes):,} classes; the limit is {limits.max_classes:,}", reason="bad_labels")
    parts = {part: _listing(path, part, classes) for part in ("train", "test")}
    first = parts["train"][0][0]
    mode, size = _header(first)
    channels = 1 if mode in ("1", "L", "LA", "I", "I;16", "F") else 3  # grey stays one channel
    total = sum(len(files) for files in parts.values()) * channels * math.prod(size) * 4
    if total > limits.max_dataset_bytes:
        raise InvalidTask(f"{path}: its images hold {total:,} bytes as float32, over the "
                          f"{limits.max_dataset_bytes:,}-byte limit", reason="too_large")
    out: list[np.ndarray] = []
    for part in ("train", "test"):
        files, labels = parts[part]
        out += [np.stack([_pixels(f, size, "L" if channels == 1 else "RGB") for f in files]), np.asarray(labels)]
    return tuple(out)


def _classes(train: Path, root: Path) -> list[str]:
    if not train.is_dir():
        raise InvalidTask(f"{root}: an image folder needs train/<class>/ and test/<class>/ subfolders",
                          reason="missing_file")
    classes = sorted(p.name for p in train.iterdir() if p.is_dir())
    if len(classes) < 2:
        raise InvalidTask(f"{root}: train/ needs at least two class subfolders", reason="bad_labels")
    return classes


def _listing(root: Path, part: str, classes: list[str]) -> tuple[list[Path], list[int]]:
    folder = root / part
    if not folder.is_dir():
        raise InvalidTask(f"{root}: missing the {part}/ subfolder", reason="missing_file")
    extra = sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name not in classes)
    if extra:
        raise InvalidTask(f"{folder}: class {_clip(extra[0], 40)!r} is not a class of train/", reason="bad_labels")
    files, labels = [], []
    for label, name in enumerate(classes):
        found = sorted(p for p in (folder / name).glob("*") if p.suffix.lower() in IMAGE_SUFFIXES) \
            if (folder / name).is_dir() else []
        files += found
        labels += [label] * len(found)
    if not files:
        raise InvalidTask(f"{folder}: no images (.png, .jpg, .bmp, .gif) in its class subfolders", reason="empty_split")
    return files, labels


def _header(file: Path) -> tuple[str, tuple[int, int]]:
    """An image's mode and (width, height), from its header alone."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as image:
            return image.mode, image.size
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError, ValueError) as e:
        raise InvalidTask(f"{file}: not a readable image ({_clip(' '.join(str(e).split()), 60)})",
                          reason="unreadable") from None


def _pixels(file: Path, size: tuple[int, int], mode: str) -> np.ndarray:
    from PIL import Image

    found = _header(file)[1]
    if found != size:
        raise InvalidTask(f"{file}: {found[0]}x{found[1]} pixels; every image must be {size[0]}x{size[1]}",
                          reason="shape_mismatch")
    try:
        with Image.open(file) as image:
            pixels = np.asarray(image.convert(mode), dtype=np.float32) / 255.0
    except (OSError, ValueError) as e:
        raise InvalidTask(f"{file}: not a readable image ({_clip(' '.join(str(e).split()), 60)})",
                          reason="unreadable") from None
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def _clip(text: str, n: int = 120) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."
