"""A requester's training task: what to train, on what, to which target, for what reward."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, StringConstraints

from dlbc_ray.constants import TASK_DOMAIN
from dlbc_ray.schema.base import Amount, FrozenModel, Hash, Millis, PublicKey, Score

# Wire bounds: fixed, so every node refuses the same tasks; policy caps below these live in config.Limits.
MAX_NAME_CHARS = 64
MAX_PARAMS = 32
MAX_LIST_ITEMS = 64
MAX_WIDTH = 2**31 - 1
MAX_CLASSES = 100_000
MAX_EXAMPLES = 2**40
MAX_INPUT_RANK = 4
PACKAGE = r"^([A-Za-z_][A-Za-z0-9_]*|[A-Za-z_][A-Za-z0-9_.+-]*\.whl)$"  # an import name, or a wheel's file name

Name = Annotated[str, StringConstraints(min_length=1, max_length=MAX_NAME_CHARS, pattern=r"^[^\x00-\x1f\x7f]+$")]
ParamInt = Annotated[int, Field(ge=-MAX_WIDTH, le=MAX_WIDTH)]
ParamValue = (ParamInt | Annotated[float, Field(allow_inf_nan=False)] | Name | bool
              | Annotated[list[ParamInt], Field(max_length=MAX_LIST_ITEMS)])
FUSION_NAME = r"^[a-z][a-z0-9-]{0,31}$"
# "winner", or a rule of the fusion registry (dlbc_ray.models.fusion), which admission checks: the
# wire names no rule, so a rule registered in one place is usable everywhere.
FusionMode = Annotated[str, StringConstraints(pattern=FUSION_NAME)]
Partition = Literal["none", "iid", "non-iid"]


class ModelSpec(FrozenModel):
    """A net from the registry and its hyperparameters."""

    name: Name = Field(description="registry name, e.g. 'mlp', 'cnn'")
    params: dict[Name, ParamValue] = Field(default_factory=dict, max_length=MAX_PARAMS)


class DatasetSpec(FrozenModel):
    """Which data, and the hashes that let anyone audit the splits later."""

    name: Name = Field(description="built-in name ('digits', 'mnist1d', ...) or a file's stem")
    uri: str | None = Field(default=None, max_length=255, pattern=r"^[^/\\\x00-\x1f\x7f]+$",
                            description="a file dataset's file name only; where it lives stays off chain")
    train_hash: Hash
    test_hash: Hash = Field(description="hash of the held-out split; the split itself reaches validators only")
    n_train: int = Field(ge=1, le=MAX_EXAMPLES)
    n_test: int = Field(ge=1, le=MAX_EXAMPLES)
    input_shape: tuple[Annotated[int, Field(ge=1, le=MAX_WIDTH)], ...] = Field(min_length=1, max_length=MAX_INPUT_RANK)
    n_classes: int = Field(ge=1, le=MAX_CLASSES, description="classes, or 1: a regression net's one output "
                           "(float targets); which one the task's metric needs is checked at admission")
    partition: Partition = Field(default="none", description="BaaS: give each miner its own private shard")
    dirichlet_alpha: float = Field(default=0.5, gt=0, le=1e6, allow_inf_nan=False)


class CodeSpec(FrozenModel):
    """The requester's own code: one package folder or wheel, shipped to every node through Ray
    (``runtime_env`` py_modules URI ``models.taskcode.code_uri(hash, package)``)."""

    package: Annotated[str, StringConstraints(max_length=MAX_NAME_CHARS, pattern=PACKAGE)] = Field(
        description="the folder's import name or the wheel's file name; where it lives stays off chain")
    hash: Hash = Field(description="dlbc_ray.models.taskcode.code_hash of what is shipped; nodes refuse anything else")


class Task(FrozenModel):
    """Signed by the requester; its id is the hash of its canonical bytes."""

    DOMAIN: ClassVar[bytes] = TASK_DOMAIN

    requester: PublicKey
    nonce: int = Field(ge=0, le=2**63 - 1, description="unique per requester")
    model: ModelSpec
    dataset: DatasetSpec
    metric: Name = Field(default="accuracy", description="an objective from the registry "
                         "(dlbc_ray.models.objectives): every score is in [0, 1], higher is better")
    target: Score = Field(description="minimum score a winning model must reach")
    reward: Amount = Field(gt=0)
    deadline_ms: Millis
    max_epochs: int = Field(ge=1, le=10_000)
    fusion: FusionMode = Field(default="winner", description="'winner', or a registered fusion rule "
                               "(dlbc_ray.models.fusion.FUSION_RULES): on the wire any such name, checked at admission")
    kind: Literal["request", "standing"] = Field(
        default="request", description="standing: PoLe's open-ended task, target = the chain's difficulty")
    created_ms: Millis
    code: CodeSpec | None = Field(default=None, description="the task's own code (runtime_env py_modules); "
                                  "a network runs it only when started with --allow-task-code")
