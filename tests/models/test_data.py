"""Datasets: built-ins, user files, holdouts and shards."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlbc_ray.config import Limits
from dlbc_ray.errors import InvalidTask
from dlbc_ray.models.data import (
    BUILTIN_DATASETS,
    MNIST1D_CACHE_NAME,
    Split,
    holdout,
    load_builtin,
    load_file,
    shard,
    shard_indices,
    split_hash,
)


def _indexed_split(n: int, n_classes: int = 3) -> Split:
    """x holds each example's own index, so shards can be traced back to rows."""
    return Split(np.arange(n, dtype=np.float32)[:, None], np.arange(n) % n_classes)


# ------------------------------------------------------------------ built-ins


@pytest.mark.parametrize(
    ("name", "shape", "classes"),
    [("digits", (1, 8, 8), 10), ("iris", (4,), 3), ("wine", (13,), 3), ("breast_cancer", (30,), 2)],
)
def test_sklearn_builtins_have_canonical_shapes_and_dtypes(name: str, shape: tuple[int, ...], classes: int) -> None:
    bundle = load_builtin(name)
    assert (bundle.name, bundle.input_shape, bundle.n_classes) == (name, shape, classes)
    assert bundle.train.x.shape[1:] == shape and bundle.train.x.dtype == np.float32 and bundle.test.y.dtype == np.int64
    assert len(bundle.test) == pytest.approx(0.2 * (len(bundle.train) + len(bundle.test)), abs=1)


def test_builtin_split_is_deterministic_and_seeded() -> None:
    a, b, c = load_builtin("wine", seed=3), load_builtin("wine", seed=3), load_builtin("wine", seed=4)
    assert split_hash(a.train) == split_hash(b.train) and split_hash(a.test) == split_hash(b.test)
    assert split_hash(a.test) != split_hash(c.test)


def test_builtin_split_is_stratified() -> None:
    bundle = load_builtin("iris", test_fraction=0.2)
    assert np.bincount(bundle.test.y).tolist() == [10, 10, 10]


def test_digits_are_scaled_to_unit_range() -> None:
    bundle = load_builtin("digits")
    assert bundle.train.x.min() == 0.0 and bundle.train.x.max() == 1.0


def test_tabular_features_are_standardized_with_train_statistics_only() -> None:
    bundle = load_builtin("breast_cancer")
    np.testing.assert_allclose(bundle.train.x.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(bundle.train.x.std(axis=0), 1.0, atol=1e-4)
    assert np.abs(bundle.test.x.mean(axis=0)).max() > 1e-3  # test data did not feed the statistics


def test_unknown_builtin_names_it_and_lists_the_builtins() -> None:
    with pytest.raises(InvalidTask, match="'cifar'.*digits, mnist1d") as info:
        load_builtin("cifar")
    assert info.value.reason == "unknown_dataset"
    assert BUILTIN_DATASETS == ("digits", "mnist1d", "iris", "wine", "breast_cancer")


def test_mnist1d_uses_its_own_split_and_is_cached(tmp_path: Path) -> None:
    bundle = load_builtin("mnist1d", cache_dir=tmp_path)
    assert (len(bundle.train), len(bundle.test), bundle.input_shape, bundle.n_classes) == (4000, 1000, (1, 40), 10)
    assert (tmp_path / MNIST1D_CACHE_NAME).is_file()
    again = load_builtin("mnist1d", cache_dir=tmp_path, seed=9)
    assert split_hash(again.train) == split_hash(bundle.train) and split_hash(again.test) == split_hash(bundle.test)


def test_mnist1d_leaves_global_numpy_rng_alone() -> None:
    np.random.seed(123)
    expected = np.random.rand()
    np.random.seed(123)
    load_builtin("mnist1d")
    assert np.random.rand() == expected


# ---------------------------------------------------------------------- files


def _write_npz(path: Path, **overrides: object) -> Path:
    arrays: dict[str, object] = {
        "x_train": np.ones((6, 2, 3)), "y_train": np.array([0, 1, 2, 0, 1, 2]),
        "x_test": np.zeros((3, 2, 3)), "y_test": np.array([0, 1, 2]),
    }
    arrays.update(overrides)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


def test_load_npz(tmp_path: Path) -> None:
    bundle = load_file(_write_npz(tmp_path / "toy.npz"))
    assert (bundle.name, bundle.input_shape, bundle.n_classes, len(bundle.train), len(bundle.test)) == ("toy", (2, 3), 3, 6, 3)
    assert bundle.train.x.dtype == np.float32 and bundle.train.y.dtype == np.int64


def test_load_csv(tmp_path: Path) -> None:
    path = tmp_path / "toy.csv"
    path.write_text("a,label,b,split\n1.5,0,2,train\n3,1,4,train\n5,1,6,test\n")
    bundle = load_file(path)
    assert bundle.input_shape == (2,) and bundle.n_classes == 2
    np.testing.assert_array_equal(bundle.train.x, [[1.5, 2], [3, 4]])
    np.testing.assert_array_equal(bundle.test.y, [1])


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"y_test": None}, "missing_array"),
        ({"y_train": np.array([0, 1, 2])}, "length_mismatch"),
        ({"x_test": np.zeros((3, 6))}, "shape_mismatch"),
        ({"y_train": np.array([0, 1, 2, 0, 1, 2.5])}, "bad_labels"),
        ({"y_test": np.array([0, -1, 2])}, "bad_labels"),
        ({"x_train": np.full((6, 2, 3), np.nan)}, "not_finite"),
        ({"x_test": np.full((3, 2, 3), np.inf)}, "not_finite"),
        ({"x_test": np.zeros((0, 2, 3)), "y_test": np.zeros(0, dtype=int)}, "empty_split"),
        ({"y_train": np.array(list("abcdef"))}, "not_numeric"),
        ({"x_train": np.ones(6)}, "bad_shape"),
    ],
)
def test_npz_problems_are_named(tmp_path: Path, overrides: dict[str, object], reason: str) -> None:
    path = _write_npz(tmp_path / "bad.npz", **overrides)
    with pytest.raises(InvalidTask, match="bad.npz") as info:
        load_file(path)
    assert info.value.reason == reason
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("a,split\n1,train\n", "missing_column"),
        ("a,label\n1,0\n", "missing_column"),
        ("label,split\n0,train\n", "missing_column"),
        ("a,label,split\n1,0,train\n2,1,valid\n", "bad_split"),
        ("a,label,split\n1,0,train\n2,1\n", "bad_row"),
        ("a,label,split\n,0,train\n2,1,test\n", "not_numeric"),
        ("a,label,split\nx,0,train\n2,1,test\n", "not_numeric"),
        ("a,label,split\n1,cat,train\n2,1,test\n", "not_numeric"),
        ("a,label,split\n1,0.5,train\n2,1,test\n", "bad_labels"),
        ("a,label,split\nnan,0,train\n2,1,test\n", "not_finite"),
        ("a,label,split\n1,0,train\n", "empty_split"),
        ("", "missing_column"),
    ],
)
def test_csv_problems_are_named(tmp_path: Path, text: str, reason: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(InvalidTask, match="bad.csv") as info:
        load_file(path)
    assert info.value.reason == reason


def test_missing_unknown_and_corrupt_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(InvalidTask, match="nope.npz") as missing:
        load_file(tmp_path / "nope.npz")
    (tmp_path / "data.json").write_text("{}")
    with pytest.raises(InvalidTask, match="data.json.*'.json'") as unknown:
        load_file(tmp_path / "data.json")
    (tmp_path / "torn.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(InvalidTask, match="torn.npz") as torn:
        load_file(tmp_path / "torn.npz")
    assert (missing.value.reason, unknown.value.reason, torn.value.reason) == ("missing_file", "bad_extension", "unreadable")


@pytest.mark.parametrize("labels", [
    np.array([0, 1, 1e300, 0, 1, 2]),  # wraps to a negative int64 in the cast
    np.array([0, 1, 2**63, 0, 1, 2], dtype=np.uint64),
    np.array([0, 1, 2**64 - 1, 0, 1, 2], dtype=np.uint64),
    np.array([0, 1, float(2**63), 0, 1, 2]),
    np.array([0, 1, 1000, 0, 1, 2]),  # K = 1001 is over the default cap of 1000 classes
    np.array([0, 1, np.nan, 0, 1, 2]),
])
def test_labels_must_be_0_to_k_minus_1_before_the_cast(tmp_path: Path, labels: np.ndarray) -> None:
    with pytest.raises(InvalidTask, match=r"y_train labels must be integers in 0\.\.999") as info:
        load_file(_write_npz(tmp_path / "bad.npz", y_train=labels))
    assert info.value.reason == "bad_labels"


def test_class_cap_comes_from_config(tmp_path: Path) -> None:
    path = _write_npz(tmp_path / "toy.npz")
    assert load_file(path, limits=Limits(max_classes=3)).n_classes == 3
    with pytest.raises(InvalidTask, match=r"0\.\.1"):
        load_file(path, limits=Limits(max_classes=2))


@pytest.mark.parametrize("x", [np.full((6, 2, 3), 1e300), np.full((6, 2, 3), -3.5e38), np.full((6, 2, 3), float(2**128))])
def test_features_finite_in_float64_but_not_in_float32_are_refused(tmp_path: Path, x: np.ndarray) -> None:
    with pytest.raises(InvalidTask, match=r"x_train holds NaN or inf values \(as float32\)") as info:
        load_file(_write_npz(tmp_path / "bad.npz", x_train=x))
    assert info.value.reason == "not_finite"


def _compressed(tmp_path: Path) -> bytes:
    path = tmp_path / "ok.npz"
    rng = np.random.default_rng(0)
    np.savez_compressed(path, x_train=rng.normal(size=(200, 4)), y_train=np.arange(200) % 3,
                        x_test=rng.normal(size=(30, 4)), y_test=np.arange(30) % 3)
    return path.read_bytes()


def test_a_corrupt_compressed_npz_is_unreadable_not_a_crash(tmp_path: Path) -> None:
    data = bytearray(_compressed(tmp_path))
    for i in range(200, 600, 7):  # inside the first member's header and deflate stream
        data[i] ^= 0xFF
    (tmp_path / "bad.npz").write_bytes(bytes(data))
    with pytest.raises(InvalidTask, match="bad.npz: not a readable .npz file") as info:
        load_file(tmp_path / "bad.npz")
    assert info.value.reason == "unreadable" and len(str(info.value)) < 300


@settings(max_examples=60, deadline=None)
@given(flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), min_size=1, max_size=8))
def test_byte_flips_in_an_npz_give_a_dataset_or_a_named_error(tmp_path_factory: pytest.TempPathFactory,
                                                              flips: list[tuple[int, int]]) -> None:
    folder = tmp_path_factory.mktemp("flips")
    data = bytearray(_compressed(folder))
    for position, mask in flips:
        data[position % len(data)] ^= mask
    (folder / "f.npz").write_bytes(bytes(data))
    try:
        load_file(folder / "f.npz")
    except InvalidTask as e:
        assert "\n" not in str(e) and len(str(e)) < 300


def test_decompressed_size_is_capped_before_arrays_are_read(tmp_path: Path) -> None:
    path = tmp_path / "bomb.npz"
    np.savez_compressed(path, x_train=np.zeros((4096, 256)), y_train=np.zeros(4096, dtype=int),
                        x_test=np.zeros((2, 256)), y_test=np.zeros(2, dtype=int))
    assert path.stat().st_size < 100_000  # 8 MB of zeros
    with pytest.raises(InvalidTask, match="over the 1,000,000-byte limit") as info:
        load_file(path, limits=Limits(max_dataset_bytes=1_000_000))
    assert info.value.reason == "too_large"


def test_oversized_csv_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    path.write_text("a,label,split\n" + "1,0,train\n" * 1000)
    with pytest.raises(InvalidTask, match="over the 100-byte limit"):
        load_file(path, limits=Limits(max_dataset_bytes=100))


@pytest.mark.parametrize("name", ["a\x00b.npz", "x" * 5000 + ".npz"])
def test_unopenable_paths_are_named_errors(tmp_path: Path, name: str) -> None:
    with pytest.raises(InvalidTask) as info:
        load_file(tmp_path / name)
    assert info.value.reason in ("unreadable", "missing_file") and len(str(info.value)) < 300


# ------------------------------------------------------------- hash, holdout, shards


def test_split_hash_sees_every_value_and_dtype_canonicalization() -> None:
    split = _indexed_split(10)
    same = Split(split.x.astype(np.float64), split.y.astype(np.int32))
    changed = Split(split.x, np.r_[split.y[:-1], split.y[-1] + 1])
    assert split_hash(split) == split_hash(same) != split_hash(changed)


def test_split_rejects_unpaired_arrays() -> None:
    with pytest.raises(InvalidTask):
        Split(np.zeros((3, 2)), np.zeros(4))


def test_holdout_is_a_deterministic_disjoint_cover() -> None:
    split = _indexed_split(50)
    fit, val = holdout(split, 0.2, seed=1)
    assert (len(fit), len(val)) == (40, 10)
    assert sorted(np.r_[fit.x[:, 0], val.x[:, 0]].tolist()) == list(range(50))
    assert split_hash(holdout(split, 0.2, seed=1)[1]) == split_hash(val) != split_hash(holdout(split, 0.2, seed=2)[1])


def test_holdout_zero_keeps_everything() -> None:
    split = _indexed_split(5)
    fit, val = holdout(split, 0.0, seed=0)
    assert fit is split and len(val) == 0 and val.x.shape == (0, 1)


def test_holdout_rejects_bad_fraction() -> None:
    with pytest.raises(InvalidTask):
        holdout(_indexed_split(5), 1.0, seed=0)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 120),
    n_shards=st.integers(1, 12),
    iid=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
    alpha=st.floats(0.05, 10.0),
)
def test_shards_partition_the_split(n: int, n_shards: int, iid: bool, seed: int, alpha: float) -> None:
    split = _indexed_split(n, n_classes=4)
    if n_shards > n:
        with pytest.raises(InvalidTask):
            shard(split, n_shards, 0, iid=iid, seed=seed, alpha=alpha)
        return
    parts = [shard(split, n_shards, i, iid=iid, seed=seed, alpha=alpha) for i in range(n_shards)]
    rows = np.concatenate([p.x[:, 0] for p in parts])
    assert sorted(rows.tolist()) == list(range(n))  # disjoint and complete
    assert all(len(p) > 0 for p in parts)
    assert all((p.y == p.x[:, 0].astype(int) % 4).all() for p in parts)  # labels travel with their rows
    if iid:
        assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_shards_are_deterministic_and_seeded() -> None:
    y = np.arange(200) % 5
    first = shard_indices(y, 4, iid=False, seed=7)
    assert all((a == b).all() for a, b in zip(first, shard_indices(y, 4, iid=False, seed=7)))
    assert any((a.shape != b.shape) or (a != b).any() for a, b in zip(first, shard_indices(y, 4, iid=False, seed=8)))


def test_small_alpha_skews_labels() -> None:
    y = np.arange(1000) % 10
    skewed = [np.bincount(y[i], minlength=10) for i in shard_indices(y, 5, iid=False, seed=0, alpha=0.1)]
    even = [np.bincount(y[i], minlength=10) for i in shard_indices(y, 5, iid=True, seed=0)]
    share = lambda counts: np.mean([c.max() / c.sum() for c in counts])  # noqa: E731
    assert share(skewed) > 0.4 > share(even)


@pytest.mark.parametrize(("n_shards", "index"), [(11, 0), (3, 3), (3, -1), (0, 0)])
def test_shard_rejects_bad_arguments(n_shards: int, index: int) -> None:
    with pytest.raises(InvalidTask, match="shard"):
        shard(_indexed_split(10), n_shards, index)
