"""A requester's training task: what to train, on what, to which target, for what reward."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from dlbc_ray.constants import TASK_DOMAIN
from dlbc_ray.schema.base import Amount, FrozenModel, Hash, Millis, PublicKey, Score

ParamValue = int | float | str | bool | list[int]
FusionMode = Literal["winner", "fedavg", "trimmed-mean", "median", "ensemble"]
Partition = Literal["none", "iid", "non-iid"]


class ModelSpec(FrozenModel):
    """A net from the registry and its hyperparameters."""

    name: str = Field(description="registry name, e.g. 'mlp', 'cnn'")
    params: dict[str, ParamValue] = Field(default_factory=dict)


class DatasetSpec(FrozenModel):
    """Which data, and the hashes that let anyone audit the splits later."""

    name: str = Field(description="built-in name ('digits', 'mnist1d', ...) or a file's stem")
    uri: str | None = Field(default=None, description="local .npz/.csv path for file datasets")
    train_hash: Hash
    test_hash: Hash = Field(description="hash of the held-out split; the split itself reaches validators only")
    n_train: int = Field(ge=1)
    n_test: int = Field(ge=1)
    input_shape: tuple[int, ...]
    n_classes: int = Field(ge=2)
    partition: Partition = Field(default="none", description="BaaS: give each miner its own private shard")
    dirichlet_alpha: float = Field(default=0.5, gt=0)


class Task(FrozenModel):
    """Signed by the requester; its id is the hash of its canonical bytes."""

    DOMAIN: ClassVar[bytes] = TASK_DOMAIN

    requester: PublicKey
    nonce: int = Field(ge=0, description="unique per requester")
    model: ModelSpec
    dataset: DatasetSpec
    metric: Literal["accuracy"] = "accuracy"
    target: Score = Field(description="minimum score a winning model must reach")
    reward: Amount = Field(gt=0)
    deadline_ms: Millis
    max_epochs: int = Field(ge=1, le=10_000)
    fusion: FusionMode = "winner"
    kind: Literal["request", "standing"] = Field(
        default="request", description="standing: PoLe's open-ended task, target = the chain's difficulty")
    created_ms: Millis
