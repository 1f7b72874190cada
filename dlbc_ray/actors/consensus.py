"""The consensus actor: runs each round as an explicit state machine and proposes its block.

COLLECTING (miners train and submit) -> REVEALING (mapping seeds) -> VALIDATING (signed
votes) -> DECIDING (quorum, medians, winner, block) -> COMMITTED, each phase with a
deadline; any failure ends in FAILED with a reason and commits nothing. Weights move
miner -> validators -> ledger through the object store; this actor never holds them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import ray

from dlbc_ray import crypto
from dlbc_ray.actors._ray import Member, get, wait_each
from dlbc_ray.config import ConsensusConfig
from dlbc_ray.consensus import ChainState, Event, Phase, next_phase, propose_task_block
from dlbc_ray.consensus.decision import Decision
from dlbc_ray.consensus.verdicts import check_envelope
from dlbc_ray.crypto import Identity
from dlbc_ray.errors import ConsensusError, DLBCError, NoQuorum
from dlbc_ray.schema import Signed, Task, Vote
from dlbc_ray.schema.rounds import (
    ActorProgress,
    Ballot,
    MinedSubmission,
    ProgressEvent,
    RoundContext,
    RoundReport,
    RoundStatus,
    SubmissionArrival,
    SubmissionOutcome,
    ValidatorStats,
)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class TaskData:
    """Object refs of a task's splits; wrapped so Ray passes the refs, not the arrays."""

    train: Any
    test: Any


@dataclass
class _Round:
    task_id: str
    phase: Phase = Phase.OPEN
    started: float = field(default_factory=time.perf_counter)
    marks: dict[str, float] = field(default_factory=dict)
    outcomes: list[SubmissionOutcome] = field(default_factory=list)

    def advance(self, event: Event) -> None:
        self.marks[event.value] = time.perf_counter() - self.started
        self.phase = next_phase(self.phase, event)


class Consensus:
    """Owns the round state; miners and validators are handles given at construction."""

    def __init__(self, cfg: ConsensusConfig, *, identity: Identity, ledger: Any, miners: Sequence[Member],
                 validators: Sequence[Member]) -> None:
        self.cfg, self.identity, self.ledger = cfg, identity, ledger
        self.miners = {m.name: m for m in miners}
        self.validators = {v.name: v for v in validators}
        self._lock = threading.Lock()
        self._round: _Round | None = None
        self._progress: dict[str, ActorProgress] = {}
        self._done = 0

    # ------------------------------------------------------------ live status

    def report(self, event: ProgressEvent) -> None:
        with self._lock:
            if self._round and event.task_id == self._round.task_id:
                self._progress[event.actor] = ActorProgress(name=event.actor, stage=event.stage, epoch=event.epoch,
                                                            epochs=event.epochs, val_accuracy=event.val_accuracy)

    def status(self) -> RoundStatus:
        with self._lock:
            r = self._round
            return RoundStatus(phase=r.phase.value if r else "idle", task_id=r.task_id if r else None,
                               actors=dict(self._progress), rounds_done=self._done)

    def _set(self, name: str, stage: str) -> None:
        with self._lock:
            old = self._progress.get(name, ActorProgress(name=name))
            self._progress[name] = old.model_copy(update={"stage": stage})

    # ------------------------------------------------------------------ round

    def mine(self, task: Signed[Task], data: TaskData) -> RoundReport:
        """Run one round for ``task``; returns what happened, committed or not."""
        task_id = crypto.message_hash(crypto.verify(task, expected_signer=task.message.requester))
        rnd = _Round(task_id)
        with self._lock:
            self._round, self._progress = rnd, {n: ActorProgress(name=n) for n in [*self.miners, *self.validators]}
        timings: dict[str, float] = {}
        try:
            snapshot: ChainState = get(self.ledger.snapshot.remote(), timeout=self.cfg.commit_timeout_s,
                                       what="ledger snapshot")
            ctx = self._context(task, task_id, snapshot)
            rnd.advance(Event.START)
            arrivals, refs = self._collect(task, data.train, ctx, rnd, timings)
            rnd.advance(Event.SUBMISSIONS_CLOSED)
            arrivals = self._reveal(arrivals, timings)
            rnd.advance(Event.REVEALS_CLOSED)
            votes = self._validate(task, data.test, arrivals, refs, ctx, snapshot, timings)
            rnd.advance(Event.VOTES_CLOSED)
            report = self._decide_and_commit(task, snapshot, arrivals, refs, votes, rnd, timings)
        except DLBCError as e:
            rnd.advance(Event.FAIL)
            report = RoundReport(height=None, block_hash=None, task_id=task_id, winner=None, score=None,
                                 committed=False, failure=str(e), outcomes=tuple(rnd.outcomes), timings=timings,
                                 round_seconds=time.perf_counter() - rnd.started)
        with self._lock:
            self._done += 1
        return report

    def _context(self, task: Signed[Task], task_id: str, snapshot: ChainState) -> RoundContext:
        deadline = min(task.message.deadline_ms, now_ms() + int(self.cfg.collect_timeout_s * 1e3))
        return RoundContext(height=snapshot.height + 1, prev_hash=snapshot.head_hash, task_id=task_id,
                            eval_seed=int(snapshot.head_hash[:8], 16), submit_deadline_ms=deadline)

    def _collect(self, task: Signed[Task], train: Any, ctx: RoundContext, rnd: _Round,
                 timings: dict[str, float]) -> tuple[list[SubmissionArrival], dict[str, Any]]:
        """Miners train in parallel; submissions are ordered by arrival, the commit order."""
        me = _self_handle()
        calls = {n: m.handle.mine.remote(task, train, ctx, me) for n, m in self.miners.items()}
        names = {sub_ref: name for name, (sub_ref, _) in calls.items()}
        t0 = time.perf_counter()
        done, pending = wait_each([c[0] for c in calls.values()],
                                  timeout=max(0.0, (ctx.submit_deadline_ms - now_ms()) / 1e3))
        arrivals, refs, stats, verify_ms = [], {}, [], 0.0
        for ref, arrived in done:
            mined = self._receive(ref, names[ref], rnd)
            if mined is None:
                continue
            t = time.perf_counter()
            judgement = check_envelope(mined.signed, ctx.task_id)
            verify_ms += (time.perf_counter() - t) * 1e3
            if judgement:
                rnd.outcomes.append(_outcome(mined.signed.message.miner, None, judgement[0].value, judgement[1]))
                continue
            arrivals.append(SubmissionArrival(signed=mined.signed, arrived_ms=arrived))
            refs[mined.signed.message.commit] = calls[names[ref]][1]
            stats.append(mined.stats)
        for ref in pending:
            self._set(names[ref], "late")
            rnd.outcomes.append(_outcome(None, None, "late", f"{names[ref]} did not submit before the deadline"))
        timings.update(collect_s=time.perf_counter() - t0, consensus_verify_ms=verify_ms,
                       train_s=max((s.train_s for s in stats), default=0.0),
                       miner_hash_ms=max((s.hash_ms for s in stats), default=0.0),
                       miner_sign_ms=max((s.sign_ms for s in stats), default=0.0))
        return arrivals, refs

    def _receive(self, ref: Any, name: str, rnd: _Round) -> MinedSubmission | None:
        try:
            mined = get(ref, timeout=self.cfg.commit_timeout_s, what=f"miner {name}")
        except DLBCError as e:
            self._set(name, "failed")
            rnd.outcomes.append(_outcome(None, None, "failed", f"{name}: {e}"))
            return None
        return mined if isinstance(mined, MinedSubmission) else None

    def _reveal(self, arrivals: list[SubmissionArrival], timings: dict[str, float]) -> list[SubmissionArrival]:
        """After the window closes, each miner reveals the seed its submission committed to."""
        t0 = time.perf_counter()
        by_key = {m.public_key: m.handle for m in self.miners.values()}
        asks = {a.signed.message.commit: by_key[a.signed.message.miner].reveal.remote(
            a.signed.message.task_id, a.signed.message.commit)
            for a in arrivals if a.signed.message.sml_commitment and a.signed.message.miner in by_key}
        revealed = []
        for a in arrivals:
            ref = asks.get(a.signed.message.commit)
            reveal = _try_get(ref, self.cfg.reveal_timeout_s) if ref is not None else None
            revealed.append(a.model_copy(update={"reveal": reveal}))
        timings["reveal_s"] = time.perf_counter() - t0
        return revealed

    def _validate(self, task: Signed[Task], test: Any, arrivals: Sequence[SubmissionArrival], refs: dict[str, Any],
                  ctx: RoundContext, snapshot: ChainState, timings: dict[str, float]) -> list[Signed[Vote]]:
        if not arrivals:
            return []
        t0 = time.perf_counter()
        weight_refs = [refs[a.signed.message.commit] for a in arrivals]
        won = frozenset(snapshot.won_models)
        me = _self_handle()
        calls = {v.handle.validate.remote(task, test, list(arrivals), weight_refs, ctx, won, me): n
                 for n, v in self.validators.items()}
        for name in self.validators:
            self._set(name, "validating")
        done, _ = wait_each(list(calls), timeout=self.cfg.validate_timeout_s)
        votes: list[Signed[Vote]] = []
        ballots: list[Ballot] = []
        for ref, _ in done:
            ballot = _try_get(ref, self.cfg.commit_timeout_s)
            if isinstance(ballot, Ballot):
                ballots.append(ballot)
                key = self.validators[calls[ref]].public_key
                t = time.perf_counter()
                votes.extend(v for v in ballot.votes if _is_own_vote(v, key))
                timings["consensus_verify_ms"] = timings.get("consensus_verify_ms", 0.0) + (time.perf_counter() - t) * 1e3
                self._set(calls[ref], "voted")
        timings.update(validate_s=time.perf_counter() - t0,
                       **{k: max((getattr(b.stats, k) for b in ballots), default=0.0)
                          for k in ValidatorStats.model_fields})
        return votes

    def _decide_and_commit(self, task: Signed[Task], snapshot: ChainState, arrivals: list[SubmissionArrival],
                           refs: dict[str, Any], votes: list[Signed[Vote]], rnd: _Round,
                           timings: dict[str, float]) -> RoundReport:
        t0 = time.perf_counter()
        try:
            block, decision = propose_task_block(snapshot, task, [a.signed for a in arrivals], votes,
                                                 self.identity, now_ms())
        except NoQuorum as e:
            raise ConsensusError(f"no block: {e}", reason="quorum") from None
        t1 = time.perf_counter()
        if decision.winner is not None:
            self._store_winner(decision, arrivals, refs)
        t2 = time.perf_counter()
        result = get(self.ledger.import_block.remote(block), timeout=self.cfg.commit_timeout_s, what="ledger")
        rnd.advance(Event.BLOCK_COMMITTED)
        timings.update(aggregate_ms=(t1 - t0) * 1e3, artifact_ms=(t2 - t1) * 1e3,
                       ledger_validate_ms=result.validate_ms, ledger_persist_ms=result.persist_ms,
                       commit_s=time.perf_counter() - t1)
        rnd.outcomes.extend(_outcomes(decision, arrivals))
        return RoundReport(height=result.height, block_hash=result.hash, prev_hash=result.prev_hash,
                           task_id=rnd.task_id,
                           winner=result.winner, score=decision.score, committed=True, outcomes=tuple(rnd.outcomes),
                           timings=timings, round_seconds=time.perf_counter() - rnd.started)

    def _store_winner(self, decision: Decision, arrivals: list[SubmissionArrival], refs: dict[str, Any]) -> None:
        """The winner's weights go straight from the object store into the ledger's artifact folder."""
        winner = decision.winner
        assert winner is not None
        arrival = next(a for a in arrivals if a.signed.message.commit == winner.commit)
        metadata = {"task_id": winner.task_id, "miner": winner.miner}
        if arrival.reveal is not None:
            metadata["sml_seed"] = arrival.reveal.message.sml_seed
        get(self.ledger.store_artifact.remote(refs[winner.commit], winner.model_hash, metadata),
            timeout=self.cfg.commit_timeout_s, what="artifact store")


def _outcome(miner: str | None, commit: str | None, verdict: str, detail: str) -> SubmissionOutcome:
    return SubmissionOutcome(miner=miner or "0" * 64, commit=commit, verdict=verdict, score=None, detail=detail)


def _outcomes(decision: Decision, arrivals: Sequence[SubmissionArrival]) -> list[SubmissionOutcome]:
    result = []
    for arrival, tally in zip(arrivals, decision.tallies):
        s = arrival.signed.message
        verdict = tally.verdict.value if tally.verdict else "undecided"
        result.append(SubmissionOutcome(miner=s.miner, commit=s.commit, verdict=verdict, score=tally.score))
    return result


def _self_handle() -> Any:
    try:
        return ray.get_runtime_context().current_actor
    except RuntimeError:  # called outside an actor (unit tests): no live progress
        return None


def _try_get(ref: Any, timeout: float) -> Any:
    try:
        return get(ref, timeout=timeout, what="call")
    except DLBCError:
        return None


def _is_own_vote(vote: Signed[Vote], validator: str) -> bool:
    """Votes are verified on receipt: by the validator that was asked, and signed by it."""
    return vote.signer == vote.message.validator == validator and crypto.is_valid_signature(vote)
