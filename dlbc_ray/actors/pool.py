"""The task pool: pending tasks with their data, ranked by DLBC's four factors.

Each task's splits are put in the object store once, by the consensus actor (so they
outlive the submitting CLI), and written to ``<home>/tasks/`` so that a restarted
consensus can rebuild the pool from the ledger's open tasks.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import ray

from dlbc_ray import crypto
from dlbc_ray.actors.round_runner import TaskData
from dlbc_ray.actors.task_code import install
from dlbc_ray.consensus import ChainState
from dlbc_ray.consensus.ranking import PendingTask, RankingWeights, estimate_cost, explain, rank_tasks
from dlbc_ray.errors import InvalidTask
from dlbc_ray.models.data import Split, split_hash
from dlbc_ray.schema import DatasetSpec, Signed, Task
from dlbc_ray.schema.round_messages import RoundReport

log = logging.getLogger(__name__)
Status = Literal["queued", "mining", "done", "failed", "expired"]
FINAL: frozenset[str] = frozenset({"done", "expired"})  # settled on chain


@dataclass
class PoolEntry:
    task_id: str
    task: Signed[Task]
    data: TaskData
    pending: PendingTask
    status: Status = "queued"
    attempts: int = 0
    last: RoundReport | None = None


def check_data(dataset: DatasetSpec, train: Split, test: Split) -> None:
    """The splits must be the ones the task's hashes name."""
    if split_hash(test) != dataset.test_hash:
        raise InvalidTask("test split does not match the task's test_hash", reason="data_hash")
    if split_hash(train) != dataset.train_hash:
        raise InvalidTask("training split does not match the task's train_hash", reason="data_hash")


def task_cost(task: Task) -> PendingTask:
    """DLBC's factors for one task, from its model and dataset spec; a net from the task's own code needs
    that code installed first (``TaskPool.add`` does)."""
    from dlbc_ray.models.nets import build_task_net, count_parameters, estimate_flops

    net = build_task_net(task)
    cost = estimate_cost(parameters=count_parameters(net), flops_per_sample=estimate_flops(net, task.dataset.input_shape),
                         input_shape=task.dataset.input_shape, train_examples=task.dataset.n_train,
                         test_examples=task.dataset.n_test, epochs=task.max_epochs)
    return PendingTask(task_id=crypto.message_hash(task), reward=task.reward, submitted_ms=task.created_ms,
                       cost=cost)


class TaskPool:
    """Thread-safe; ``folder`` (None in the demo) keeps task data, so the chain's open tasks can be adopted.

    ``allow_code``: the operator's --allow-task-code; a task with its own code is priced (its net built)
    only after that code is installed, and is not adopted at all without the opt-in.
    """

    def __init__(self, folder: Path | None, *, allow_code: bool = False) -> None:
        self.folder = folder
        self.allow_code = allow_code
        self._entries: dict[str, PoolEntry] = {}
        self._lock = threading.Lock()
        self._no_data: set[str] = set()

    def __contains__(self, task_id: str) -> bool:
        return task_id in self._entries

    def add(self, task_id: str, task: Signed[Task], train: Split, test: Split) -> bool:
        """Queue a task once: False (and no change) if it is already in the pool."""
        if task_id in self:
            return False
        install(task.message.code, allowed=self.allow_code)  # before pricing: the net may be the task's own
        entry = PoolEntry(task_id, task, TaskData(ray.put(train), ray.put(test)), task_cost(task.message))
        with self._lock:
            return self._entries.setdefault(task_id, entry) is entry

    def save(self, task_id: str, task: Signed[Task], train: Split, test: Split) -> None:
        """Keep the task and its data in the home (before its posting is committed, so a restart finds them).

        The test split is the validators' alone: the folder is 0700 and the files 0600, whatever the
        home's own mode or the umask (a miner on the same machine must not read it).
        """
        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.folder.chmod(0o700)
        data, spec = self._files(task_id)
        np.savez(data.with_suffix(".tmp.npz"), x_train=train.x, y_train=train.y, x_test=test.x, y_test=test.y)
        data.with_suffix(".tmp.npz").chmod(0o600)
        data.with_suffix(".tmp.npz").replace(data)
        spec.with_suffix(".tmp").write_text(task.model_dump_json())
        spec.with_suffix(".tmp").chmod(0o600)
        spec.with_suffix(".tmp").replace(spec)
        self._no_data.discard(task_id)

    def discard_saved(self, task_id: str) -> None:
        """Forget the saved data of a task the chain refused."""
        for path in self._files(task_id) if self.folder is not None else ():
            path.unlink(missing_ok=True)

    def _files(self, task_id: str) -> tuple[Path, Path]:
        assert self.folder is not None
        return self.folder / f"{task_id}.npz", self.folder / f"{task_id}.json"

    def adopt(self, task_id: str) -> bool:
        """Queue a task open on chain from the data saved in the home; False if this home has none."""
        if task_id in self:
            return True
        if self.folder is None or task_id in self._no_data:
            return False
        data, spec = self._files(task_id)
        if not (data.exists() and spec.exists()):
            self._no_data.add(task_id)
            return False
        task = Signed[Task].model_validate_json(spec.read_text())
        if task.message.code is not None and not self.allow_code:
            log.warning("open task %s ships its own code; start the network with --allow-task-code to mine it",
                        task_id[:12])
            self._no_data.add(task_id)
            return False
        with np.load(data, allow_pickle=False) as z:
            self.add(task_id, task, Split(z["x_train"], z["y_train"]), Split(z["x_test"], z["y_test"]))
        return True

    def recover(self, state: ChainState) -> int:
        """Re-queue every task open on chain whose data this home still holds."""
        return sum(self.adopt(r) for r, rec in state.tasks.items() if rec.status == "open")

    # ------------------------------------------------------------ scheduling

    def next(self, now_ms: int, weights: RankingWeights) -> Iterator[PoolEntry]:
        """Queued tasks, best-ranked first."""
        with self._lock:
            queued = {e.task_id: e for e in self._entries.values()
                      if e.status == "queued" and e.task.message.deadline_ms > now_ms}
        for pending in rank_tasks((e.pending for e in queued.values()), now_ms, weights):
            yield queued[pending.task_id]

    def waiting(self) -> bool:
        with self._lock:
            return any(e.status in ("queued", "mining") for e in self._entries.values())

    def ids(self) -> list[str]:
        with self._lock:
            return list(self._entries)

    def entry(self, task_id: str) -> PoolEntry | None:
        with self._lock:
            return self._entries.get(task_id)

    def busy(self) -> set[str]:
        with self._lock:
            return {e.task_id for e in self._entries.values() if e.status == "mining"}

    def mark(self, task_id: str, status: Status) -> None:
        with self._lock:
            if task_id in self._entries:
                self._entries[task_id].status = status

    def settle(self, task_id: str, status: Status) -> None:
        """The chain closed this task: a closed status is final, whatever a round reports later."""
        self.mark(task_id, status)

    def drop(self, task_id: str) -> None:
        with self._lock:
            self._entries.pop(task_id, None)

    def finish(self, task_id: str, report: RoundReport | None, *, retry: bool, max_attempts: int) -> None:
        """One attempt ended (``report`` None: it never began); a task the chain settled stays settled."""
        with self._lock:
            entry = self._entries.get(task_id)
            if entry is None or entry.status in FINAL:
                return
            entry.attempts += 1
            entry.last = report or entry.last
            entry.status = "done" if not retry else "queued" if entry.attempts < max_attempts else "failed"

    # ---------------------------------------------------------------- views

    def view(self, task_id: str) -> dict[str, Any]:
        with self._lock:
            entry = self._entries.get(task_id)
            if entry is None:
                return {"task_id": task_id, "status": "unknown"}
            return {"task_id": task_id, "status": entry.status, "attempts": entry.attempts}

    def explain(self, now_ms: int, weights: RankingWeights) -> list[dict[str, Any]]:
        """Queued and mining tasks in rank order, each with its factors."""
        with self._lock:
            entries = {e.task_id: e for e in self._entries.values() if e.status in ("queued", "mining")}
        ranked = rank_tasks((e.pending for e in entries.values()), now_ms, weights)
        return [{**explain(p, now_ms, weights), "status": entries[p.task_id].status} for p in ranked]

