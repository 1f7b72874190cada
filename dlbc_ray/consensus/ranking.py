"""Which pending task to mine next: DLBC's four factors as one documented score.

DLBC ranks pending tasks by model complexity, network burden, data size and queue
length. We combine them as reward per unit of estimated cost, raised by time waited::

    compute  = 3 x flops_per_sample x train_examples x epochs     (forward + backward FLOPs)
    network  = data_bytes + 2 x 4 x parameters                    (download data and the fp32 model, upload it)
    data     = train_examples + test_examples                     (what miners train on and validators score)

    cost  = (1 + compute / flop_unit) ** w_complexity
          x (1 + network / byte_unit) ** w_network
          x (1 + data / example_unit) ** w_data
    aging = (1 + aging_rate x waited_s) ** w_queue
    score = reward x aging / cost

Higher scores are mined first (compared as logarithms, so large weights or waits never
overflow); equal scores go to the smaller task id, so every node
ranks the same pool the same way. The ``1 +`` keeps tiny tasks from dividing by
zero and makes each unit the size at which a factor starts to matter. ``w_queue`` and
``aging_rate`` are positive, so ``aging`` grows without bound while a task waits, while
a rival that has waited at most some fixed time (a stream of newer arrivals) has a
bounded score: a task that waits long enough outranks them all, so nothing starves.

Pure: no torch, no Ray, no I/O. Callers pass numbers (``count_parameters``,
``estimate_flops``), never nets.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from pydantic import BaseModel, ConfigDict, Field

# Backward is about twice the forward pass, so training costs ~3 forward passes.
TRAIN_PASSES = 3
# A miner downloads the initial model and uploads the trained one, both float32.
MODEL_TRANSFERS = 2
BYTES_PER_PARAMETER = 4
# Each example travels as float32 features plus one int64 label (models.data.Split).
BYTES_PER_FEATURE = 4
BYTES_PER_LABEL = 8


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RankingWeights(_Frozen):
    """Exponents of the four factors, their units, and the aging rate (all nonnegative; aging positive)."""

    complexity: float = Field(default=1.0, ge=0, description="exponent of training FLOPs")
    network: float = Field(default=1.0, ge=0, description="exponent of bytes a miner transfers")
    data: float = Field(default=0.5, ge=0, description="exponent of examples to train on and score")
    queue: float = Field(default=1.0, gt=0, description="exponent of the aging factor; > 0 so nothing starves")
    aging_rate: float = Field(default=1 / 600, gt=0, description="per second waited: 1/600 doubles a task's "
                              "score after 10 minutes (with queue = 1)")
    flop_unit: float = Field(default=1e12, gt=0, description="FLOPs at which compute starts to count (1 TFLOP)")
    byte_unit: float = Field(default=1e8, gt=0, description="bytes at which network starts to count (100 MB)")
    example_unit: float = Field(default=1e4, gt=0, description="examples at which data size starts to count")


class TaskCost(_Frozen):
    """What one pending task will cost the network, from the numbers a task spec implies."""

    parameters: int = Field(ge=0, description="scalar parameters of the model")
    flops_per_sample: int = Field(ge=0, description="forward FLOPs of one example")
    train_examples: int = Field(ge=0)
    test_examples: int = Field(ge=0)
    epochs: int = Field(ge=1)
    data_bytes: int = Field(ge=0, description="bytes of the training split a miner downloads")

    @property
    def compute_flops(self) -> int:
        return TRAIN_PASSES * self.flops_per_sample * self.train_examples * self.epochs

    @property
    def network_bytes(self) -> int:
        return self.data_bytes + MODEL_TRANSFERS * BYTES_PER_PARAMETER * self.parameters

    @property
    def data_examples(self) -> int:
        return self.train_examples + self.test_examples


class PendingTask(_Frozen):
    """A task in the pool: its id, reward, when it arrived, and its cost."""

    task_id: str
    reward: int = Field(gt=0)
    submitted_ms: int = Field(ge=0)
    cost: TaskCost


def estimate_cost(*, parameters: int, flops_per_sample: int, input_shape: Sequence[int], train_examples: int,
                  test_examples: int, epochs: int) -> TaskCost:
    """A TaskCost from ``count_parameters``, ``estimate_flops`` and the task's dataset spec."""
    bytes_per_example = BYTES_PER_FEATURE * math.prod(input_shape) + BYTES_PER_LABEL
    return TaskCost(parameters=parameters, flops_per_sample=flops_per_sample, train_examples=train_examples,
                    test_examples=test_examples, epochs=epochs, data_bytes=bytes_per_example * train_examples)


def compute_log_factors(cost: TaskCost, waited_s: float, weights: RankingWeights) -> dict[str, float]:
    """The natural log of each factor: ranking compares logs, so no weight or wait overflows."""
    return {
        "complexity": weights.complexity * math.log1p(cost.compute_flops / weights.flop_unit),
        "network": weights.network * math.log1p(cost.network_bytes / weights.byte_unit),
        "data": weights.data * math.log1p(cost.data_examples / weights.example_unit),
        "aging": weights.queue * math.log1p(weights.aging_rate * max(0.0, waited_s)),
    }


def compute_log_score(cost: TaskCost, reward: int, waited_s: float, weights: RankingWeights) -> float:
    """``log(score)``: what ``rank_tasks`` sorts by."""
    f = compute_log_factors(cost, waited_s, weights)
    return math.log(reward) + f["aging"] - f["complexity"] - f["network"] - f["data"]


def compute_task_score(cost: TaskCost, reward: int, waited_s: float, weights: RankingWeights) -> float:
    """Reward per unit of estimated cost, raised by time waited (the module docstring's formula)."""
    return _exp(compute_log_score(cost, reward, waited_s, weights))


def _exp(x: float) -> float:
    return math.exp(x) if x < 709.0 else math.inf


def compute_waited_s(task: PendingTask, now_ms: int) -> float:
    """Seconds in the pool; a clock behind the arrival counts as zero."""
    return max(0, now_ms - task.submitted_ms) / 1000


def rank_tasks(pending: Iterable[PendingTask], now_ms: int, weights: RankingWeights) -> list[PendingTask]:
    """Highest score first; equal scores by ascending task id (deterministic for any input order)."""
    def key(t: PendingTask) -> tuple[float, str]:
        return (-compute_log_score(t.cost, t.reward, compute_waited_s(t, now_ms), weights), t.task_id)

    return sorted(pending, key=key)


def explain(task: PendingTask, now_ms: int, weights: RankingWeights) -> dict[str, float | int | str]:
    """Everything behind one task's score, for `dlbc-ray status` and logs."""
    waited = compute_waited_s(task, now_ms)
    logs = compute_log_factors(task.cost, waited, weights)
    return {
        "task_id": task.task_id,
        "reward": task.reward,
        "parameters": task.cost.parameters,
        "compute_flops": task.cost.compute_flops,
        "network_bytes": task.cost.network_bytes,
        "data_examples": task.cost.data_examples,
        "waited_s": waited,
        **{f"{name}_factor": _exp(value) for name, value in logs.items()},
        "cost": _exp(logs["complexity"] + logs["network"] + logs["data"]),
        "score": compute_task_score(task.cost, task.reward, waited, weights),
    }
