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
from dlbc_ray.runtime.taskfile import TaskFile, load_task_file, load_task_with_data, read_task_file, to_task

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "tasks"
NOW_MS = 1_800_000_000_000
REQUESTER = Identity.from_seed("requester", b"r")
CHAIN_ID = "c" * 64
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
    (with_line("target: 1.5"), "target: target for accuracy must be a score in [0, 1], got 1.5"),
    (with_line("target: -0.1"), "target: must be greater than or equal to 0"),
    (with_line("target: high"), "target: must be a valid number"),
    (with_line("max_epochs: 0"), "max_epochs: must be greater than or equal to 1"),
    (with_line("metric: f1"), "metric: unknown metric 'f1'; known metrics are accuracy, macro_f1"),
    (with_line("metric: mse"), "dataset: the built-in datasets hold classes; metric 'mse' needs a file with float targets"),
    (with_line("fusion: vote"), "fusion: unknown fusion 'vote'; use winner or one of fedavg, trimmed-mean"),
    (with_line("fusion: Fed Avg"), "fusion: unknown fusion 'Fed Avg'; use winner or one of fedavg"),
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
    with pytest.raises(InvalidTask, match=rf"^{path}: dataset: {tmp_path}/data/none\.npz: no such dataset file or image folder$"):
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


def test_a_directory_or_device_is_not_a_task_file(tmp_path: Path) -> None:
    (tmp_path / "dir.yaml").mkdir()
    for path in (tmp_path / "dir.yaml", Path("/dev/null")):
        with pytest.raises(InvalidTask, match=r": not a regular file \(a task file is"):
            load_task_file(path)


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
    task = to_task(taskfile, REQUESTER.public_key, nonce=1, now_ms=NOW_MS, bundle=bundle)
    assert task.deadline_ms == int(dt.datetime(2030, 1, 1, tzinfo=dt.UTC).timestamp() * 1000)


def test_to_task_fills_the_dataset_spec_from_the_bundle_and_can_be_signed(tmp_path: Path) -> None:
    taskfile, bundle = load_task_with_data(EXAMPLES / "digits-fedavg-noniid.yaml")
    requester = REQUESTER
    task = to_task(taskfile, requester.public_key, nonce=7, now_ms=NOW_MS, bundle=bundle)
    assert task.dataset.train_hash == split_hash(bundle.train) and task.dataset.test_hash == split_hash(bundle.test)
    assert (task.dataset.n_train, task.dataset.n_test) == (len(bundle.train), len(bundle.test))
    assert task.dataset.input_shape == (1, 8, 8) and task.dataset.n_classes == 10
    assert (task.dataset.partition, task.dataset.dirichlet_alpha, task.fusion) == ("non-iid", 0.5, "fedavg")
    assert task.target == round(0.8 * SCORE_SCALE) and task.reward == 1500 and task.max_epochs == 5
    assert task.deadline_ms == NOW_MS + 1_200_000 and task.created_ms == NOW_MS and task.nonce == 7
    signed = crypto.sign(requester, task, CHAIN_ID)
    assert crypto.verify(signed, chain_id=CHAIN_ID, expected_signer=requester.public_key) == task


def test_to_task_keeps_the_local_path_off_chain(tmp_path: Path) -> None:
    write_npz(tmp_path / "data" / "d.npz")
    taskfile, bundle = load_task_with_data(write(tmp_path, with_line("dataset: data/d.npz")))
    task = to_task(taskfile, REQUESTER.public_key, nonce=0, now_ms=NOW_MS, bundle=bundle)
    assert task.dataset.name == "d" and task.dataset.uri == "d.npz"
    assert str(tmp_path) not in crypto.canonical_bytes(task).decode()


def test_to_task_refuses_data_of_another_dataset(tmp_path: Path) -> None:
    taskfile = load_task_file(write(tmp_path, GOOD))
    with pytest.raises(InvalidTask, match="dataset: the task names 'iris' but the data given is 'wine'"):
        to_task(taskfile, REQUESTER.public_key, nonce=0, now_ms=NOW_MS, bundle=load_builtin("wine"))


def test_to_task_refuses_a_deadline_already_past(tmp_path: Path) -> None:
    taskfile, bundle = load_task_with_data(write(tmp_path, with_line("deadline: 2020-01-01T00:00:00Z")))
    with pytest.raises(InvalidTask, match="deadline: 2020-01-01 00:00:00\\+00:00 is already past"):
        to_task(taskfile, REQUESTER.public_key, nonce=0, now_ms=NOW_MS, bundle=bundle)


def test_taskfile_is_frozen() -> None:
    taskfile = TaskFile.model_validate({"model": {"name": "mlp"}, "dataset": "iris", "target": 0.5, "reward": 1,
                                        "deadline": 10, "max_epochs": 1})
    with pytest.raises(Exception, match="frozen"):
        taskfile.reward = 2  # type: ignore[misc]


# ------------------------------------------- hostile files (issue 10, finding 9)

# The 480-byte shape that once gave a one-line error of 52 million characters (pydantic quoted its input).
ALIAS_BOMB = with_line("model: {name: mlp, params: {hidden: [&a [1, 1, 1, 1, 1, 1, 1, 1, 1], " + ", ".join(
    f"&{k} [{', '.join([f'*{p}'] * 9)}]" for p, k in zip("abcde", "bcdef")) + "]}}")


def one_line(path: Path, caught: pytest.ExceptionInfo[InvalidTask], *words: str) -> None:
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and "\n" not in message and len(message) <= 300, message
    for word in words:
        assert word in message, message


@pytest.mark.parametrize(("text", "words"), [
    (with_line("deadline: 1.0e+306"), ["deadline: ", "more than 3650 days away"]),
    (with_line("deadline: 315360001"), ["deadline: ", "more than 3650 days away"]),
    (with_line("reward: " + "9" * 5000), ["reward: a value of 5,000 characters"]),
    (with_line("reward: " + "9" * 400), ["reward: an integer out of range"]),
    (with_line("reward: 9007199254740992"), ["reward: must be less than or equal to 9007199254740991"]),
    (with_line("max_epochs: " + "1" * 40), ["max_epochs: an integer out of range"]),
    (with_line("target: .nan"), ["target: NaN and infinities are not allowed"]),
    (with_line("target: .inf"), ["target: NaN and infinities are not allowed"]),
    (with_line("deadline: .inf"), ["deadline: NaN and infinities are not allowed"]),
    ("partition: non-iid\ndirichlet_alpha: -.inf\n" + GOOD, ["dirichlet_alpha: NaN and infinities"]),
    (with_line("model: {name: mlp, params: {dropout: .nan}}"), ["model.params.dropout: NaN and infinities"]),
    (with_line('dataset: "\\uD800.npz"'), ["dataset: text with a control character (e.g. NUL) or a lone surrogate"]),
    (with_line('model: {name: "ml\\uDC80p"}'), ["model.name: text with a control character"]),
    (with_line('dataset: "a\\0b.npz"'), ["dataset: text with a control character (e.g. NUL)"]),
    (with_line("dataset: ~otheruser/d.npz"), ["dataset: '~user' paths are not supported"]),
    (with_line("dataset: " + "d/" * 300 + "x.npz"), ["dataset: String should have at most 512 characters"]),
    (with_line("dataset: " + "x" * 2000 + ".npz"), ["dataset: a value of 2,004 characters; the limit is 1,024"]),
    (with_line("model: " + "[" * 300 + "]" * 300), ["model.0.0.0.0.0.0.0: nested deeper than 8 levels"]),
    (with_line("model: {name: mlp, params: {hidden: [1000000, 1000000]}}"),
     ["model.params: net 'mlp' would have 1e+12 parameters; the limit is 50,000,000"]),
    (with_line("model: {name: cnn, params: {channels: [4096, 4096], hidden: 4096}}").replace("iris", "digits"),
     ["model.params: net 'cnn' would have"]),
    (with_line("deadline: 0000-01-01T00:00:00Z"), ["not valid YAML (year 0 is out of range)"]),
    (with_line("target: !!float .5"), ["target: explicit YAML tags (!!float) are not allowed"]),
    (ALIAS_BOMB, ["model.params.hidden.2.7: more than 16 YAML aliases"]),
])
def test_hostile_yaml_gets_one_short_line_naming_the_field(tmp_path: Path, text: str, words: list[str]) -> None:
    path = write(tmp_path, text, "bad.yaml")
    with pytest.raises(InvalidTask) as caught:
        load_task_with_data(path)
    one_line(path, caught, *words)


@pytest.mark.parametrize(("change", "words"), [
    ({"deadline": 1e306}, ["deadline: ", "more than 3650 days away"]),
    ({"target": float("nan")}, ["target: NaN and infinities are not allowed"]),
    ({"reward": float("inf")}, ["reward: NaN and infinities are not allowed"]),
    ({"dataset": "\ud800.npz"}, ["dataset: text with a control character"]),
    ({"model": {"name": "mlp", "params": {"hidden": [10**4000]}}}, ["model.params.hidden.0: a number of 4,001"]),
    ({"model": {"name": "mlp", "params": {"hidden": [2**62]}}}, ["model.params.hidden: unsupported value"]),
    ({"target": 1e400}, ["target: NaN and infinities are not allowed"]),
])
def test_hostile_json_gets_one_short_line_naming_the_field(tmp_path: Path, change: dict[str, object],
                                                           words: list[str]) -> None:
    import yaml

    path = write(tmp_path, json.dumps({**yaml.safe_load(GOOD), **change}).replace("1e+400", "1e400"), "bad.json")
    with pytest.raises(InvalidTask) as caught:
        load_task_with_data(path)
    one_line(path, caught, *words)


def test_json_nested_hundreds_deep_is_refused_before_decoding(tmp_path: Path) -> None:
    path = write(tmp_path, '{"model": ' + "[" * 5000 + "]" * 5000 + "}", "deep.json")
    with pytest.raises(InvalidTask) as caught:
        load_task_file(path)
    one_line(path, caught, "nested deeper than 8 levels")


def test_an_alias_bomb_costs_one_short_line(tmp_path: Path) -> None:
    from dlbc_ray.config import Limits

    assert len(ALIAS_BOMB.encode()) < 600
    path = write(tmp_path, ALIAS_BOMB, "bomb.yaml")
    with pytest.raises(InvalidTask) as caught:
        load_task_file(path)
    one_line(path, caught, "more than 16 YAML aliases")
    with pytest.raises(InvalidTask) as caught:  # with aliases allowed, the expanded values still are bounded
        load_task_file(path, limits=Limits(max_aliases=100, max_depth=20))
    one_line(path, caught, "more than 2,000 values (each use of a YAML alias counts)")


def test_aliases_under_the_cap_still_count_every_use(tmp_path: Path) -> None:
    from dlbc_ray.config import Limits

    path = write(tmp_path, "x: &x [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\ny: [*x, *x, *x, *x, *x]\n" + GOOD)
    with pytest.raises(InvalidTask, match="x: unknown field"):  # five aliases pass the alias cap...
        load_task_file(path, limits=Limits(max_aliases=5))
    with pytest.raises(InvalidTask) as caught:
        load_task_file(path, limits=Limits(max_aliases=5, max_nodes=50))
    one_line(path, caught, "more than 50 values")


def test_a_5mb_file_is_refused_before_it_is_parsed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import yaml

    path = write(tmp_path, GOOD + "# " + "x" * 5_000_000 + "\n", "big.yaml")
    monkeypatch.setattr(yaml, "parse", lambda *a, **k: pytest.fail("a 5 MB file was parsed"))
    monkeypatch.setattr(yaml, "load", lambda *a, **k: pytest.fail("a 5 MB file was parsed"))
    with pytest.raises(InvalidTask) as caught:
        load_task_file(path)
    one_line(path, caught, "5,000,", "over the 65,536-byte limit")
    assert caught.value.reason == "too_large"


def test_labels_that_wrap_in_the_cast_are_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x_train=rng.normal(size=(30, 4)), y_train=np.array([0, 1, 2**64 - 1] * 10, np.uint64),
             x_test=rng.normal(size=(9, 4)), y_test=np.arange(9) % 3)
    path = write(tmp_path, with_line("dataset: d.npz"))
    with pytest.raises(InvalidTask) as caught:
        load_task_with_data(path)
    one_line(path, caught, "dataset: ", "y_train labels must be integers in 0..999")


def test_features_that_overflow_float32_are_refused(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x_train=np.full((30, 4), 1e39), y_train=np.arange(30) % 3,
             x_test=np.zeros((9, 4)), y_test=np.arange(9) % 3)
    path = write(tmp_path, with_line("dataset: d.npz"))
    with pytest.raises(InvalidTask) as caught:
        load_task_with_data(path)
    one_line(path, caught, "dataset: ", "x_train holds NaN or inf values (as float32)")


def test_a_corrupt_compressed_npz_is_named(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    np.savez_compressed(tmp_path / "d.npz", x_train=rng.normal(size=(300, 4)), y_train=np.arange(300) % 3,
                        x_test=rng.normal(size=(30, 4)), y_test=np.arange(30) % 3)
    data = bytearray((tmp_path / "d.npz").read_bytes())
    for i in range(200, 600, 7):
        data[i] ^= 0xFF
    (tmp_path / "d.npz").write_bytes(bytes(data))
    path = write(tmp_path, with_line("dataset: d.npz"))
    with pytest.raises(InvalidTask) as caught:
        load_task_with_data(path)
    one_line(path, caught, "dataset: ", "d.npz: not a readable .npz file")


def test_long_paths_are_clipped_to_one_short_line(tmp_path: Path) -> None:
    deep = tmp_path.joinpath(*["folder-with-a-long-name"] * 12)
    deep.mkdir(parents=True)
    path = write(deep, with_line("reward: -1"))
    with pytest.raises(InvalidTask) as caught:
        load_task_file(path)
    message = str(caught.value)
    assert len(message) <= 300 and "reward: must be greater than 0" in message and message.endswith("than 0")


def test_a_deadline_further_than_ten_years_is_refused_by_to_task(tmp_path: Path) -> None:
    taskfile, bundle = load_task_with_data(write(tmp_path, with_line("deadline: 9999-12-31T00:00:00Z")))
    with pytest.raises(InvalidTask, match="deadline: 9999-12-31 00:00:00\\+00:00 is more than 3650 days away"):
        to_task(taskfile, REQUESTER.public_key, nonce=0, now_ms=NOW_MS, bundle=bundle)


def test_to_task_turns_wire_refusals_into_named_errors(tmp_path: Path) -> None:
    taskfile, bundle = load_task_with_data(write(tmp_path, GOOD))
    with pytest.raises(InvalidTask, match="^task: requester: "):
        to_task(taskfile, "ab" * 32, nonce=0, now_ms=NOW_MS, bundle=bundle)  # not a point on the curve


# ------------------------------------------------------------------------ CLI


@pytest.mark.parametrize(("name", "text"), [
    ("bomb.yaml", ALIAS_BOMB),
    ("big.yaml", GOOD + "#" * 70_000),
    ("deep.json", '{"model": ' + "[" * 3000 + "]" * 3000 + "}"),
    ("huge.yaml", with_line("model: {name: mlp, params: {hidden: [1000000, 1000000]}}")),
    ("far.json", json.dumps({"model": {"name": "mlp"}, "dataset": "iris", "target": 0.5, "reward": 1,
                             "deadline": 1e306, "max_epochs": 1})),
])
def test_submit_of_a_bad_file_prints_one_line_exits_non_zero_and_writes_nothing(tmp_path: Path, name: str,
                                                                                  text: str) -> None:
    from typer.testing import CliRunner

    from dlbc_ray.cli.app import app
    from dlbc_ray.runtime.home import open_home

    home = tmp_path / "home"
    open_home(home, create=True)
    before = {p: p.read_bytes() for p in home.rglob("*") if p.is_file()}
    path = write(tmp_path, text, name)
    result = CliRunner().invoke(app, ["submit", str(path), "--home", str(home)], catch_exceptions=False)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == InvalidTask.exit_code, result.output
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(path) in lines[0], result.stderr
    assert "Traceback" not in result.output and len(lines[0]) <= 310
    assert {p: p.read_bytes() for p in home.rglob("*") if p.is_file()} == before


# ----------------------------------------------------------------------- the task's own code

CUSTOM = Path(__file__).resolve().parents[1] / "examples" / "custom_model"
SHIPPED = """\
model: {name: dlbc_resnet.nets:resnet_small, params: {width: 8, blocks: 1}}
code: pkg/dlbc_resnet
dataset: digits
target: 0.2
reward: 100
deadline: 600
max_epochs: 1
"""


def _shipped(tmp_path: Path, text: str = SHIPPED) -> Path:
    shutil.copytree(CUSTOM / "dlbc_resnet", tmp_path / "pkg" / "dlbc_resnet",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "bare" / "dlbc_resnet").mkdir(parents=True)  # a folder that is no package
    (tmp_path / "task.yaml").write_text(text)
    return tmp_path / "task.yaml"


def test_a_task_with_code_signs_its_hash_and_keeps_the_path_off_chain(tmp_path: Path) -> None:
    from dlbc_ray.actors.task_code import _unload
    from dlbc_ray.models.taskcode import code_hash

    path = _shipped(tmp_path)
    try:
        taskfile, bundle = load_task_with_data(path)
        task = to_task(taskfile, REQUESTER.public_key, nonce=1, now_ms=NOW_MS, bundle=bundle)
    finally:
        _unload("dlbc_resnet")
    assert task.code is not None and task.code.package == "dlbc_resnet"
    assert task.code.hash == code_hash(CUSTOM / "dlbc_resnet")
    assert str(tmp_path) not in task.model_dump_json() and "pkg" not in task.model_dump_json()
    plain = to_task(load_task_file(EXAMPLES / "digits-mlp.yaml"), REQUESTER.public_key, nonce=1, now_ms=NOW_MS,
                    bundle=load_builtin("digits"))
    assert plain.code is None


@pytest.mark.parametrize(("change", "expected"), [
    (("code: pkg/dlbc_resnet", "code: gone/dlbc_resnet"),
     "task.yaml: code: no such package folder or wheel 'gone/dlbc_resnet'"),
    (("code: pkg/dlbc_resnet", "code: bare/dlbc_resnet"),
     "task.yaml: code: task code must be a package folder (with __init__.py)"),
    (("dlbc_resnet.nets:resnet_small", "mlp"), "task.yaml: model.name: with code 'dlbc_resnet' the net is named "
                                               "dlbc_resnet.module:factory, got 'mlp'"),
    (("dlbc_resnet.nets:resnet_small", "other.nets:f"), "task.yaml: model.name: with code 'dlbc_resnet'"),
    (("code: pkg/dlbc_resnet", "code: ''"), "task.yaml: code: String should have at least 1 character"),
])
def test_bad_code_fails_in_one_line_naming_the_field(tmp_path: Path, change: tuple[str, str], expected: str) -> None:
    path = _shipped(tmp_path, SHIPPED.replace(*change))
    with pytest.raises(InvalidTask) as info:
        read_task_file(path)
    assert str(info.value).split(str(tmp_path) + "/")[-1].startswith(expected), str(info.value)
    assert "\n" not in str(info.value)


def test_a_link_inside_the_code_is_refused(tmp_path: Path) -> None:
    path = _shipped(tmp_path)
    (tmp_path / "pkg" / "dlbc_resnet" / "evil.py").symlink_to("/etc/hostname")
    with pytest.raises(InvalidTask, match="code: .*may not hold symbolic links") as info:
        read_task_file(path)
    assert info.value.reason == "bad_code"
