"""A task file's fields, checked, and each problem as one line naming the file and the field.

The schema ``runtime.taskfile`` reads files into; see its docstring for the format.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from dlbc_ray.errors import InvalidTask
from dlbc_ray.models.fusion import check_fusion_mode
from dlbc_ray.models.objectives import get_objective, target_score
from dlbc_ray.schema.task import MAX_NAME_CHARS, MAX_PARAMS, ParamValue, Partition

TASK_FILE_SUFFIXES = (".yaml", ".yml", ".json")
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
            raise ValueError(f"must be seconds after submission or an ISO 8601 time, got {short(value)}") from None
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise ValueError(f"ISO time {value.isoformat()} needs a zone, e.g. 'Z' or '+02:00'")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"must be seconds after submission (> 0) or an ISO 8601 time, got {short(value)}")
    if value > MAX_DEADLINE_S:
        raise ValueError(f"{short(value)} seconds is more than {MAX_DEADLINE_S // 86_400} days away")
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
                         description="built-in name, or a file or folder in a registered format (models.formats) "
                         "relative to the file")
    metric: str = Field(default="accuracy", max_length=MAX_NAME_CHARS,
                        description="accuracy, macro_f1, ... (dlbc_ray.models.objectives)")
    target: float = Field(ge=0, allow_inf_nan=False, description="a score in [0, 1]; for mse/mae the error to reach")
    reward: int = Field(gt=0, le=MAX_REWARD)
    deadline: Deadline
    max_epochs: int = Field(ge=1, le=10_000)
    fusion: str = Field(default="winner", max_length=MAX_NAME_CHARS,
                        description="winner, or a fusion rule from dlbc_ray.models.fusion.FUSION_RULES")
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
                             f"{package}.module:factory, got {short(self.model.name)}")
        return self

    @model_validator(mode="after")
    def _known_fusion(self) -> TaskFile:
        try:
            check_fusion_mode(self.fusion)
        except InvalidTask as e:
            raise ValueError(f"fusion: {e}") from None
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


def check_fields(path: Path, data: dict[str, Any]) -> TaskFile:
    try:
        return TaskFile.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        loc = first["loc"] if first["type"] == "missing" else present(data, first["loc"])
        field = ".".join(str(p) for p in loc)
        message = first["msg"].removeprefix("Value error, ").replace("Input should be", "must be")
        if first["type"] == "extra_forbidden":
            message = "unknown field"
        elif first["type"] == "missing":
            message = "missing (required)"
        elif len(loc) < len(first["loc"]):  # pydantic named a union member, not a field
            message = f"unsupported value {short(first['input'])}"
        if not field and ": " in message:  # model-level checks name their own field
            field, message = message.split(": ", 1)
        raise one_line(path, field or "task", message, reason=first["type"]) from None


def present(data: Any, loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
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


def one_line(origin: Path | str, field: str | None, message: str, *, reason: str = "task_file") -> InvalidTask:
    """One line: file, field, problem, each clipped so the whole stays under MAX_MESSAGE_CHARS."""
    where = f"{clip(str(origin), 100)}: " + (f"{clip(field, 40)}: " if field else "")
    return InvalidTask(where + clip(" ".join(message.split()), MAX_MESSAGE_CHARS - len(where)), reason=reason)


def clip(text: str, n: int) -> str:
    """``text`` cut in the middle to at most ``n`` characters (both ends of a path say the most)."""
    if len(text) <= n:
        return text
    head = (n - 3) // 2
    return text[:head] + "..." + text[len(text) - (n - 3 - head):]


def short(value: Any, n: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= n else text[: n - 3] + "..."
