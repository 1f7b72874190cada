"""The consensus actor: a ranked task pool, a scheduler, rounds on miner groups, ordered commits.

Requester tasks are escrowed on chain the moment they are submitted and mined when a
group of miners is free, best-ranked first; several groups mine several tasks at once.
Every block (task, transfer, refund) goes through one commit lock, proposed on the
head as it is then, so concurrent rounds never produce conflicting blocks. A restart
rebuilds the pool from the ledger's open tasks and the task data kept in the home.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray

from dlbc_ray import crypto
from dlbc_ray.actors import pool as task_pool
from dlbc_ray.actors._ray import Member, get
from dlbc_ray.actors.names import LEDGER_NAME, NAMESPACE, miner_name, validator_name
from dlbc_ray.actors.rounds import (
    RoundResult,
    RoundRunner,
    RoundState,
    TaskData,
    compute_round_id,
    now_ms,
    progress_update,
)
from dlbc_ray.config import ConsensusConfig
from dlbc_ray.consensus import ChainState, Event, propose_task_block, propose_tx_block
from dlbc_ray.consensus.decision import Decision
from dlbc_ray.consensus.validation import expected_standing_target
from dlbc_ray.crypto import Identity
from dlbc_ray.errors import ConsensusError, DLBCError, InvalidBlock, InvalidTask, NoQuorum
from dlbc_ray.ledger.chain import BlockImportResult
from dlbc_ray.schema import Block, DatasetSpec, ModelSpec, PostTaskTx, Signed, Task, Transfer, TransferTx
from dlbc_ray.schema.rounds import (
    ProgressEvent,
    RoundReport,
    RoundStatus,
    SubmissionArrival,
    SubmissionOutcome,
)

__all__ = ["Consensus", "StandingTemplate", "TaskData", "now_ms"]


@dataclass(frozen=True)
class StandingTemplate:
    """What PoLe's standing task trains: a registry model on a built-in dataset."""

    model: ModelSpec
    dataset: DatasetSpec
    max_epochs: int


@dataclass
class _Group:
    members: list[Member]
    busy: bool = False


@dataclass
class _Live:
    """State shared by the scheduler thread, round threads and status calls (under ``lock``)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    rounds: dict[str, RoundState] = field(default_factory=dict)
    reports: dict[str, RoundReport] = field(default_factory=dict)
    done: int = 0


class Consensus:
    """Coordinates rounds and proposes every block; the only proposer, so there are no forks."""

    def __init__(self, cfg: ConsensusConfig, *, identity: Identity, ledger: Any, miners: Sequence[Member],
                 validators: Sequence[Member], groups: Sequence[Sequence[str]] | None = None,
                 home: str | None = None, autostart: bool = False, treasury: Identity | None = None,
                 standing: StandingTemplate | None = None) -> None:
        self.cfg, self.identity, self.treasury, self.standing = cfg, identity, treasury, standing
        self._standing_data: TaskData | None = None
        # A long-lived network passes names, not handles: a restart must not depend on
        # constructor arguments held in the object store by a driver that has exited.
        self.ledger = ledger if ledger is not None else ray.get_actor(LEDGER_NAME, namespace=NAMESPACE)
        self.miners = {m.name: _resolve(m, miner_name) for m in miners}
        self.validators = [_resolve(v, validator_name) for v in validators]
        names = groups or [list(self.miners)]
        self.groups = [_Group([self.miners[n] for n in g]) for g in names]
        self.live = _Live()
        self.pool = task_pool.TaskPool(Path(home) / "tasks" if home else None)
        self._commit = threading.Lock()
        self._stop = threading.Event()
        self._scheduler: threading.Thread | None = None
        self._workers = ThreadPoolExecutor(max_workers=max(1, len(self.groups)), thread_name_prefix="dlbc-round")
        if home:
            self.pool.recover(self.snapshot())
        if autostart:  # a long-lived network resumes mining by itself after a restart
            self.start()

    # ------------------------------------------------------------- chain access

    def snapshot(self) -> ChainState:
        return get(self.ledger.snapshot.remote(), timeout=self.cfg.commit_timeout_s, what="ledger snapshot")

    def _commit_block(self, build: Callable[[ChainState], Block]) -> BlockImportResult:
        """Propose on the current head and import, one block at a time."""
        with self._commit:
            block = build(self.snapshot())
            return get(self.ledger.import_block.remote(block), timeout=self.cfg.commit_timeout_s, what="ledger")

    # ------------------------------------------------------------ transactions

    def submit_task(self, task: Signed[Task], train: Any, test: Any) -> str:
        """Escrow the reward on chain now (its own block), then queue the task for mining."""
        spec = crypto.verify(task, expected_signer=task.message.requester)
        task_id = crypto.message_hash(spec)
        task_pool.check_data(spec.dataset, train, test)
        if task_id in self.pool:
            raise InvalidTask(f"task {task_id[:12]} was already submitted", reason="duplicate_task")
        try:
            self._commit_block(lambda st: propose_tx_block(st, [PostTaskTx(task=task)], self.identity, now_ms()))
        except InvalidBlock as e:
            raise InvalidTask(f"task not accepted: {e.message.split(': ', 1)[-1]}", reason=e.reason) from None
        self.pool.add(task_id, task, train, test)
        return task_id

    def submit_transfer(self, transfer: Signed[Transfer]) -> dict[str, Any]:
        """A signed transfer, included in the next block (made at once)."""
        crypto.verify(transfer, expected_signer=transfer.message.sender)
        result = self._commit_block(lambda st: propose_tx_block(st, [TransferTx(transfer=transfer)], self.identity,
                                                                now_ms()))
        return {"height": result.height, "hash": result.hash}

    # ----------------------------------------------------------------- rounds

    def mine(self, task: Signed[Task], data: TaskData) -> RoundReport:
        """One round on the first miner group, now, for a task not yet on chain (the demo's path)."""
        return self._round(task, data, self.groups[0].members)

    def mine_standing(self, template: StandingTemplate | None = None, data: TaskData | None = None,
                      group: int = 0) -> RoundReport:
        """PoLe: one round of the standing task, aimed at the chain's current difficulty."""
        template = template or self.standing
        if template is None or self.treasury is None:
            raise ConsensusError("this network has no standing task (start it with PoLe)", reason="standing_task")
        return self._round(self._standing_task(template), data or self._load_standing(template),
                           self.groups[group].members)

    def _standing_task(self, template: StandingTemplate) -> Signed[Task]:
        assert self.treasury is not None
        snapshot, now = self.snapshot(), now_ms()
        task = Task(requester=self.treasury.public_key, nonce=time.time_ns(), model=template.model,
                    dataset=template.dataset, target=expected_standing_target(snapshot),
                    reward=snapshot.params.block_reward, deadline_ms=now + int(self.cfg.collect_timeout_s * 1e3),
                    max_epochs=template.max_epochs, kind="standing", created_ms=now)
        return crypto.sign(self.treasury, task)

    def _load_standing(self, template: StandingTemplate) -> TaskData:
        """The standing task's data, loaded once by this actor from the built-in set it names."""
        if self._standing_data is None:
            from dlbc_ray.models.data import load_builtin

            bundle = load_builtin(template.dataset.name)
            task_pool.check_data(template.dataset, bundle.train, bundle.test)
            self._standing_data = TaskData(ray.put(bundle.train), ray.put(bundle.test))
        return self._standing_data

    def _round(self, task: Signed[Task], data: TaskData, miners: Sequence[Member]) -> RoundReport:
        task_id = crypto.message_hash(crypto.verify(task, expected_signer=task.message.requester))
        started = time.perf_counter()
        base = self.snapshot()
        state = RoundState(task_id, compute_round_id(task_id, base.head_hash, time.time_ns()))
        with self.live.lock:
            self.live.rounds[task_id] = state
            for m in [*miners, *self.validators]:
                state.set(m.name)
        runner = RoundRunner(self.cfg, task=task, data=data, miners=miners, validators=self.validators, base=base,
                             state=state, lock=self.live.lock, sink=_self_handle())
        try:
            result = runner.run()
            report = self._commit_round(task, result, state, started)
        except DLBCError as e:
            with self.live.lock:
                state.advance(Event.FAIL)
            report = RoundReport(height=None, block_hash=None, task_id=task_id, winner=None, score=None,
                                 committed=False, failure=str(e), outcomes=tuple(runner.outcomes),
                                 timings=runner.timings, round_seconds=time.perf_counter() - started)
        with self.live.lock:
            self.live.rounds.pop(task_id, None)
            self.live.reports[task_id] = report
            self.live.done += 1
        return report

    def _commit_round(self, task: Signed[Task], result: RoundResult, state: RoundState,
                      started: float) -> RoundReport:
        t0 = time.perf_counter()
        decided: list[Decision] = []

        def build(snapshot: ChainState) -> Block:
            try:
                block, decision = propose_task_block(snapshot, task, [a.signed for a in result.arrivals],
                                                     result.votes, self.identity, now_ms(), state.round_id,
                                                     result.fusion_votes)
            except NoQuorum as e:
                raise ConsensusError(f"no block: {e}", reason="quorum") from None
            decided.append(decision)
            if task.message.kind == "standing" and decision.winner is None:
                raise ConsensusError(f"no valid model reached the difficulty {task.message.target}: no block",
                                     reason="no_winner")
            if block.header.fused:
                self._store_fused(task.message, block, result)
            elif decision.winner is not None:
                self._store_winner(decision, result.arrivals, result.weight_refs)
            return block

        imported = self._commit_block(build)
        decision = decided[-1]
        with self.live.lock:
            state.advance(Event.BLOCK_COMMITTED)
        timings = {**result.timings, "commit_s": time.perf_counter() - t0,
                   "ledger_validate_ms": imported.validate_ms, "ledger_persist_ms": imported.persist_ms}
        return RoundReport(height=imported.height, block_hash=imported.hash, prev_hash=imported.prev_hash,
                           task_id=state.task_id, winner=imported.winner, score=decision.score, committed=True,
                           outcomes=tuple(result.outcomes) + _outcomes(decision, result.arrivals), timings=timings,
                           round_seconds=time.perf_counter() - started)

    def _store_winner(self, decision: Decision, arrivals: Sequence[SubmissionArrival], refs: dict[str, Any]) -> None:
        """The winner's weights go straight from the object store into the ledger's artifact folder."""
        winner = decision.winner
        if winner is None:
            return
        arrival = next(a for a in arrivals if a.signed.message.commit == winner.commit)
        metadata = {"task_id": winner.task_id, "miner": winner.miner}
        if arrival.reveal is not None:
            metadata["sml_seed"] = arrival.reveal.message.sml_seed
        get(self.ledger.store_artifact.remote(refs[winner.commit], winner.model_hash, metadata),
            timeout=self.cfg.commit_timeout_s, what="artifact store")

    def _store_fused(self, task: Task, block: Block, result: RoundResult) -> None:
        """BaaS: fuse the contributors here too (the same bytes validators fused) and keep the result."""
        from dlbc_ray.models import baas

        contributors = block.fusion_votes[0].message.contributors
        by_commit = {a.signed.message.commit: a for a in result.arrivals}
        parts = []
        for commit in contributors:
            arrival = by_commit[commit]
            weights = get(result.weight_refs[commit], timeout=self.cfg.commit_timeout_s, what="contributor weights")
            seed = arrival.reveal.message.sml_seed if arrival.reveal else None
            size = result.ctx.shards.get(arrival.signed.message.miner, (0, arrival.signed.message.examples))[1]
            parts.append(baas.contribution(task, weights, seed, size))
        fused = baas.fuse(task, parts)
        metadata = {"task_id": block.header.task_id or "", "fusion": task.fusion, "members": str(len(parts)),
                    "contributors": ",".join(by_commit[c].signed.message.miner for c in contributors)}
        get(self.ledger.store_artifact.remote(fused, block.header.model_hash, metadata),
            timeout=self.cfg.commit_timeout_s, what="artifact store")

    # ---------------------------------------------------------------- scheduler

    def start(self) -> bool:
        """Mine queued tasks in the background until ``stop``; False if already running."""
        if self._scheduler and self._scheduler.is_alive():
            return False
        self._stop.clear()
        self._scheduler = threading.Thread(target=self._loop, name="dlbc-scheduler", daemon=True)
        self._scheduler.start()
        return True

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.cfg.tick_s):
            try:
                self.tick()
            except DLBCError:  # a ledger hiccup: the next tick tries again
                continue

    def tick(self) -> int:
        """Refund expired tasks, then start the best-ranked tasks on free groups; returns rounds started."""
        for task_id, task in self.pool.expired(now_ms()):
            self._refund(task_id, task)
        started = 0
        free = self._free_groups()
        for group, entry in zip(free, self.pool.next(now_ms(), self.cfg.ranking)):
            group.busy = True
            self.pool.mark(entry.task_id, "mining")
            self._workers.submit(self._mine_entry, group, entry)
            started += 1
        if self.standing is not None and not started and len(free) == len(self.groups) and not self.pool.waiting():
            free[0].busy = True  # idle network: PoLe mines the standing task
            self._workers.submit(self._mine_standing_group, free[0])
            started += 1
        return started

    def _mine_standing_group(self, group: _Group) -> None:
        try:
            self.mine_standing(group=self.groups.index(group))
        except DLBCError:  # an empty treasury or a failed start: the next idle tick tries again
            pass
        finally:
            group.busy = False

    def _free_groups(self) -> list[_Group]:
        return [g for g in self.groups if not g.busy]

    def _mine_entry(self, group: _Group, entry: task_pool.PoolEntry) -> None:
        try:
            report = self._round(entry.task, entry.data, group.members)
            self.pool.finish(entry.task_id, report, retry=not report.committed, max_attempts=self.cfg.max_attempts)
        finally:
            group.busy = False

    def _refund(self, task_id: str, task: Signed[Task]) -> None:
        """An open task past its deadline with no block: a block with no winner returns the escrow."""
        round_id = compute_round_id(task_id, "expired", 0)
        self._commit_block(lambda st: propose_task_block(st, task, [], [], self.identity, now_ms(), round_id)[0])
        self.pool.mark(task_id, "expired")

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
            state = self.live.rounds.get(task_id)
            report = self.live.reports.get(task_id)
        view = self.pool.view(task_id)
        if state is not None:
            view["round"] = state.status().model_dump()
        if report is not None:
            view["report"] = report.model_dump()
        return view

    def queue(self) -> list[dict[str, Any]]:
        return self.pool.explain(now_ms(), self.cfg.ranking)

    def members(self) -> dict[str, Any]:
        return {"miners": [m.name for m in self.miners.values()], "validators": [v.name for v in self.validators],
                "groups": [[m.name for m in g.members] for g in self.groups],
                "busy": [g.busy for g in self.groups], "scheduler": bool(self._scheduler and
                                                                         self._scheduler.is_alive())}


def _outcomes(decision: Decision, arrivals: Sequence[SubmissionArrival]) -> tuple[SubmissionOutcome, ...]:
    return tuple(
        SubmissionOutcome(miner=a.signed.message.miner, commit=a.signed.message.commit,
                          verdict=t.verdict.value if t.verdict else "undecided", score=t.score)
        for a, t in zip(arrivals, decision.tallies)
    )


def _resolve(member: Member, name_of: Callable[[str], str]) -> Member:
    if member.handle is not None:
        return member
    return Member(member.name, member.public_key, ray.get_actor(name_of(member.name), namespace=NAMESPACE))


def _self_handle() -> Any:
    try:
        return ray.get_runtime_context().current_actor
    except RuntimeError:  # called outside an actor (unit tests): no live progress
        return None
