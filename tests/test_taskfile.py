"""Task files: every example loads; every bad file fails in one line naming the file and the field."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from dlbc_ray import crypto
from dlbc_ray.constants import SCORE_SCALE
from dlbc_ray.crypto import Identity
from dlbc_ray.errors import InvalidTask
from dlbc_ray.models.data import load_builtin, split_hash
from dlbc_ray.taskfile import TaskFile, load_task_file, load_task_with_data, read_task_file, to_task

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "tasks"
NOW_MS = 1_800_000_000_000
GOOD = """\
model: {name: mlp, params: {hidden: [16]}}
dataset: iris
target: 0.9
reward: 100
deadline: 600
max_epochs: 3
"""


def write_npz(path: Path, *, drop: str | None = None, n: int = 40, features: int = 6) -> Path:
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.normal(size=(n, features)), "y_train": np.arange(n) % 3,
              "x_test": rng.normal(size=(n // 2, features)), "y_test": np.arange(n // 2) % 3}
    arrays.pop(drop, None)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def write(tmp_path: Path, text: str, name: str = "task.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def with_line(line: str, *, drop: str | None = None) -> str:
    """GOOD with one top-level field replaced (or removed with ``drop``)."""
    key = line.split(":", 1)[0] if line else drop
    kept = [row for row in GOOD.splitlines() if not row.startswith(f"{key}:")]
    return "\n".join(kept + ([line] if line else [])) + "\n"


# ------------------------------------------------------------------- examples


def test_all_promised_examples_exist() -> None:
    names = {p.name for p in EXAMPLES.iterdir()}
    assert {"digits-mlp.yaml", "digits-cnn.yaml", "mnist1d-cnn1d.yaml", "iris-mlp.json",
            "digits-fedavg-noniid.yaml", "local-npz.yaml"} <= names


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.*") if p.name != "local-npz.yaml"))
def test_builtin_examples_load(name: str, tmp_path: Path) -> None:
    taskfile, bundle = load_task_with_data(EXAMPLES / name, cache_dir=tmp_path)
    assert taskfile.dataset == bundle.name and not taskfile.is_file_dataset


def test_local_npz_example_loads_once_its_data_is_made(tmp_path: Path) -> None:
    task = shutil.copy(EXAMPLES / "local-npz.yaml", tmp_path / "local-npz.yaml")
    write_npz(tmp_path / "data" / "blobs.npz", features=8)
    taskfile = load_task_file(task)
    assert taskfile.dataset == str((tmp_path / "data" / "blobs.npz").resolve())


def test_local_npz_example_without_its_data_names_the_missing_file(tmp_path: Path) -> None:
    task = shutil.copy(EXAMPLES / "local-npz.yaml", tmp_path / "local-npz.yaml")
    with pytest.raises(InvalidTask, match=r"local-npz\.yaml: dataset: .*blobs\.npz: no such dataset file"):
        load_task_file(task)


def test_fedavg_example_carries_fusion_and_partition() -> None:
    taskfile = read_task_file(EXAMPLES / "digits-fedavg-noniid.yaml")
    assert (taskfile.fusion, taskfile.partition, taskfile.dirichlet_alpha) == ("fedavg", "non-iid", 0.5)


# ------------------------------------------------------------------ bad files

BAD_YAML = [
    ("colour: red\n" + GOOD, "colour: unknown field"),
    (GOOD.replace("params: {hidden: [16]}", "size: 3"), "model.size: unknown field"),
    (with_line("", drop="reward"), "reward: missing (required)"),
    (with_line("reward: lots"), "reward: must be a valid integer"),
    (with_line("reward: '100'"), "reward: must be a valid integer"),
    (with_line("reward: -5"), "reward: must be greater than 0"),
    (with_line("reward: 0"), "reward: must be greater than 0"),
    (with_line("target: 1.5"), "target: must be less than or equal to 1"),
    (with_line("target: -0.1"), "target: must be greater than or equal to 0"),
    (with_line("target: high"), "target: must be a valid number"),
    (with_line("max_epochs: 0"), "max_epochs: must be greater than or equal to 1"),
    (with_line("metric: f1"), "metric: must be 'accuracy'"),
    (with_line("fusion: vote"), "fusion: must be 'winner', 'fedavg'"),
    (with_line("partition: random"), "partition: must be 'none', 'iid' or 'non-iid'"),
    (with_line("dirichlet_alpha: 0.3"), "dirichlet_alpha: only used with partition: non-iid"),
    (with_line("version: 2"), "version: must be 1"),
    (with_line("deadline: -5"), "deadline: must be seconds after submission"),
    (with_line("deadline: soon"), "deadline: must be seconds after submission or an ISO 8601 time"),
    (with_line("deadline: '2030-01-01T00:00:00'"), "deadline: ISO time 2030-01-01T00:00:00 needs a zone"),
    (with_line("deadline: true"), "deadline: must be seconds after submission"),
    (with_line("model: {name: transformer}"), "model.name: unknown net 'transformer'; known nets are mlp"),
    (with_line("model: {name: 3}"), "model.name: must be a valid string"),
    (with_line("model: {name: mlp, params: {hidden: [1.5]}}"), "model.params.hidden: unsupported value [1.5]"),
    (with_line("model: {name: mlp, params: {hidden: [0]}}"), "model.params: net 'mlp' parameter 'hidden'"),
    (with_line("model: {name: mlp, params: {depth: 3}}"), "model.params: net 'mlp' has no parameter 'depth'"),
    (with_line("model: {name: cnn}"), "model: net 'cnn' cannot take inputs of shape (4,) (dataset 'iris')"),
    (with_line("dataset: cifar10"), "dataset: unknown built-in dataset 'cifar10'; built-ins are digits"),
    (with_line("dataset: data/none.npz"), "dataset: "),
    ("model: [unclosed\n", "not valid YAML"),
    ("- a\n- b\n", "must hold a mapping of fields, found list"),
    ("", "must hold a mapping of fields, found NoneType"),
]


@pytest.mark.parametrize(("text", "expected"), BAD_YAML)
def test_bad_yaml_fails_in_one_line_naming_file_and_field(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text, "bad.yaml")
    with pytest.raises(InvalidTask) as caught:
        load_task_file(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and expected in message
    assert "\n" not in message


def test_missing_dataset_file_names_both_files(tmp_path: Path) -> None:
    path = write(tmp_path, with_line("dataset: data/none.npz"))
    with pytest.raises(InvalidTask, match=rf"^{path}: dataset: {tmp_path}/data/none\.npz: no such dataset file$"):
        load_task_file(path)


@pytest.mark.parametrize(("make", "expected"), [
    (lambda p: p.write_bytes(b"not a zip"), "not a readable .npz file"),
    (lambda p: write_npz(p, drop="y_test"), "missing array 'y_test'"),
])
def test_malformed_dataset_files_are_named(tmp_path: Path, make: object, expected: str) -> None:
    make(tmp_path / "d.npz")  # type: ignore[operator]
    path = write(tmp_path, with_line("dataset: d.npz"))
    with pytest.raises(InvalidTask, match=rf"^{path}: dataset: .*d\.npz: {expected}"):
        load_task_file(path)


def test_bad_csv_is_named(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("label,split,a\n0,train,1.0\n1,test,oops\n")
    path = write(tmp_path, with_line("dataset: d.csv"))
    with pytest.raises(InvalidTask, match=rf"^{path}: dataset: .*d\.csv: column 'a' holds a non-numeric value"):
        load_task_file(path)


def test_missing_task_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidTask, match=rf"^{tmp_path}/nope\.yaml: no such task file$"):
        load_task_file(tmp_path / "nope.yaml")


def test_bad_json_and_unknown_extension(tmp_path: Path) -> None:
    with pytest.raises(InvalidTask, match=r"bad\.json: not valid JSON \(Expecting"):
        load_task_file(write(tmp_path, "{bad", "bad.json"))
    with pytest.raises(InvalidTask, match=r"task\.txt: unknown task file extension '\.txt'"):
        load_task_file(write(tmp_path, GOOD, "task.txt"))


# ----------------------------------------------------------------- good files


def test_json_and_yaml_read_the_same(tmp_path: Path) -> None:
    import yaml

    from_yaml = load_task_file(write(tmp_path, GOOD))
    from_json = load_task_file(write(tmp_path, json.dumps(yaml.safe_load(GOOD)), "task.json"))
    assert from_yaml == from_json


def test_file_datasets_resolve_against_the_task_files_folder(tmp_path: Path) -> None:
    write_npz(tmp_path / "shared" / "d.npz")
    (tmp_path / "tasks").mkdir()
    path = write(tmp_path / "tasks", with_line("dataset: ../shared/d.npz"))
    taskfile, bundle = load_task_with_data(path)
    assert taskfile.dataset == str((tmp_path / "shared" / "d.npz").resolve())
    assert (bundle.name, bundle.input_shape, bundle.n_classes) == ("d", (6,), 3)


@pytest.mark.parametrize("deadline", ["2030-01-01T00:00:00Z", "'2030-01-01T01:00:00+01:00'"])
def test_iso_deadlines_from_yaml_timestamps_and_strings(tmp_path: Path, deadline: str) -> None:
    taskfile, bundle = load_task_with_data(write(tmp_path, with_line(f"deadline: {deadline}")))
    task = to_task(taskfile, "ab" * 32, nonce=1, now_ms=NOW_MS, bundle=bundle)
    assert task.deadline_ms == int(dt.datetime(2030, 1, 1, tzinfo=dt.UTC).timestamp() * 1000)


def test_to_task_fills_the_dataset_spec_from_the_bundle_and_can_be_signed(tmp_path: Path) -> None:
    taskfile, bundle = load_task_with_data(EXAMPLES / "digits-fedavg-noniid.yaml")
    requester = Identity.from_seed("requester", b"r")
    task = to_task(taskfile, requester.public_key, nonce=7, now_ms=NOW_MS, bundle=bundle)
    assert task.dataset.train_hash == split_hash(bundle.train) and task.dataset.test_hash == split_hash(bundle.test)
    assert (task.dataset.n_train, task.dataset.n_test) == (len(bundle.train), len(bundle.test))
    assert task.dataset.input_shape == (1, 8, 8) and task.dataset.n_classes == 10
    assert (task.dataset.partition, task.dataset.dirichlet_alpha, task.fusion) == ("non-iid", 0.5, "fedavg")
    assert task.target == round(0.8 * SCORE_SCALE) and task.reward == 1500 and task.max_epochs == 5
    assert task.deadline_ms == NOW_MS + 1_200_000 and task.created_ms == NOW_MS and task.nonce == 7
    assert crypto.verify(crypto.sign(requester, task), expected_signer=requester.public_key) == task


def test_to_task_keeps_the_file_path_as_uri(tmp_path: Path) -> None:
    write_npz(tmp_path / "d.npz")
    taskfile, bundle = load_task_with_data(write(tmp_path, with_line("dataset: d.npz")))
    task = to_task(taskfile, "ab" * 32, nonce=0, now_ms=NOW_MS, bundle=bundle)
    assert task.dataset.name == "d" and task.dataset.uri == str((tmp_path / "d.npz").resolve())


def test_to_task_refuses_data_of_another_dataset(tmp_path: Path) -> None:
    taskfile = load_task_file(write(tmp_path, GOOD))
    with pytest.raises(InvalidTask, match="dataset: the task names 'iris' but the data given is 'wine'"):
        to_task(taskfile, "ab" * 32, nonce=0, now_ms=NOW_MS, bundle=load_builtin("wine"))


def test_to_task_refuses_a_deadline_already_past(tmp_path: Path) -> None:
    taskfile, bundle = load_task_with_data(write(tmp_path, with_line("deadline: 2020-01-01T00:00:00Z")))
    with pytest.raises(InvalidTask, match="deadline: 2020-01-01 00:00:00\\+00:00 is already past"):
        to_task(taskfile, "ab" * 32, nonce=0, now_ms=NOW_MS, bundle=bundle)


def test_taskfile_is_frozen() -> None:
    taskfile = TaskFile.model_validate({"model": {"name": "mlp"}, "dataset": "iris", "target": 0.5, "reward": 1,
                                        "deadline": 10, "max_epochs": 1})
    with pytest.raises(Exception, match="frozen"):
        taskfile.reward = 2  # type: ignore[misc]
