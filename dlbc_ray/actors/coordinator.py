"""The consensus actor: a ranked task pool, a scheduler, rounds on miner groups, ordered commits.

Requester tasks are escrowed on chain the moment they are submitted and mined when a
group of miners is free, best-ranked first; several groups mine several tasks at once.
Every block (task, transfer, refund) goes through one commit lock, proposed on the
head as it is then, so concurrent rounds never produce conflicting blocks. The pool is
a cache of the chain: each tick reconciles it with the ledger, adopts open tasks from
the data kept in the home, and refunds every open task past its deadline, so neither
a lost reply nor a restart leaves an escrow stuck. One task's failure is its own.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

from dlbc_ray import crypto
from dlbc_ray.actors import inbound
from dlbc_ray.actors import pool as task_pool
from dlbc_ray.actors import task_code
from dlbc_ray.actors._ray import Member, current_actor, get, get_retrying, named_actor, resolve
from dlbc_ray.actors.delivery import Artifact
from dlbc_ray.actors.names import LEDGER_NAME, NAMESPACE, miner_name, validator_name
from dlbc_ray.actors.round_commit import Group, Live, block_builder, committed_report, failed_report, task_view
from dlbc_ray.actors.round_runner import (RoundResult, RoundRunner, RoundState, TaskData, compute_round_id, now_ms,
                                          progress_update)
from dlbc_ray.actors.scheduler import mine_entry, mine_standing_group, run_loop
from dlbc_ray.actors.settle import Settler
from dlbc_ray.actors.standing import StandingTemplate, load_standing_data, make_standing_task
from dlbc_ray.config import ConsensusConfig
from dlbc_ray.consensus import ChainState, Event, compute_block_hash, escrow, propose_tx_block
from dlbc_ray.crypto import Identity
from dlbc_ray.errors import ConsensusError, DLBCError, InvalidBlock, InvalidTask
from dlbc_ray.ledger.chain import BlockImportResult
from dlbc_ray.models.fusion import check_fusion_mode
from dlbc_ray.models.objectives import check_task_objective
from dlbc_ray.schema import Block, PostTaskTx, Signed, Task, Transfer, TransferTx
from dlbc_ray.schema.round_messages import ProgressEvent, RoundReport, RoundStatus

__all__ = ["Consensus", "StandingTemplate", "TaskData", "now_ms"]

log = logging.getLogger(__name__)


class Consensus:
    """Coordinates rounds and proposes every block; the only proposer, so there are no forks."""

    def __init__(self, cfg: ConsensusConfig, *, identity: Identity, ledger: Any, miners: Sequence[Member],
                 validators: Sequence[Member], groups: Sequence[Sequence[str]] | None = None,
                 home: str | None = None, autostart: bool = False, treasury: Identity | None = None,
                 standing: StandingTemplate | None = None, policy: Mapping[str, object] | None = None) -> None:
        self.cfg, self.identity, self.treasury, self.standing = cfg, identity, treasury, standing
        self.policy = policy  # the miners' hyperparameters: rounds audit transcripts against it (None: no audits)
        self._standing_data: TaskData | None = None
        # A long-lived network passes names, not handles: a restart must not depend on
        # constructor arguments held in the object store by a driver that has exited.
        self.ledger = ledger if ledger is not None else named_actor(LEDGER_NAME, NAMESPACE)
        self.miners = {m.name: resolve(m, miner_name(m.name), NAMESPACE) for m in miners}
        self.validators = [resolve(v, validator_name(v.name), NAMESPACE) for v in validators]
        names = groups or [list(self.miners)]
        self.groups = [Group([self.miners[n] for n in g]) for g in names]
        self.live = Live()
        self._chain_id: str | None = None
        self.pool = task_pool.TaskPool(Path(home) / "tasks" if home else None, allow_code=self.cfg.allow_task_code)
        self._commit = threading.Lock()
        self._stop = threading.Event()
        self._scheduler: threading.Thread | None = None
        self._workers = ThreadPoolExecutor(max_workers=max(1, len(self.groups)), thread_name_prefix="dlbc-round")
        self.settler = Settler(self.pool, identity=identity, snapshot=self.snapshot, commit_lock=self._commit,
                               import_block=self._import, blocks=self._blocks)
        if home:
            try:
                self.pool.recover(self.snapshot())
            except DLBCError as e:  # a constructor that raises is never restarted: the first tick adopts instead
                log.warning("pool recovery deferred: %s", e)
        if autostart:  # a long-lived network resumes mining by itself after a restart
            self.start()

    # ------------------------------------------------------------- chain access

    @property
    def chain_id(self) -> str:
        """The chain this actor proposes on: fixed by genesis, fetched once."""
        if self._chain_id is None:
            self._chain_id = self.snapshot().chain_id
        return self._chain_id

    def chain(self) -> str:
        """The chain id, for clients that sign tasks and transfers."""
        return self.chain_id

    def snapshot(self) -> ChainState:
        return self._ask(self.ledger.snapshot.remote, "ledger snapshot")

    def _ask(self, call: Callable[[], Any], what: str) -> Any:
        """A ledger call that is safe to repeat, asked again for up to the commit timeout while unanswered."""
        return get_retrying(call, timeout=self.cfg.commit_timeout_s, what=what, patience_s=self.cfg.commit_timeout_s)

    def _commit_block(self, build: Callable[[ChainState], tuple[Block, Artifact | None]]) -> BlockImportResult:
        """Propose on the current head and import, one block at a time.

        The same block is sent again while the ledger does not answer: importing the head
        twice is a no-op, so a lost reply neither loses the block nor commits it twice.
        """
        with self._commit:
            return self._import(*build(self.snapshot()))

    def _import(self, block: Block, delivered: Artifact | None = None) -> BlockImportResult:
        """The ledger validates ``block`` and, only then, keeps the model it delivers (``Ledger.import_block``)."""
        weights, _, metadata = delivered or (None, None, None)
        return self._ask(lambda: self.ledger.import_block.remote(block, weights, metadata), "ledger")

    def _blocks(self, start: int, stop: int) -> list[Block]:
        return self._ask(lambda: self.ledger.blocks.remote(start, stop), "ledger blocks")

    # ------------------------------------------------------------ transactions

    def submit_task(self, task: Signed[Task], train: Any, test: Any) -> str:
        """Save the task's data, escrow its reward (its own block), queue it; returns the task id.

        Idempotent: the same signed task again (a retry after a lost reply) is queued if it
        is open on chain, and is never escrowed twice.
        """
        task = inbound.wire(Signed[Task], task, "task")  # Ray runs no validators: parsed as declared
        spec = crypto.verify(task, chain_id=self.chain_id, expected_signer=task.message.requester)
        task_id = crypto.message_hash(spec)
        task_pool.check_data(spec.dataset, train, test)
        task_code.install(spec.code, allowed=self.cfg.allow_task_code)  # the queue prices the task's own net
        check_task_objective(spec.metric, spec.dataset.n_classes, spec.dataset.partition)  # on the wire any name
        check_fusion_mode(spec.fusion)  # the wire carries any well-formed name; the registry decides
        if task_id not in self.pool and escrow.get_posting(self.snapshot(), task_id) == "new":
            self.pool.save(task_id, task, train, test)  # before the posting: a restart then finds the data
        if self._post_task(task_id, task) == "open":
            self.pool.add(task_id, task, train, test)
        return task_id

    def _post_task(self, task_id: str, task: Signed[Task]) -> escrow.Posting:
        """Escrow the task in a block of its own unless the chain holds it already; its posting after."""
        with self._commit:
            state = self.snapshot()
            posting = escrow.get_posting(state, task_id)
            if posting != "new":
                return posting
            try:
                self._import(propose_tx_block(state, [PostTaskTx(task=task)], self.identity, now_ms()))
            except InvalidBlock as e:
                self.pool.discard_saved(task_id)
                raise InvalidTask(f"task not accepted: {e.message.split(': ', 1)[-1]}", reason=e.reason) from None
            return "open"

    def submit_transfer(self, transfer: Signed[Transfer]) -> dict[str, Any]:
        """A signed transfer, included in the next block (made at once).

        Idempotent: the same signed transfer again (a retry after a lost reply) is answered
        with the block that already holds it, and never sent twice.
        """
        transfer = inbound.wire(Signed[Transfer], transfer, "transfer")
        crypto.verify(transfer, chain_id=self.chain_id, expected_signer=transfer.message.sender)
        with self._commit:
            state = self.snapshot()
            if transfer.message.nonce < state.nonces.get(transfer.message.sender, 0):
                recent = self._blocks(max(1, state.height - escrow.TRANSFER_LOOKBACK), state.height + 1)
                if (held := escrow.find_transfer(recent, transfer)) is not None:
                    return {"height": held.header.height, "hash": compute_block_hash(held.header)}
            result = self._import(propose_tx_block(state, [TransferTx(transfer=transfer)], self.identity, now_ms()))
        return {"height": result.height, "hash": result.hash}

    # ----------------------------------------------------------------- rounds

    def mine(self, task: Signed[Task], data: TaskData) -> RoundReport:
        """One round on the first miner group, now, for a task not yet on chain (the demo's path)."""
        if not isinstance(data, TaskData):
            raise InvalidTask(f"expected the task's data refs, got {type(data).__name__}", reason="data")
        return self._round(inbound.wire(Signed[Task], task, "task"), data, self.groups[0].members)

    def mine_standing(self, template: StandingTemplate | None = None, data: TaskData | None = None,
                      group: int = 0) -> RoundReport:
        """PoLe: one round of the standing task, aimed at the chain's current difficulty."""
        template = template or self.standing
        if template is None or self.treasury is None:
            raise ConsensusError("this network has no standing task (start it with PoLe)", reason="standing_task")
        task = make_standing_task(self.treasury, template, self.snapshot(), now_ms(),
                                  int(self.cfg.collect_timeout_s * 1e3))
        if data is None and self._standing_data is None:  # the public built-in set, loaded once by this actor
            self._standing_data = load_standing_data(template)
        return self._round(task, data or self._standing_data, self.groups[group].members)

    def _round(self, task: Signed[Task], data: TaskData, miners: Sequence[Member]) -> RoundReport:
        task_id = crypto.message_hash(crypto.verify(task, chain_id=self.chain_id, expected_signer=task.message.requester))
        task_code.check_allowed(task.message.code, self.cfg.allow_task_code)  # also a task adopted from the chain
        started = time.perf_counter()
        base = self.snapshot()
        state = RoundState(task_id, compute_round_id(task_id, base.head_hash, time.time_ns()))
        with self.live.lock:
            self.live.rounds[task_id] = state
            for m in [*miners, *self.validators]:
                state.set(m.name)
        runner = RoundRunner(self.cfg, task=task, data=data, miners=miners, validators=self.validators, base=base,
                             state=state, lock=self.live.lock, proposer=self.identity, sink=current_actor(),
                             policy=self.policy)
        try:
            result = runner.run()
            report = self._commit_round(task, result, state, started)
        except Exception as e:  # the round's failure is its task's, never the scheduler's
            if not isinstance(e, DLBCError):
                log.exception("round of task %s broke", task_id[:12])
            with self.live.lock:
                state.advance(Event.FAIL)
            report = failed_report(task_id, e, runner.outcomes, runner.timings, started)
        with self.live.lock:
            self.live.rounds.pop(task_id, None)
            self.live.reports[task_id] = report
            self.live.done += 1
        return report

    def _commit_round(self, task: Signed[Task], result: RoundResult, state: RoundState,
                      started: float) -> RoundReport:
        t0, decided = time.perf_counter(), []
        fetch = lambda ref: get(ref, timeout=self.cfg.commit_timeout_s, what="contributor weights")  # noqa: E731
        imported = self._commit_block(block_builder(task, result, state, self.identity, fetch, decided))
        with self.live.lock:
            state.advance(Event.BLOCK_COMMITTED)
        return committed_report(imported, decided[-1], result, state, started, time.perf_counter() - t0)

    # ---------------------------------------------------------------- scheduler

    def start(self) -> bool:
        """Mine queued tasks in the background until ``stop``; False if already running."""
        if self._scheduler and self._scheduler.is_alive():
            return False
        self._stop.clear()
        self._scheduler = threading.Thread(target=run_loop, args=(self,), name="dlbc-scheduler", daemon=True)
        self._scheduler.start()
        return True

    def stop(self) -> None:
        self._stop.set()  # the loop (actors/scheduler.py) ends at its next tick

    def tick(self) -> int:
        """Settle what the chain says is owed, then start the best-ranked tasks on free groups.

        Returns the rounds started. Each task is settled on its own: one that fails is noted
        in ``settler.failures`` and tried again later, and never keeps another task from its round.
        """
        self.settler.settle(now_ms())
        started, free = 0, [g for g in self.groups if not g.busy]
        for group, entry in zip(free, self.pool.next(now_ms(), self.cfg.ranking)):
            group.busy = True
            self.pool.mark(entry.task_id, "mining")
            self._workers.submit(partial(mine_entry, self), group, entry)
            started += 1
        if self.standing is not None and not started and len(free) == len(self.groups) and not self.pool.waiting():
            free[0].busy = True  # idle network: PoLe mines the standing task
            self._workers.submit(partial(mine_standing_group, self), free[0])
            started += 1
        return started

    # ------------------------------------------------------------------ status

    def report(self, event: ProgressEvent) -> None:
        with self.live.lock:
            state = self.live.rounds.get(event.task_id)
            if state is not None:
                progress_update(state, event)

    def status(self) -> RoundStatus:
        """The first round in progress (the demo's live view), or idle."""
        with self.live.lock:
            state = next(iter(self.live.rounds.values()), None)
            status = state.status() if state else RoundStatus(phase="idle")
            return status.model_copy(update={"rounds_done": self.live.done})

    def rounds(self) -> list[RoundStatus]:
        with self.live.lock:
            return [s.status() for s in self.live.rounds.values()]

    def task_view(self, task_id: str) -> dict[str, Any]:
        """Where one task stands: queued, mining (with its phase), done, failed or expired."""
        with self.live.lock:
            state, report = self.live.rounds.get(task_id), self.live.reports.get(task_id)
        return task_view(self.pool.view(task_id), self.settler.failures.get(task_id), state, report)

    def queue(self) -> list[dict[str, Any]]:
        return self.pool.explain(now_ms(), self.cfg.ranking)

    def members(self) -> dict[str, Any]:
        running = bool(self._scheduler and self._scheduler.is_alive())
        return {"miners": [m.name for m in self.miners.values()], "validators": [v.name for v in self.validators],
                "groups": [[m.name for m in g.members] for g in self.groups], "busy": [g.busy for g in self.groups],
                "scheduler": running}

