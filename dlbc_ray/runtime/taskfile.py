"""Task files: a requester's training task written as YAML or JSON.

One schema (``version: 1``), the same in both syntaxes::

    version: 1                  # optional; the schema this file is written for
    model:
      name: mlp                 # a net from the registry (dlbc_ray.models.nets.NETS)
      params: {hidden: [128, 64]}
    dataset: digits             # a built-in name, or a .npz/.csv/.parquet file or image folder, relative to this file
    metric: accuracy            # optional: an objective from dlbc_ray.models.objectives (accuracy, macro_f1, mse, mae)
    target: 0.85                # score a winning model must reach, in [0, 1]; for mse/mae the error to reach
                                # (a file dataset with float targets; on chain as the score 1 / (1 + error))
    reward: 1000                # paid to the winner, > 0
    deadline: 900               # seconds after submission, or an ISO 8601 time with a zone
    max_epochs: 5
    fusion: winner              # optional: winner | fedavg | trimmed-mean | median | ensemble
    partition: none             # optional: none | iid | non-iid (BaaS: private miner shards)
    dirichlet_alpha: 0.5        # optional, only with partition: non-iid
    code: ./mypkg               # optional: the task's own code, a package folder or .whl relative to this file;
                                # model.name is then mypkg.module:factory (the network needs --allow-task-code)

Every problem is one line (at most 300 characters) naming the file and the field, e.g.
``tasks/bad.yaml: reward: must be greater than 0``. Files are read within
``config.Limits`` (size, nesting, aliases; see ``dlbc_ray.runtime.untrusted``). ``to_task`` turns
a checked file into an unsigned ``Task``; the requester signs it. Only the dataset's
file name goes into the task: where it lives on this machine stays off chain.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from dlbc_ray.config import LIMITS, Limits
from dlbc_ray.constants import SCORE_SCALE
from dlbc_ray.errors import InvalidTask
from dlbc_ray.models.data import BUILTIN_DATASETS, DatasetBundle, load_builtin, load_file, split_hash
from dlbc_ray.schema import DatasetSpec, ModelSpec, Task
from dlbc_ray.models.objectives import get_objective, target_score
from dlbc_ray.models.taskcode import code_hash, code_spec
from dlbc_ray.schema.task import MAX_NAME_CHARS, CodeSpec, MAX_PARAMS, FusionMode, ParamValue, Partition
from dlbc_ray.runtime.untrusted import UntrustedInput, read_document

TASK_FILE_SUFFIXES = (".yaml", ".yml", ".json")
DATASET_FILE_SUFFIXES = (".npz", ".csv", ".parquet")  # or an image folder (a path to a directory)
MAX_DEADLINE_S = 3650 * 86_400  # ten years: every deadline stays a valid Millis
MAX_REWARD = 2**53 - 1  # exact in JSON
MAX_DATASET_CHARS = 512
MAX_MESSAGE_CHARS = 300


def _parse_deadline(value: Any) -> float | dt.datetime:
    """Seconds after submission (> 0), or an aware ISO 8601 time (YAML may hand us a datetime)."""
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"must be seconds after submission or an ISO 8601 time, got {_short(value)}") from None
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise ValueError(f"ISO time {value.isoformat()} needs a zone, e.g. 'Z' or '+02:00'")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"must be seconds after submission (> 0) or an ISO 8601 time, got {_short(value)}")
    if value > MAX_DEADLINE_S:
        raise ValueError(f"{_short(value)} seconds is more than {MAX_DEADLINE_S // 86_400} days away")
    return float(value)


Deadline = Annotated[float | dt.datetime, BeforeValidator(_parse_deadline)]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class ModelEntry(_Strict):
    name: str = Field(max_length=MAX_NAME_CHARS, description="registry name, e.g. 'mlp', 'cnn', 'cnn1d'")
    params: dict[Annotated[str, Field(max_length=MAX_NAME_CHARS)], ParamValue] = Field(
        default_factory=dict, max_length=MAX_PARAMS)


class TaskFile(_Strict):
    """The file's content, checked; ``dataset`` is absolute after ``load_task_file``."""

    version: Literal[1] = 1
    model: ModelEntry
    dataset: str = Field(min_length=1, max_length=MAX_DATASET_CHARS,
                         description="built-in name, or a .npz/.csv/.parquet file or image folder relative to the file")
    metric: str = Field(default="accuracy", max_length=MAX_NAME_CHARS,
                        description="accuracy, macro_f1, ... (dlbc_ray.models.objectives)")
    target: float = Field(ge=0, allow_inf_nan=False, description="a score in [0, 1]; for mse/mae the error to reach")
    reward: int = Field(gt=0, le=MAX_REWARD)
    deadline: Deadline
    max_epochs: int = Field(ge=1, le=10_000)
    fusion: FusionMode = "winner"
    partition: Partition = "none"
    dirichlet_alpha: float = Field(default=0.5, gt=0, le=1e6, allow_inf_nan=False)
    code: str | None = Field(default=None, min_length=1, max_length=MAX_DATASET_CHARS,
                             description="a package folder or .whl relative to the file, shipped to every node")

    @model_validator(mode="after")
    def _net_in_code(self) -> TaskFile:
        if self.code is None:
            return self
        from dlbc_ray.actors.task_code import import_name

        package = import_name(Path(self.code).name)
        if not self.model.name.startswith((package + ".", package + ":")):
            raise ValueError(f"model.name: with code {Path(self.code).name!r} the net is named "
                             f"{package}.module:factory, got {_short(self.model.name)}")
        return self

    @model_validator(mode="after")
    def _known_metric(self) -> TaskFile:
        try:
            objective = get_objective(self.metric)
            target_score(self.metric, self.target)
        except InvalidTask as e:
            raise ValueError(f"{'target' if e.reason == 'bad_target' else 'metric'}: {e}") from None
        if objective.kind == "regression" and not self.is_file_dataset:
            raise ValueError(f"dataset: the built-in datasets hold classes; metric {self.metric!r} needs a file "
                             "with float targets")
        if objective.kind == "regression" and self.partition == "non-iid":
            raise ValueError(f"partition: non-iid shards skew labels by class; metric {self.metric!r} needs iid "
                             "or none")
        return self

    @property
    def is_regression(self) -> bool:
        return get_objective(self.metric).kind == "regression"

    @model_validator(mode="after")
    def _alpha_needs_non_iid(self) -> TaskFile:
        if "dirichlet_alpha" in self.model_fields_set and self.partition != "non-iid":
            raise ValueError(f"dirichlet_alpha: only used with partition: non-iid (partition is {self.partition})")
        return self

    @property
    def is_file_dataset(self) -> bool:
        return is_dataset_path(self.dataset)


def is_dataset_path(dataset: str) -> bool:
    """A path (has a folder or a suffix) rather than a built-in name."""
    return "/" in dataset or "\\" in dataset or Path(dataset).suffix != ""


# ----------------------------------------------------------------------- loading


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
    taskfile = _validate(path, _read_mapping(path, limits))
    if taskfile.dataset not in BUILTIN_DATASETS and not taskfile.is_file_dataset:
        raise _fail(path, "dataset", f"unknown built-in dataset {_short(taskfile.dataset)}; built-ins are "
                    f"{', '.join(BUILTIN_DATASETS)} (or give a .npz/.csv/.parquet file or an image folder)", reason="unknown_dataset")
    if taskfile.is_file_dataset:
        taskfile = taskfile.model_copy(update={"dataset": str(_resolve_dataset(path, taskfile.dataset))})
    if taskfile.code is not None:
        taskfile = taskfile.model_copy(update={"code": str(_resolve_code(path, taskfile.code))})
    return taskfile


def _resolve_code(path: Path, code: str) -> Path:
    """The task's code against the file's folder: a package folder (with ``__init__.py``) or a ``.whl``."""
    resolved = _resolve_dataset(path, code)
    if not resolved.exists():
        raise _fail(path, "code", f"no such package folder or wheel {_short(code)}", reason="bad_code")
    try:
        code_hash(resolved)
    except InvalidTask as e:
        raise _fail(path, "code", str(e).split(": ", 1)[-1], reason=e.reason) from None
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
        raise _fail(path, "dataset", "'~user' paths are not supported; give a path relative to the task file",
                    reason="bad_path")
    try:
        return (path.parent / Path(dataset).expanduser()).resolve()
    except (OSError, RuntimeError, ValueError) as e:
        raise _fail(path, "dataset", f"cannot resolve the path ({type(e).__name__})", reason="bad_path") from None


def load_dataset(taskfile: TaskFile, *, cache_dir: Path | None = None, origin: Path | str = "task",
                 limits: Limits = LIMITS) -> DatasetBundle:
    """The task's data: a built-in, or the user's file (its errors keep their own file name)."""
    try:
        if taskfile.is_file_dataset:
            return load_file(Path(taskfile.dataset), limits=limits, regression=taskfile.is_regression)
        return load_builtin(taskfile.dataset, cache_dir=cache_dir)
    except InvalidTask as e:
        raise _fail(origin, "dataset", str(e), reason=e.reason) from None


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
        raise _fail(origin, "model.name", str(e), reason=e.reason) from None
    try:
        build_net(taskfile.model.name, taskfile.model.params, bundle.input_shape, bundle.n_classes, limits=limits)
    except InvalidTask as e:
        field = "model" if e.reason == "bad_input_shape" else "model.params"
        detail = f"{e} (dataset '{bundle.name}')" if e.reason == "bad_input_shape" else str(e)
        raise _fail(origin, field, detail, reason=e.reason) from None


def _read_mapping(path: Path, limits: Limits) -> dict[str, Any]:
    try:
        is_file = path.is_file()
    except (OSError, ValueError) as e:
        raise _fail(path, None, f"cannot read ({type(e).__name__})", reason="unreadable") from None
    if not is_file:
        what = "no such task file" if not path.exists() else "not a regular file (a task file is .yaml, .yml or .json)"
        raise _fail(path, None, what, reason="missing_file")
    if path.suffix.lower() not in TASK_FILE_SUFFIXES:
        raise _fail(path, None, f"unknown task file extension {_short(path.suffix, 20)}; use .yaml, .yml or .json",
                    reason="bad_extension")
    try:
        data = read_document(path, limits=limits)
    except OSError as e:
        raise _fail(path, None, f"cannot read ({e.strerror or type(e).__name__})", reason="unreadable") from None
    except UntrustedInput as e:
        raise _fail(path, e.where or None, e.message, reason=e.reason) from None
    if not isinstance(data, dict):
        raise _fail(path, None, f"must hold a mapping of fields, found {type(data).__name__}", reason="syntax")
    return data


def _validate(path: Path, data: dict[str, Any]) -> TaskFile:
    try:
        return TaskFile.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        loc = first["loc"] if first["type"] == "missing" else _present(data, first["loc"])
        field = ".".join(str(p) for p in loc)
        message = first["msg"].removeprefix("Value error, ").replace("Input should be", "must be")
        if first["type"] == "extra_forbidden":
            message = "unknown field"
        elif first["type"] == "missing":
            message = "missing (required)"
        elif len(loc) < len(first["loc"]):  # pydantic named a union member, not a field
            message = f"unsupported value {_short(first['input'])}"
        if not field and ": " in message:  # model-level checks name their own field
            field, message = message.split(": ", 1)
        raise _fail(path, field or "task", message, reason=first["type"]) from None


def _present(data: Any, loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    """The longest prefix of ``loc`` that exists in the input (drops pydantic's union tags)."""
    kept: list[int | str] = []
    for part in loc:
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data):
            data = data[part]
        else:
            break
        kept.append(part)
    return tuple(kept)


def _fail(origin: Path | str, field: str | None, message: str, *, reason: str = "task_file") -> InvalidTask:
    """One line: file, field, problem, each clipped so the whole stays under MAX_MESSAGE_CHARS."""
    where = f"{_clip(str(origin), 100)}: " + (f"{_clip(field, 40)}: " if field else "")
    return InvalidTask(where + _clip(" ".join(message.split()), MAX_MESSAGE_CHARS - len(where)), reason=reason)


def _clip(text: str, n: int) -> str:
    """``text`` cut in the middle to at most ``n`` characters (both ends of a path say the most)."""
    if len(text) <= n:
        return text
    head = (n - 3) // 2
    return text[:head] + "..." + text[len(text) - (n - 3 - head):]


def _short(value: Any, n: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= n else text[: n - 3] + "..."


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
        raise InvalidTask(f"dataset: the task names {_short(expected)} but the data given is {_short(bundle.name)}",
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
        raise _fail("task", field, first["msg"].removeprefix("Value error, "), reason="invalid_task") from None
