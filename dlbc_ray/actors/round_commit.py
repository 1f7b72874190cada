"""The consensus actor's parts that are not the actor: its shared live state, the block a finished round
proposes, the report of a round, and what one task's view shows (``coordinator.Consensus`` calls them).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dlbc_ray.actors import delivery
from dlbc_ray.actors._ray import Member
from dlbc_ray.actors.delivery import Artifact
from dlbc_ray.actors.round_parts import RoundResult, RoundState, now_ms
from dlbc_ray.consensus import ChainState, propose_task_block
from dlbc_ray.consensus.decision import Decision
from dlbc_ray.crypto import Identity
from dlbc_ray.errors import ConsensusError, NoQuorum
from dlbc_ray.ledger.chain import BlockImportResult
from dlbc_ray.schema import Block, Signed, Task
from dlbc_ray.schema.round_messages import RoundReport


@dataclass
class Group:
    members: list[Member]
    busy: bool = False


@dataclass
class Live:
    """State shared by the scheduler thread, round threads and status calls (under ``lock``)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    rounds: dict[str, RoundState] = field(default_factory=dict)
    reports: dict[str, RoundReport] = field(default_factory=dict)
    done: int = 0


def block_builder(task: Signed[Task], result: RoundResult, state: RoundState, proposer: Identity,
                  fetch: Callable[[Any], Any],
                  decided: list[Decision]) -> Callable[[ChainState], tuple[Block, Artifact | None]]:
    """What the round proposes on whatever head the commit lock finds (its decision appended to ``decided``),
    with the model it delivers (the ledger keeps it once the block validates); ConsensusError when it has no
    block to propose."""
    def build(snapshot: ChainState) -> tuple[Block, Artifact | None]:
        try:
            block, decision = propose_task_block(snapshot, task, [a.signed for a in result.arrivals], result.ballots,
                                                 proposer, now_ms(), state.round_id, result.fusion_votes)
        except NoQuorum as e:
            raise ConsensusError(f"no block: {e}", reason="quorum") from None
        decided.append(decision)
        if decision.winner is None and not block.header.fused and task.message.kind == "request" \
                and block.header.timestamp_ms < task.message.deadline_ms:
            raise ConsensusError("no model reached the target yet: the task stays open until its deadline",
                                 reason="no_winner")
        if task.message.kind == "standing" and decision.winner is None:
            raise ConsensusError(f"no valid model reached the difficulty {task.message.target}: no block",
                                 reason="no_winner")
        if block.header.fused:
            return block, delivery.fused_artifact(task.message, block, result, fetch)
        return block, delivery.winner_artifact(decision, result.arrivals, result.weight_refs)

    return build


def committed_report(imported: BlockImportResult, decision: Decision, result: RoundResult, state: RoundState,
                     started: float, commit_s: float) -> RoundReport:
    timings = {**result.timings, "commit_s": commit_s, "ledger_validate_ms": imported.validate_ms,
               "ledger_persist_ms": imported.persist_ms}
    return RoundReport(height=imported.height, block_hash=imported.hash, prev_hash=imported.prev_hash,
                       task_id=state.task_id, winner=imported.winner, score=decision.score, committed=True,
                       outcomes=tuple(result.outcomes) + delivery.outcomes(decision, result.arrivals),
                       timings=timings, round_seconds=time.perf_counter() - started)


def failed_report(task_id: str, error: Exception, outcomes: Any, timings: dict[str, float],
                  started: float) -> RoundReport:
    return RoundReport(height=None, block_hash=None, task_id=task_id, winner=None, score=None, committed=False,
                       failure=str(error), outcomes=tuple(outcomes), timings=timings,
                       round_seconds=time.perf_counter() - started)


def task_view(pool_view: dict[str, Any], failure: Any, state: RoundState | None,
              report: RoundReport | None) -> dict[str, Any]:
    """Where one task stands: the pool's view, its last settlement failure, its round and its report."""
    view = dict(pool_view)
    if failure is not None:
        view["settlement"] = failure
    if state is not None:
        view["round"] = state.status().model_dump()
    if report is not None:
        view["report"] = report.model_dump()
    return view
