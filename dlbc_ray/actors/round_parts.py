"""What a round is made of, apart from running it: its data, live state and result, and the small parts
``round_runner.RoundRunner`` is built from (shards, the miners' policy, PoLe's first-to-target wait).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from dlbc_ray.actors._ray import Member, get, wait_one
from dlbc_ray.config import ConsensusConfig, MinerConfig
from dlbc_ray.consensus import Event, Phase, next_phase
from dlbc_ray.consensus.transcript import compute_hyperparameters
from dlbc_ray.errors import DLBCError
from dlbc_ray.schema import Ballot, FusionVote, Signed, Task
from dlbc_ray.schema.round_messages import (
    ActorProgress,
    MinedSubmission,
    ProgressEvent,
    RoundContext,
    RoundStatus,
    SubmissionArrival,
    SubmissionOutcome,
)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class TaskData:
    """Object refs of a task's splits; wrapped so Ray passes the refs, not the arrays."""

    train: Any
    test: Any


@dataclass
class RoundState:
    """What the live display shows of one round; guarded by the coordinator's lock."""

    task_id: str
    round_id: str
    phase: Phase = Phase.OPEN
    actors: dict[str, ActorProgress] = field(default_factory=dict)

    def advance(self, event: Event) -> None:
        self.phase = next_phase(self.phase, event)

    def set(self, name: str, **changes: Any) -> None:
        self.actors[name] = self.actors.get(name, ActorProgress(name=name)).model_copy(update=changes)

    def status(self) -> RoundStatus:
        return RoundStatus(phase=self.phase.value, task_id=self.task_id, actors=dict(self.actors))


@dataclass
class RoundResult:
    """Everything a block needs from the round, plus what the user and benchmarks see."""

    ctx: RoundContext
    arrivals: list[SubmissionArrival]
    ballots: list[Signed[Ballot]]
    weight_refs: dict[str, Any]
    outcomes: list[SubmissionOutcome]
    timings: dict[str, float]
    fusion_votes: list[Signed[FusionVote]] = field(default_factory=list)
    fused_refs: dict[str, Any] = field(default_factory=dict)  # validator key -> its fused weights (a ref)


def round_budget_s(cfg: ConsensusConfig, margin_s: float = 120.0) -> float:
    """The longest a round can take on its own timeouts: the window, reveals, ballots, a dispute's trip (its
    deadline and one reply's time more), fusion; plus ``margin_s``. A caller that waits less abandons rounds that
    would still decide (a referee that hangs costs the dispute its whole deadline)."""
    return cfg.collect_timeout_s + cfg.reveal_timeout_s + 3 * cfg.validate_timeout_s + cfg.commit_timeout_s + margin_s


def miner_policy(miner: MinerConfig) -> dict[str, object]:
    """The hyperparameters every miner of the network trains with, as transcript headers carry them."""
    return compute_hyperparameters(miner.batch_size, miner.lr, miner.optimizer, miner.val_fraction)


def assign_shards(task: Task, task_id: str, data: TaskData, miners: Sequence[Member],
                  timeout_s: float) -> dict[str, tuple[int, int]]:
    """BaaS: miner (by public key order) -> (its shard index, the examples in it); {} unless partitioned."""
    if task.dataset.partition == "none":
        return {}
    from dlbc_ray.models.baas_fusion import common_seed
    from dlbc_ray.models.data import shard_indices

    labels = get(data.train, timeout=timeout_s, what="training labels").y
    parts = shard_indices(labels, len(miners), iid=task.dataset.partition == "iid", seed=common_seed(task_id),
                          alpha=task.dataset.dirichlet_alpha)
    keys = sorted(m.public_key for m in miners)
    return {key: (i, int(len(part))) for i, (key, part) in enumerate(zip(keys, parts))}


def outcome(name: str, miner: str | None, verdict: str, detail: str) -> SubmissionOutcome:
    return SubmissionOutcome(miner=miner or "0" * 64, commit=None, verdict=verdict, score=None,
                             detail=f"{name}: {detail}")


def try_get(ref: Any, timeout: float) -> Any:
    try:
        return get(ref, timeout=timeout, what="call")
    except DLBCError:
        return None


def progress_update(state: RoundState, event: ProgressEvent) -> None:
    state.set(event.actor, stage=event.stage, epoch=event.epoch, epochs=event.epochs,
              val_accuracy=event.val_accuracy)


def first_to_target(refs: list[Any], timeout_s: float, *, target: int, grace_s: float,
                    commit_timeout_s: float) -> tuple[list[tuple[Any, int]], list[Any]]:
    """PoLe: the window closes a short grace after the first submission claiming the target."""
    deadline = time.monotonic() + timeout_s
    close_at: float | None = None
    done: list[tuple[Any, int]] = []
    pending, lost = list(refs), []
    while pending:
        left = (close_at or deadline) - time.monotonic()
        if left <= 0:
            break
        ready, pending, dropped = wait_one(pending, timeout=left)
        lost += dropped
        for ref, seen in ready:
            done.append((ref, seen))
            mined = try_get(ref, commit_timeout_s)
            if close_at is None and isinstance(mined, MinedSubmission) and mined.signed.message.claimed_score >= target:
                close_at = min(deadline, time.monotonic() + grace_s)
    return done, pending + lost
