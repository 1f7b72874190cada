"""Parquet tables and image folders: the same rules as npz/csv (one-line errors naming the file, sizes
checked before reading, labels 0..K-1), and the local path stays off chain."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dlbc_ray.config import Limits
from dlbc_ray.crypto import Identity
from dlbc_ray.errors import InvalidTask
from dlbc_ray.models.data import load_file, split_hash
from dlbc_ray.runtime.taskfile import load_task_with_data, to_task


REQUESTER = Identity.from_seed("requester", b"requester")


def _table(n: int = 30, **override: object) -> dict[str, object]:
    rng = np.random.default_rng(0)
    columns: dict[str, object] = {"label": (np.arange(n) % 3).tolist(), "split": ["train", "test"] * (n // 2),
                                  "f0": rng.normal(size=n).tolist(), "f1": rng.normal(size=n).tolist()}
    return {**columns, **override}


def _parquet(path: Path, columns: dict[str, object]) -> Path:
    pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.table(columns), path)
    return path


def test_parquet_reads_like_the_same_csv(tmp_path: Path) -> None:
    columns = _table()
    csv = tmp_path / "same.csv"
    rows = zip(*(map(str, v) for v in columns.values()))  # type: ignore[call-overload]
    csv.write_text(",".join(columns) + "\n" + "\n".join(",".join(r) for r in rows) + "\n")
    a, b = load_file(_parquet(tmp_path / "same.parquet", columns)), load_file(csv)
    assert (a.input_shape, a.n_classes, len(a.train), len(a.test)) == ((2,), 3, 15, 15)
    assert split_hash(a.train) == split_hash(b.train) and split_hash(a.test) == split_hash(b.test)


@pytest.mark.parametrize(("columns", "expected"), [
    ({k: v for k, v in _table().items() if k != "split"}, "missing column 'split'"),
    ({"label": [0, 1], "split": ["train", "test"]}, "no feature columns"),
    (_table(split=["train", "val"] * 15), "column 'split' may only hold 'train' or 'test'"),
    (_table(f0=["a"] * 30), "column 'f0' holds a non-numeric or missing value"),
    (_table(f1=[None] + [1.0] * 29), "column 'f1' holds a non-numeric or missing value"),
    (_table(label=[0.5] * 30), "y_train labels must be integers"),
    (_table(f0=[float("nan")] * 30), "NaN or inf"),
])
def test_bad_parquet_is_one_line_naming_the_file(tmp_path: Path, columns: dict[str, object], expected: str) -> None:
    path = _parquet(tmp_path / "bad.parquet", columns)
    with pytest.raises(InvalidTask, match=expected) as info:
        load_file(path)
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


def test_damaged_or_oversized_parquet_is_refused_before_reading(tmp_path: Path) -> None:
    path = _parquet(tmp_path / "d.parquet", _table())
    with pytest.raises(InvalidTask, match="over the 100-byte limit"):
        load_file(path, limits=Limits(max_dataset_bytes=100))
    with pytest.raises(InvalidTask, match="over the 2,000-byte limit"):  # the file is small, its rows are not
        load_file(_parquet(tmp_path / "big.parquet", _table(n=1000)), limits=Limits(max_dataset_bytes=2_000))
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(InvalidTask, match="not a readable .parquet file"):
        load_file(path)


def _images(root: Path, layout: dict[str, dict[str, int]], size: tuple[int, int] = (6, 5), mode: str = "L") -> Path:
    Image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(1)
    for part, classes in layout.items():
        for name, count in classes.items():
            (root / part / name).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
                Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(root / part / name / f"{i}.png")
    return root


def test_an_image_folder_is_one_class_per_subfolder(tmp_path: Path) -> None:
    root = _images(tmp_path / "shapes", {"train": {"circle": 3, "square": 2}, "test": {"square": 2}})
    bundle = load_file(root)
    assert bundle.input_shape == (1, 5, 6) and bundle.n_classes == 2 and bundle.name == "shapes"
    assert bundle.train.y.tolist() == [0, 0, 0, 1, 1] and bundle.test.y.tolist() == [1, 1]
    assert 0.0 <= bundle.train.x.min() and bundle.train.x.max() <= 1.0
    rgb = load_file(_images(tmp_path / "rgb", {"train": {"a": 1, "b": 1}, "test": {"a": 1}}, mode="RGB"))
    assert rgb.input_shape == (3, 5, 6)


def test_bad_image_folders_are_one_line_naming_the_file(tmp_path: Path) -> None:
    root = _images(tmp_path / "f", {"train": {"a": 2, "b": 2}, "test": {"a": 1, "c": 1}})
    with pytest.raises(InvalidTask, match="class 'c' is not a class of train/"):
        load_file(root)
    root = _images(tmp_path / "g", {"train": {"a": 2, "b": 2}, "test": {"a": 1}})
    _images(tmp_path / "g", {"train": {"b": 1}}, size=(7, 5))  # overwrites b/0.png with another size
    with pytest.raises(InvalidTask, match=r"g/train/b/0.png: 7x5 pixels; every image must be 6x5"):
        load_file(root)
    (root / "train" / "b" / "0.png").write_bytes(b"not a png")
    with pytest.raises(InvalidTask, match=r"0.png: not a readable image"):
        load_file(root)
    with pytest.raises(InvalidTask, match="needs train/<class>/ and test/<class>/"):
        load_file(tmp_path)
    with pytest.raises(InvalidTask, match="over the 100-byte limit"):
        load_file(_images(tmp_path / "h", {"train": {"a": 2, "b": 2}, "test": {"a": 1}}),
                  limits=Limits(max_dataset_bytes=100))


@pytest.mark.parametrize("kind", ["parquet", "images"])
def test_a_task_file_names_the_new_formats_and_only_their_name_goes_on_chain(tmp_path: Path, kind: str) -> None:
    data = tmp_path / "private" / "mydata"
    data.parent.mkdir()
    if kind == "parquet":
        data = _parquet(data.with_suffix(".parquet"), _table(f0=list(range(30))))
    else:
        _images(data, {"train": {"a": 4, "b": 4}, "test": {"a": 2, "b": 2}})
    task_path = tmp_path / "task.yaml"
    relative = data.relative_to(tmp_path)
    task_path.write_text(f"model: {{name: mlp}}\ndataset: ./{relative}\nmetric: macro_f1\ntarget: 0.5\n"
                         "reward: 10\ndeadline: 60\nmax_epochs: 1\n")
    taskfile, bundle = load_task_with_data(task_path)
    task = to_task(taskfile, REQUESTER.public_key, nonce=0, now_ms=1_000, bundle=bundle)
    assert task.dataset.uri == data.name and "private" not in task.model_dump_json()
    assert task.metric == "macro_f1" and task.dataset.test_hash == split_hash(bundle.test)


def test_a_new_file_format_is_one_registration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dlbc_ray.models import formats

    def read_tsv(path: Path, limits: Limits) -> tuple[np.ndarray, ...]:
        rows = np.loadtxt(path, delimiter="\t")
        return rows[:4, 1:], rows[:4, 0], rows[4:, 1:], rows[4:, 0]

    monkeypatch.setitem(formats.DATASET_FORMATS, ".tsv", formats.DatasetFormat(".tsv", read_tsv, ".tsv"))
    path = tmp_path / "t.tsv"
    path.write_text("\n".join(f"{i % 2}\t{i}\t{i * 2}" for i in range(6)) + "\n")
    bundle = load_file(path)
    assert (len(bundle.train), len(bundle.test), bundle.input_shape, bundle.n_classes) == (4, 2, (2,), 2)
