"""The consensus actor's settlement: the pool kept a cache of the chain, and every refund owed paid.

Each tick reconciles the pool with the ledger, adopts open tasks the pool lost (a restart,
a lost reply) and refunds every open task past its deadline, pooled or not. One task's
failure is that task's named outcome, asked again after a back-off: never the tick's, so
no refused refund can keep another task from its round.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from dlbc_ray.actors import pool as task_pool
from dlbc_ray.actors.round_runner import compute_round_id, now_ms
from dlbc_ray.consensus import ChainState, propose_task_block
from dlbc_ray.consensus import escrow
from dlbc_ray.crypto import Identity
from dlbc_ray.errors import ActorUnavailable, ConsensusError
from dlbc_ray.schema import Block, Signed, Task

log = logging.getLogger(__name__)
REFUSED_RETRY_S = 30.0  # a settlement the ledger refused is asked again this much later


class Settler:
    """Settles what the chain says is owed; the consensus actor owns one and calls ``settle`` each tick."""

    def __init__(self, pool: task_pool.TaskPool, *, identity: Identity, snapshot: Callable[[], ChainState],
                 commit_lock: threading.Lock, import_block: Callable[[Block], Any],
                 blocks: Callable[[int, int], list[Block]]) -> None:
        self.pool, self.identity = pool, identity
        self._snapshot, self._lock, self._import, self._blocks = snapshot, commit_lock, import_block, blocks
        self.failures: dict[str, str] = {}  # task id -> the reason its settlement last failed
        self.retry_at: dict[str, float] = {}  # task id -> when a refused settlement may be tried again

    def settle(self, now: int) -> None:
        """Reconcile the pool with the chain; refund every open task past its deadline, pooled or not."""
        pooled = self.pool.ids()  # listed before the snapshot: whatever is pooled by then is on chain
        state = self._snapshot()
        diff = escrow.reconcile(pooled, state)
        for task_id, status in diff.closed.items():
            self.pool.settle(task_id, "done" if status == "done" else "expired")
        for task_id in diff.unknown:
            self.note(task_id, "not_on_chain", "pooled but unknown to the chain: dropped")
            self.pool.drop(task_id)
        for task_id in diff.missing:
            self._guarded(task_id, lambda t=task_id: self.pool.adopt(t))
        for task_id in escrow.compute_refunds(state, now, busy=self.pool.busy()):
            self._guarded(task_id, lambda t=task_id: self._refund(t, state))

    def note(self, task_id: str, reason: str, message: str) -> None:
        """Record why a task's settlement failed; logged the first time for each reason."""
        if self.failures.get(task_id) != reason:
            log.warning("task %s: %s (%s)", task_id[:12], message, reason)
        self.failures[task_id] = reason

    def _guarded(self, task_id: str, action: Callable[[], object]) -> None:
        """Run one task's settlement step; a failure is that task's named outcome, never the tick's."""
        if time.monotonic() < self.retry_at.get(task_id, 0.0):
            return
        try:
            action()
        except Exception as e:  # a bug in one task's step must not stall every other task: noted by name
            reason = getattr(e, "reason", type(e).__name__)
            self.note(task_id, reason, str(e))
            if not isinstance(e, ActorUnavailable):  # refused: ask again later, not every tick
                self.retry_at[task_id] = time.monotonic() + REFUSED_RETRY_S
        else:
            self.failures.pop(task_id, None)
            self.retry_at.pop(task_id, None)

    def _refund(self, task_id: str, state: ChainState) -> None:
        """An open task past its deadline with no block: a block with no winner returns the escrow."""
        task = self._posted_task(task_id, state)
        round_id = compute_round_id(task_id, "expired", 0)
        with self._lock:
            head = self._snapshot()
            if escrow.get_posting(head, task_id) == "open":  # else a round settled it meanwhile
                self._import(propose_task_block(head, task, [], [], self.identity, now_ms(), round_id)[0])
        self.pool.settle(task_id, "expired")

    def _posted_task(self, task_id: str, state: ChainState) -> Signed[Task]:
        """The requester's signed task: the pool's copy, else the one in the block that posted it."""
        entry = self.pool.entry(task_id)
        if entry is not None:
            return entry.task
        height = state.tasks[task_id].posted_height
        blocks = self._blocks(height, height + 1)
        found = escrow.find_posting(blocks[0], task_id) if blocks else None
        if found is None:
            raise ConsensusError(f"task {task_id[:12]}: block {height} holds no posting of it", reason="no_posting")
        return found
