"""Task files: a requester's training task written as YAML or JSON.

One schema (``version: 1``), the same in both syntaxes::

    version: 1                  # optional; the schema this file is written for
    model:
      name: mlp                 # a net from the registry (dlbc_ray.models.nets.NETS)
      params: {hidden: [128, 64]}
    dataset: digits             # a built-in name, or a .npz/.csv/.parquet file or image folder, relative to this file
                                # (any format registered in dlbc_ray.models.formats)
    metric: accuracy            # optional: an objective from dlbc_ray.models.objectives (accuracy, macro_f1, mse, mae)
    target: 0.85                # score a winning model must reach, in [0, 1]; for mse/mae the error to reach
                                # (a file dataset with float targets; on chain as the score 1 / (1 + error))
    reward: 1000                # paid to the winner, > 0
    deadline: 900               # seconds after submission, or an ISO 8601 time with a zone
    max_epochs: 5
    fusion: winner              # optional: winner, or a fusion rule (dlbc_ray.models.fusion: fedavg,
                                # trimmed-mean, median, ensemble, or one registered there)
    partition: none             # optional: none | iid | non-iid (BaaS: private miner shards)
    dirichlet_alpha: 0.5        # optional, only with partition: non-iid
    code: ./mypkg               # optional: the task's own code, a package folder or .whl relative to this file;
                                # model.name is then mypkg.module:factory (the network needs --allow-task-code)

Every problem is one line (at most 300 characters) naming the file and the field, e.g.
``tasks/bad.yaml: reward: must be greater than 0`` (``taskfile_schema``). Files are read within
``config.Limits`` (size, nesting, aliases; see ``dlbc_ray.runtime.untrusted``). ``to_task`` turns
a checked file into an unsigned ``Task``; the requester signs it. Only the dataset's
file name goes into the task: where it lives on this machine stays off chain.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from dlbc_ray.config import LIMITS, Limits
from dlbc_ray.constants import SCORE_SCALE
from dlbc_ray.errors import InvalidTask
from dlbc_ray.models.data import BUILTIN_DATASETS, DatasetBundle, load_builtin, load_file, split_hash
from dlbc_ray.models.formats import known_formats
from dlbc_ray.models.objectives import target_score
from dlbc_ray.models.taskcode import code_hash, code_spec
from dlbc_ray.runtime.taskfile_schema import (  # noqa: F401 - TaskFile, is_dataset_path: re-exported
    MAX_DEADLINE_S,
    TASK_FILE_SUFFIXES,
    TaskFile,
    check_fields,
    is_dataset_path,
    one_line,
    short,
)
from dlbc_ray.runtime.untrusted import UntrustedInput, read_document
from dlbc_ray.schema import DatasetSpec, ModelSpec, Task
from dlbc_ray.schema.task import CodeSpec


def load_task_file(path: Path | str, *, cache_dir: Path | None = None, limits: Limits = LIMITS) -> TaskFile:
    """Parse and check a task file, its dataset, and that its model can read that dataset."""
    return load_task_with_data(path, cache_dir=cache_dir, limits=limits)[0]


def load_task_with_data(path: Path | str, *, cache_dir: Path | None = None,
                        limits: Limits = LIMITS) -> tuple[TaskFile, DatasetBundle]:
    """``load_task_file`` plus the dataset it loaded on the way (for ``to_task``)."""
    path = Path(path)
    taskfile = read_task_file(path, limits=limits)
    bundle = load_dataset(taskfile, cache_dir=cache_dir, origin=path, limits=limits)
    check_model_fits(taskfile, bundle, origin=path, limits=limits)
    return taskfile, bundle


def read_task_file(path: Path | str, *, limits: Limits = LIMITS) -> TaskFile:
    """Syntax and schema only (no data, no torch); file datasets resolved against the file's folder."""
    path = Path(path)
    taskfile = check_fields(path, _read_mapping(path, limits))
    if taskfile.dataset not in BUILTIN_DATASETS and not taskfile.is_file_dataset:
        raise one_line(path, "dataset", f"unknown built-in dataset {short(taskfile.dataset)}; built-ins are "
                       f"{', '.join(BUILTIN_DATASETS)} (or give {known_formats()})", reason="unknown_dataset")
    if taskfile.is_file_dataset:
        taskfile = taskfile.model_copy(update={"dataset": str(_resolve_dataset(path, taskfile.dataset))})
    if taskfile.code is not None:
        taskfile = taskfile.model_copy(update={"code": str(_resolve_code(path, taskfile.code))})
    return taskfile


def _resolve_code(path: Path, code: str) -> Path:
    """The task's code against the file's folder: a package folder (with ``__init__.py``) or a ``.whl``."""
    resolved = _resolve_dataset(path, code)
    if not resolved.exists():
        raise one_line(path, "code", f"no such package folder or wheel {short(code)}", reason="bad_code")
    try:
        code_hash(resolved)
    except InvalidTask as e:
        raise one_line(path, "code", str(e).split(": ", 1)[-1], reason=e.reason) from None
    return resolved


def _code_spec(taskfile: TaskFile) -> CodeSpec | None:
    """The signed name and hash of the task's code (hashed again now: what is shipped is what is signed)."""
    if taskfile.code is None:
        return None
    package, digest = code_spec(Path(taskfile.code))
    return CodeSpec(package=package, hash=digest)


def _resolve_dataset(path: Path, dataset: str) -> Path:
    """``dataset`` against the task file's folder; ``~`` is the user's own home, never another user's."""
    if dataset.startswith("~") and not (dataset == "~" or dataset.startswith(("~/", "~\\"))):
        raise one_line(path, "dataset", "'~user' paths are not supported; give a path relative to the task file",
                       reason="bad_path")
    try:
        return (path.parent / Path(dataset).expanduser()).resolve()
    except (OSError, RuntimeError, ValueError) as e:
        raise one_line(path, "dataset", f"cannot resolve the path ({type(e).__name__})", reason="bad_path") from None


def load_dataset(taskfile: TaskFile, *, cache_dir: Path | None = None, origin: Path | str = "task",
                 limits: Limits = LIMITS) -> DatasetBundle:
    """The task's data: a built-in, or the user's file (its errors keep their own file name)."""
    try:
        if taskfile.is_file_dataset:
            return load_file(Path(taskfile.dataset), limits=limits, regression=taskfile.is_regression)
        return load_builtin(taskfile.dataset, cache_dir=cache_dir)
    except InvalidTask as e:
        raise one_line(origin, "dataset", str(e), reason=e.reason) from None


def check_model_fits(taskfile: TaskFile, bundle: DatasetBundle, *, origin: Path | str = "task",
                     limits: Limits = LIMITS) -> None:
    """Build the net for the data's shape once: unknown nets, bad params, shapes and sizes fail here.

    ``build_net`` checks the net's size against ``limits`` before torch allocates anything.
    """
    from dlbc_ray.models.nets import build_net, net_info

    if taskfile.code is not None:
        from dlbc_ray.actors.task_code import install_local

        install_local(Path(taskfile.code))  # the requester's own process imports the code it ships
    try:
        net_info(taskfile.model.name)
    except InvalidTask as e:
        raise one_line(origin, "model.name", str(e), reason=e.reason) from None
    try:
        build_net(taskfile.model.name, taskfile.model.params, bundle.input_shape, bundle.n_classes, limits=limits)
    except InvalidTask as e:
        field = "model" if e.reason == "bad_input_shape" else "model.params"
        detail = f"{e} (dataset '{bundle.name}')" if e.reason == "bad_input_shape" else str(e)
        raise one_line(origin, field, detail, reason=e.reason) from None


def _read_mapping(path: Path, limits: Limits) -> dict[str, Any]:
    try:
        is_file = path.is_file()
    except (OSError, ValueError) as e:
        raise one_line(path, None, f"cannot read ({type(e).__name__})", reason="unreadable") from None
    if not is_file:
        what = "no such task file" if not path.exists() else "not a regular file (a task file is .yaml, .yml or .json)"
        raise one_line(path, None, what, reason="missing_file")
    if path.suffix.lower() not in TASK_FILE_SUFFIXES:
        raise one_line(path, None, f"unknown task file extension {short(path.suffix, 20)}; use .yaml, .yml or .json",
                       reason="bad_extension")
    try:
        data = read_document(path, limits=limits)
    except OSError as e:
        raise one_line(path, None, f"cannot read ({e.strerror or type(e).__name__})", reason="unreadable") from None
    except UntrustedInput as e:
        raise one_line(path, e.where or None, e.message, reason=e.reason) from None
    if not isinstance(data, dict):
        raise one_line(path, None, f"must hold a mapping of fields, found {type(data).__name__}", reason="syntax")
    return data


# ------------------------------------------------------------------------- tasks


def deadline_ms(taskfile: TaskFile, now_ms: int) -> int:
    """The absolute deadline in Unix milliseconds."""
    if isinstance(taskfile.deadline, dt.datetime):
        return int(taskfile.deadline.timestamp() * 1000)
    return now_ms + int(taskfile.deadline * 1000)


def to_task(taskfile: TaskFile, requester_public_key: str, *, nonce: int, now_ms: int,
            bundle: DatasetBundle) -> Task:
    """The unsigned Task for this file; dataset hashes and sizes come from ``bundle``."""
    expected = Path(taskfile.dataset).stem if taskfile.is_file_dataset else taskfile.dataset
    if bundle.name != expected:
        raise InvalidTask(f"dataset: the task names {short(expected)} but the data given is {short(bundle.name)}",
                          reason="dataset_mismatch")
    deadline = deadline_ms(taskfile, now_ms)
    if deadline <= now_ms:
        raise InvalidTask(f"deadline: {taskfile.deadline} is already past", reason="deadline_past")
    if deadline - now_ms > MAX_DEADLINE_S * 1000:
        raise InvalidTask(f"deadline: {taskfile.deadline} is more than {MAX_DEADLINE_S // 86_400} days away",
                          reason="deadline_far")
    try:
        dataset = DatasetSpec(
            name=bundle.name, uri=Path(taskfile.dataset).name if taskfile.is_file_dataset else None,
            train_hash=split_hash(bundle.train), test_hash=split_hash(bundle.test),
            n_train=len(bundle.train), n_test=len(bundle.test), input_shape=bundle.input_shape,
            n_classes=bundle.n_classes, partition=taskfile.partition, dirichlet_alpha=taskfile.dirichlet_alpha)
        return Task(requester=requester_public_key, nonce=nonce,
                    model=ModelSpec(name=taskfile.model.name, params=dict(taskfile.model.params)), dataset=dataset,
                    metric=taskfile.metric, target=round(target_score(taskfile.metric, taskfile.target) * SCORE_SCALE),
                    reward=taskfile.reward,
                    deadline_ms=deadline, max_epochs=taskfile.max_epochs, fusion=taskfile.fusion, created_ms=now_ms,
                    code=_code_spec(taskfile))
    except ValidationError as e:
        first = e.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "task"
        raise one_line("task", field, first["msg"].removeprefix("Value error, "), reason="invalid_task") from None
