"""One round of mining, as an explicit state machine over a group of miners and the validators.

COLLECTING (miners train and submit) -> REVEALING (mapping seeds) -> VALIDATING (signed
ballots) -> DECIDING; committing is the coordinator's job, so several rounds can run at
once and their blocks still go to the ledger one at a time. Weights move miner ->
validators -> ledger through the object store; the coordinator never holds them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from dlbc_ray import crypto
from dlbc_ray.actors._ray import Member, get, wait_each
from dlbc_ray.actors.round_parts import (RoundResult, RoundState, TaskData, assign_shards,  # re-exported too
                                        first_to_target, miner_policy, now_ms, outcome, progress_update, try_get)
from dlbc_ray.actors.transcript_asks import RoundAudits, TranscriptAsk
from dlbc_ray.config import ConsensusConfig
from dlbc_ray.crypto import Identity
from dlbc_ray.consensus import ChainState, Event
from dlbc_ray.consensus.baas import compute_contributors
from dlbc_ray.consensus.ballot import compute_round_id
from dlbc_ray.consensus.decision import RoundDecision, decide_round
from dlbc_ray.consensus.dispute import compute_challenges, select_answers
from dlbc_ray.consensus.verdicts import check_envelope, check_timing
from dlbc_ray.errors import DLBCError
from dlbc_ray.schema import Ballot, FusionVote, Signed, Task
from dlbc_ray.schema.round_messages import (
    BallotReply,
    Challenge,
    MinedSubmission,
    RoundContext,
    SubmissionArrival,
    SubmissionOutcome,
    ValidatorStats,
    WindowClose,
)

__all__ = ["RoundAudits", "RoundResult", "RoundRunner", "RoundState", "TaskData", "TranscriptAsk", "assign_shards",
           "compute_round_id", "miner_policy", "now_ms", "progress_update"]


class RoundRunner:
    """Runs COLLECTING -> REVEALING -> VALIDATING for one task on one miner group."""

    def __init__(self, cfg: ConsensusConfig, *, task: Signed[Task], data: TaskData, miners: Sequence[Member],
                 validators: Sequence[Member], base: ChainState, state: RoundState, lock: threading.Lock,
                 proposer: Identity, sink: Any = None, policy: Mapping[str, object] | None = None) -> None:
        self.cfg, self.task, self.data, self.base, self.sink = cfg, task, data, base, sink
        self.policy = policy  # the miners' hyperparameters (compute_hyperparameters): None = no transcript audits
        self.proposer = proposer  # signs the window closes that open miners' reveals
        self.miners, self.validators = list(miners), list(validators)
        self.miners_by_name = {m.name: m for m in self.miners}
        self.state, self.lock = state, lock
        self.ctx = RoundContext(chain_id=base.chain_id, round_id=state.round_id, task_id=state.task_id, base_height=base.height,
                                base_hash=base.head_hash, eval_seed=int(base.head_hash[:8], 16),
                                submit_deadline_ms=min(task.message.deadline_ms,
                                                       now_ms() + int(cfg.collect_timeout_s * 1e3)),
                                shards=assign_shards(task.message, state.task_id, data, self.miners,
                                                     cfg.validate_timeout_s))
        # the proposer's word for this round: miners train, and validators read marks, for no other round
        self.signed_ctx = crypto.sign(proposer, self.ctx, self.ctx.chain_id)
        self.outcomes: list[SubmissionOutcome] = []
        self.timings: dict[str, float] = {}
        self.closes: dict[str, Signed[WindowClose]] = {}  # commit -> the signed close that opened it
        self.fused_refs: dict[str, Any] = {}  # BaaS: validator key -> the fused weights it made, left in the store

    def run(self) -> RoundResult:
        """One round; PoLe's standing rounds reopen while no claim of the target is confirmed."""
        self._advance(Event.START)
        calls = self._start_mining()
        pending = [sub_ref for sub_ref, _ in calls.values()]
        arrivals: list[SubmissionArrival] = []
        refs: dict[str, Any] = {}
        while True:
            new, new_refs, pending = self.collect(calls, pending)
            self._advance(Event.SUBMISSIONS_CLOSED)
            arrivals += self.reveal(new)
            refs.update(new_refs)
            self._advance(Event.REVEALS_CLOSED)
            ballots = self.validate(arrivals, refs)  # every arrival so far: copies are judged across waves
            if not self._reopen(arrivals, ballots, pending):
                break
            self._advance(Event.CLAIMS_REFUTED)
        self._close(calls, pending)
        self._advance(Event.VOTES_CLOSED)
        fusion_votes = self.fuse(arrivals, ballots, refs)
        self._advance(Event.FUSION_CLOSED)
        return RoundResult(self.ctx, arrivals, ballots, refs, self.outcomes, self.timings, fusion_votes,
                           self.fused_refs)

    def _advance(self, event: Event) -> None:
        with self.lock:
            self.state.advance(event)

    def _mark(self, name: str, **changes: Any) -> None:
        with self.lock:
            self.state.set(name, **changes)

    # --------------------------------------------------------------- collect

    def _start_mining(self) -> dict[str, tuple[Any, Any]]:
        """Every miner of the group starts training; name -> (submission ref, weights ref)."""
        # Private shards (BaaS) are loaded by each miner itself; nothing of them travels.
        train = None if self.ctx.shards else self.data.train
        self._names: dict[Any, str] = {}
        calls = {m.name: m.handle.mine.remote(self.task, train, self.signed_ctx, self.sink) for m in self.miners}
        self._names = {sub_ref: name for name, (sub_ref, _) in calls.items()}
        return calls

    def collect(self, calls: dict[str, tuple[Any, Any]],
                pending: list[Any]) -> tuple[list[SubmissionArrival], dict[str, Any], list[Any]]:
        """Miners train in parallel; submissions are ordered by arrival, the commit order.

        Returns this wave's arrivals, their weight refs, and the miners still training.
        """
        t0 = time.perf_counter()
        window = max(0.0, (self.ctx.submit_deadline_ms - now_ms()) / 1e3)
        standing = self.task.message.kind == "standing"
        done, pending = first_to_target(pending, window, target=self.task.message.target, grace_s=self.cfg.grace_s,
                                             commit_timeout_s=self.cfg.commit_timeout_s) if standing else wait_each(pending, timeout=window)
        arrivals, refs, stats, verify_ms = [], {}, [], 0.0
        for ref, arrived in done:
            name = self._names[ref]
            mined = self._receive(ref, name)
            if mined is None:
                continue
            t = time.perf_counter()
            arrival = SubmissionArrival(signed=mined.signed, arrived_ms=arrived)
            judgement = check_envelope(mined.signed, self.ctx.task_id, self.ctx.chain_id) or check_timing(arrival,
                                                                                    self.ctx.submit_deadline_ms)
            verify_ms += (time.perf_counter() - t) * 1e3
            if judgement:  # would break a ledger rule: recorded here, never put in a block
                self.outcomes.append(outcome(name, mined.signed.message.miner, judgement[0].value, judgement[1]))
                continue
            arrivals.append(arrival)
            refs[mined.signed.message.commit] = calls[name][1]
            stats.append(mined.stats)
        t = self.timings
        t.update(collect_s=t.get("collect_s", 0.0) + time.perf_counter() - t0,
                 consensus_verify_ms=t.get("consensus_verify_ms", 0.0) + verify_ms,
                 train_s=max([t.get("train_s", 0.0), *(s.train_s for s in stats)]),
                 miner_hash_ms=max([t.get("miner_hash_ms", 0.0), *(s.hash_ms for s in stats)]),
                 miner_sign_ms=max([t.get("miner_sign_ms", 0.0), *(s.sign_ms for s in stats)]))
        return arrivals, refs, pending

    def _close(self, calls: dict[str, tuple[Any, Any]], pending: list[Any]) -> None:
        """The window is closed for good: the miners still training stop at their next epoch."""
        close = self.window_close(final=True) if pending else None
        for ref in pending:
            name = self._names[ref]
            self.miners_by_name[name].handle.cancel.remote(close)
            self._mark(name, stage="late")
            self.outcomes.append(outcome(name, None, "late", "did not submit before the deadline"))

    def _reopen(self, arrivals: Sequence[SubmissionArrival], ballots: Sequence[Signed[Ballot]],
                pending: Sequence[Any]) -> bool:
        """PoLe: a claim of the target the validators refute does not end the round; the miners still
        training go on until one is confirmed or the deadline (a false claim cannot stall the chain)."""
        if self.task.message.kind != "standing" or not pending or now_ms() >= self.ctx.submit_deadline_ms:
            return False
        try:
            decision = self.decide(arrivals, ballots).decision
        except DLBCError:  # no quorum or a split: the block cannot be decided by waiting longer
            return False
        if decision.winner is None:
            self.timings["refuted_claims"] = self.timings.get("refuted_claims", 0.0) + len(arrivals)
        return decision.winner is None

    def _receive(self, ref: Any, name: str) -> MinedSubmission | None:
        try:
            mined = get(ref, timeout=self.cfg.commit_timeout_s, what=f"miner {name}")
        except DLBCError as e:
            self._mark(name, stage="failed")
            self.outcomes.append(outcome(name, None, "failed", str(e)))
            return None
        return mined if isinstance(mined, MinedSubmission) else None

    # ---------------------------------------------------------------- reveal

    def window_close(self, opens: Sequence[str] = (), *, final: bool = False) -> Signed[WindowClose]:
        """The proposer's signed word that this round's window is closed: the only key to a reveal of the
        commits it ``opens``; only a ``final`` close stops miners still training (a standing window reopens)."""
        close = WindowClose(task_id=self.ctx.task_id, round_id=self.ctx.round_id, closed_ms=now_ms(),
                            opens=tuple(opens), final=final)
        return crypto.sign(self.proposer, close, self.ctx.chain_id)

    def reveal(self, arrivals: list[SubmissionArrival]) -> list[SubmissionArrival]:
        """After the window closes, each miner reveals, against the signed close, the seed it committed to."""
        t0 = time.perf_counter()
        by_key = {m.public_key: m.handle for m in self.miners}
        close = self.window_close([a.signed.message.commit for a in arrivals])  # this wave's, no later one's
        self.closes.update((a.signed.message.commit, close) for a in arrivals)  # validators' audits open with it
        asks = {a.signed.message.commit: by_key[a.signed.message.miner].reveal.remote(close, a.signed.message.commit)
                for a in arrivals if a.signed.message.sml_commitment and a.signed.message.miner in by_key}
        revealed, deadline = [], time.monotonic() + self.cfg.reveal_timeout_s
        for a in arrivals:
            commit = a.signed.message.commit
            ref = asks.get(commit)
            reveal = try_get(ref, max(0.0, deadline - time.monotonic())) if ref is not None else None
            if ref is not None and reveal is None:  # a lost reply: revealing is idempotent, so ask once more
                again = by_key[a.signed.message.miner].reveal.remote(close, commit)
                reveal = try_get(again, max(1.0, deadline - time.monotonic()))
            revealed.append(a.model_copy(update={"reveal": reveal}))
        self.timings["reveal_s"] = time.perf_counter() - t0
        return revealed

    # -------------------------------------------------------------- validate

    def validate(self, arrivals: Sequence[SubmissionArrival], refs: dict[str, Any]) -> list[Signed[Ballot]]:
        if not arrivals:
            return []
        t0 = time.perf_counter()
        weight_refs = [refs[a.signed.message.commit] for a in arrivals]
        won = dict(self.base.won_models)  # hash -> height: a validator that recovers winners takes the newest first
        audits = self.transcript_audits(arrivals)
        calls = {v.handle.validate.remote(self.task, self.data.test, list(arrivals), weight_refs, self.signed_ctx, won,
                                          self.sink, audits=audits): v for v in self.validators}
        for v in self.validators:
            self._mark(v.name, stage="validating")
        done, _ = wait_each(list(calls), timeout=self.cfg.validate_timeout_s)
        ballots: list[Signed[Ballot]] = []
        replies: list[BallotReply] = []
        voted: dict[str, tuple[Member, Signed[Ballot], BallotReply]] = {}  # validator key -> its first ballot
        for ref, _ in done:
            reply = try_get(ref, self.cfg.commit_timeout_s)
            if isinstance(reply, BallotReply):
                replies.append(reply)
                mine = self._verified(reply.ballots, calls[ref].public_key)
                # a revision comes only from the dispute trip, as an answer: one sent with the ballot answers nothing
                mine = mine[:1] + select_answers(mine[0].message, mine[1:], ()) if mine else []
                ballots.extend(mine)
                if mine:
                    voted[calls[ref].public_key] = (calls[ref], mine[0], reply)
                self._mark(calls[ref].name, stage="voted")
        self.timings.update(validate_s=time.perf_counter() - t0,
                            **{k: max((getattr(r.stats, k) for r in replies), default=0.0)
                               for k in ValidatorStats.model_fields})
        challenges = compute_challenges(((key, r.challenges) for key, (_, _, r) in voted.items()),
                                        [a.signed.message.commit for a in arrivals])
        if challenges:  # an honest round has none: no second trip, nothing more signed
            ballots += self.dispute(arrivals, challenges, {k: (m, b) for k, (m, b, _) in voted.items()}, audits)
        return ballots

    def dispute(self, arrivals: Sequence[SubmissionArrival], challenges: Sequence[Challenge],
                voted: Mapping[str, tuple[Member, Signed[Ballot]]], audits: Any) -> list[Signed[Ballot]]:
        """Every validator that voted referees the others' challenges (``consensus.dispute``): the revisions it
        signs supersede its ballot in the decision and the block; a false challenge gets no revision."""
        t0 = time.perf_counter()
        # referees answer by the deadline with what they confirmed (a miner slow to open counts against it); the
        # round waits one reply's time more, then a referee that missed it keeps its ballot: nothing stalls
        deadline_ms = now_ms() + int(self.cfg.validate_timeout_s * 1e3)
        calls = {m.handle.referee.remote(self.task, list(arrivals), self.signed_ctx, ballot, list(challenges),
                                         audits, deadline_ms): (m, ballot) for m, ballot in voted.values()}
        done, _ = wait_each(list(calls), timeout=self.cfg.validate_timeout_s + self.cfg.commit_timeout_s)
        revisions = []
        for ref, _ in done:
            reply = try_get(ref, self.cfg.commit_timeout_s)
            if isinstance(reply, BallotReply):
                member, ballot = calls[ref]
                revisions += select_answers(ballot.message, self._verified(reply.ballots, member.public_key),
                                            challenges)
        self.timings.update(dispute_s=time.perf_counter() - t0, challenges=float(len(challenges)),
                            revised_ballots=float(len(revisions)))
        return revisions

    def decide(self, arrivals: Sequence[SubmissionArrival], ballots: Sequence[Signed[Ballot]]) -> RoundDecision:
        """The round decided exactly as its block will decide it (raises NoQuorum)."""
        return decide_round([a.signed.message for a in arrivals], ballots, self.ctx.round_id,
                            self.base.params.validators, self.task.message.target, won=self.base.won_models)

    def transcript_audits(self, arrivals: Sequence[SubmissionArrival]) -> Any:
        """What validators need to audit each arrival's training transcript: the training split (a ref they
        resolve), the miners' hyperparameter policy, and per commit its close and a way to ask its miner.
        None without a policy, and for private shards (BaaS), which nobody else can replay."""
        if self.policy is None or self.ctx.shards:
            return None
        by_key = {m.public_key: m for m in self.miners}
        openers = {}
        for a in arrivals:
            sub = a.signed.message
            close, member = self.closes.get(sub.commit), by_key.get(sub.miner)
            if close is not None and member is not None:
                openers[sub.commit] = (close.signature, TranscriptAsk(member.handle, member.name, close, sub.commit,
                                                                      self.cfg.reveal_timeout_s))
        return RoundAudits(self.data.train, dict(self.policy), openers)

    # ------------------------------------------------------------------- fuse

    def fuse(self, arrivals: Sequence[SubmissionArrival], ballots: Sequence[Signed[Ballot]],
             refs: dict[str, Any]) -> list[Signed[FusionVote]]:
        """BaaS: validators fuse what they accepted; decided exactly as the block will decide it."""
        if self.task.message.fusion == "winner" or not arrivals:
            return []
        decision = self.decide(arrivals, ballots).decision
        commits = {s.commit for s in compute_contributors([a.signed.message for a in arrivals], decision)}
        if len(commits) < 2:
            return []
        t0 = time.perf_counter()
        picked = [a for a in arrivals if a.signed.message.commit in commits]
        weights = [refs[a.signed.message.commit] for a in picked]
        calls: dict[Any, tuple[Member, Any]] = {}  # vote ref -> (validator, its fused weights, left in the store)
        for v in self.validators:
            vote, fused = v.handle.fuse.options(num_returns=2).remote(self.task, self.data.test, picked, weights,
                                                                       self.signed_ctx)
            calls[vote] = (v, fused)
        done, _ = wait_each(list(calls), timeout=self.cfg.validate_timeout_s)
        found = [v for ref, _ in done for v in self._verified([try_get(ref, self.cfg.commit_timeout_s)],
                                                              calls[ref][0].public_key)]
        self.fused_refs = {calls[ref][0].public_key: calls[ref][1] for ref, _ in done}
        self.timings["fuse_s"] = time.perf_counter() - t0
        return found

    def _verified(self, signeds: Sequence[Any], validator: str) -> list[Any]:
        """Ballots and fusion votes are verified on receipt: from the validator that was asked, signed by it."""
        t = time.perf_counter()
        good = [s for s in signeds if isinstance(s, Signed) and s.signer == s.message.validator == validator
                and s.chain_id == self.ctx.chain_id and crypto.is_valid_signature(s)]
        self.timings["consensus_verify_ms"] = self.timings.get("consensus_verify_ms", 0.0) + (
            time.perf_counter() - t) * 1e3
        return good


