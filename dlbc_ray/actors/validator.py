"""A validator: holds the held-out split, judges every submission, signs one ballot per round.

Checks run cheapest first and the first failure is the verdict: envelope, timing,
weight hash, architecture, mapping-seed reveal, watermark ownership, reuse of weights
already accepted or already rewarded, then the score on the test split through the
miner's own mapping layer. Last, over the whole round, near copies: of two valid models
within ``copy_distance``, the one carrying the other's watermark (or else the later) loses;
and provenance: a valid model that computes what an earlier valid model computes, or keeps one of
its layers' learned weights (one this validator judged in an earlier round, a winner of an earlier
block, or an earlier arrival of this round by another miner) is ``derived``, whatever its weights
look like at first sight (``models.fingerprint``, ``models.alignment``).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import ray
import torch

from dlbc_ray import crypto
from dlbc_ray.actors import inbound
from dlbc_ray.actors._ray import get, get_retrying
from dlbc_ray.actors.judging import Bench, Clock, Judged
from dlbc_ray.actors.lineage import Lineage, provenance_key
from dlbc_ray.actors.transcript_asks import TranscriptAsk
from dlbc_ray.actors.winners import WinnerSource
from dlbc_ray.actors.task_code import install as install_task_code
from dlbc_ray.config import ProtectionConfig, ValidatorConfig
from dlbc_ray.consensus.ballot import compute_submissions_root
from dlbc_ray.consensus.dispute import commits_to_referee, compute_challenge, compute_revision, judge_challenge
from dlbc_ray.consensus.marks import compute_mark_candidates
from dlbc_ray.crypto import Identity
from dlbc_ray.errors import ActorUnavailable, DLBCError, InvalidMessage, InvalidModelFile
from dlbc_ray.models import baas_fusion as baas
from dlbc_ray.models.data import Split, split_hash
from dlbc_ray.schema import Ballot, FusionVote, Signed, Task, Verdict, Vote
from dlbc_ray.schema.round_messages import BallotReply, Challenge, RoundContext, SubmissionArrival, ValidatorStats

if TYPE_CHECKING:
    from dlbc_ray.actors.round_runner import RoundAudits
    from dlbc_ray.models.replay import TranscriptAudits


class Validator:
    """Verifies and scores; only validators ever receive a task's test split."""

    def __init__(self, cfg: ValidatorConfig, *, identity: Identity, protection: ProtectionConfig,
                 marks: Mapping[str, bytes], proposer: str, winners: WinnerSource | None = None,
                 chain_id: str | None = None) -> None:
        self.cfg, self.identity, self.protection = cfg, identity, protection
        # from the assembler, as marks are: the proposer alone signs the rounds this validator judges, and only
        # for this chain (the same keys may run another one)
        self.proposer, self.chain_id = proposer, chain_id
        # miner public key -> watermark secret, from the network's assembler at construction: no method
        # sets it (anyone could re-register a rival) and none hands it out
        self._marks: dict[str, bytes] = dict(marks)
        self._memory = threading.Lock()  # two rounds may validate at once (max_concurrency): caches and refs
        # every secret-reading helper lives on this plain object, never on the actor (Ray answers every method
        # of an actor's class for anyone: handle._read_marks.remote() was a mark oracle needing no round)
        self._bench = Bench(cfg, protection, self._marks, self._memory, self._fetch)
        # earlier valid models (and winners read back from the chain): never handed out by any method
        self._lineage = Lineage(self._memory, winners)
        torch.set_num_threads(max(1, int(cfg.num_cpus)))
        from dlbc_ray.models import replay  # noqa: F401  warm: Lightning loads as the actor starts, not inside a ballot

    def info(self) -> dict[str, Any]:
        return {"name": self.identity.name, "public_key": self.identity.public_key, "num_cpus": self.cfg.num_cpus,
                "num_gpus": self.cfg.num_gpus, "device": "cpu", "miners_known": len(self._marks), "pid": os.getpid()}

    def validate(self, task: Signed[Task], test: Split, arrivals: Sequence[SubmissionArrival],
                 weight_refs: Sequence[Any], ctx: Signed[RoundContext], won_models: Collection[str] = frozenset(),
                 progress: Any = None, audits: TranscriptAudits | RoundAudits | None = None) -> BallotReply:
        """One signed ballot: a vote per submission, in arrival order; with ``audits``, each training transcript too.
        Only for a round the proposer signed (no mark oracle for strangers); every argument re-parsed first."""
        spec, ctx = inbound.round_of(task, ctx, self.proposer, self.chain_id)  # RoundRefused before any secret is read
        test, arrivals = inbound.split(test, "test"), inbound.wires(SubmissionArrival, arrivals, "arrivals", least=1)
        weight_refs = inbound.refs(weight_refs, "weight_refs", len(arrivals))
        won_models = inbound.winners(won_models, "won_models")
        audits = self._resolve_audits(inbound.audits(audits, "audits"))
        install_task_code(spec.code)  # the task's own code, checked against its signed hash (actors/task_code.py)
        if split_hash(test) != spec.dataset.test_hash:
            raise InvalidModelFile("test split does not match the task's test_hash", reason="data_hash")
        clock = Clock()
        root = compute_submissions_root([a.signed.message.commit for a in arrivals])
        owners = mark_candidates(self._lineage, self._memory, list(self._marks), self.protection, spec, ctx, arrivals)
        judged = self._bench.judge_all(spec, test, arrivals, weight_refs, ctx, won_models, clock, owners)
        t = time.perf_counter()
        near = self._bench.resolve_copies(spec, judged)
        fresh = self._lineage.resolve(spec, test, judged, ctx, won_models, near)
        challenges: list[Challenge] = []
        if audits is not None:  # last: a copy or a derived model is named as such, not only as a bad transcript
            challenges = self._audit(spec, ctx, root, arrivals, judged, audits)
        self._lineage.remember(spec, fresh, won_models)  # after the audit: a bad transcript is nobody's reference
        t = clock.add("checks_ms", t)
        votes = tuple(Vote(commit=j.sub.commit, verdict=j.verdict, score=j.score if j.valid else 0,
                           detail=j.detail[:200]) for j in judged)
        ballot = crypto.sign(self.identity, Ballot(task_id=ctx.task_id, round_id=ctx.round_id, submissions_root=root,
                                                   base_hash=ctx.base_hash, close_ms=ctx.submit_deadline_ms,
                                                   validator=self.identity.public_key, votes=votes), ctx.chain_id)
        clock.add("sign_ms", t)
        return BallotReply(ballots=(ballot,), stats=ValidatorStats(**clock.ms), challenges=tuple(challenges))

    def referee(self, task: Signed[Task], arrivals: Sequence[SubmissionArrival], ctx: Signed[RoundContext],
                ballot: Signed[Ballot], challenges: Sequence[Challenge],
                audits: TranscriptAudits | RoundAudits | None = None, deadline_ms: int | None = None) -> BallotReply:
        """A dispute (``consensus.dispute``): replay each other validator's challenged segment of a submission this
        validator's own ``ballot`` voted valid; a confirmed mismatch signs a revision of that ballot (the vote
        turned ``bad_transcript``, naming segment and hashes). Nothing new is signed when every challenge fails.
        By ``deadline_ms`` (when the round stops waiting) it answers with what it confirmed: a miner that keeps it
        waiting past it has not opened the segment, so a miner cannot run the dispute out of time."""
        spec, ctx = inbound.round_of(task, ctx, self.proposer, self.chain_id)
        arrivals = inbound.wires(SubmissionArrival, arrivals, "arrivals", least=1)
        ballot = self._own_ballot(inbound.wire(Signed[Ballot], ballot, "ballot"), ctx)
        challenges = inbound.wires(Challenge, challenges, "challenges", least=1)
        audits = self._resolve_audits(inbound.audits(audits, "audits"))
        if deadline_ms is not None and (not isinstance(deadline_ms, int) or isinstance(deadline_ms, bool)):
            raise InvalidMessage("deadline_ms: not an integer", reason="malformed")
        if audits is not None and deadline_ms is not None:
            audits = replace(audits, openers={c: (sig, ByDeadline(ask, deadline_ms))
                                              for c, (sig, ask) in audits.openers.items()})
        todo = commits_to_referee(ballot.message, challenges, self.identity.public_key)
        if audits is None or not todo:
            return BallotReply(ballots=(), stats=ValidatorStats(**Clock().ms))
        install_task_code(spec.code)
        from dlbc_ray.models.replay import referee_arrival

        clock, t = Clock(), time.perf_counter()
        by_commit, rulings = {a.signed.message.commit: a for a in arrivals}, []
        for commit, asked in todo.items():
            for ch in asked if commit in by_commit else ():
                if deadline_ms is not None and _now_ms() >= deadline_ms:
                    break  # the round no longer waits: answer with what is confirmed
                seen = referee_arrival(spec, ctx, by_commit[commit], audits, ch.segment, protection=self.protection,
                                       mark=self._marks.get(by_commit[commit].signed.message.miner))
                rulings.append(judge_challenge(ch, expected=seen.expected, replayed=seen.replayed, exact=seen.exact,
                                               problem=seen.problem))
                if rulings[-1].confirmed:
                    break  # one confirmation turns the vote: the commit's other challenges cost nothing more
        t = clock.add("checks_ms", t)  # the segments replayed
        revised = compute_revision(ballot.message, rulings)
        signed = () if revised is None else (crypto.sign(self.identity, revised, ctx.chain_id),)
        clock.add("sign_ms", t)
        return BallotReply(ballots=signed, stats=ValidatorStats(**clock.ms))

    def fuse(self, task: Signed[Task], test: Split, contributors: Sequence[SubmissionArrival],
             weight_refs: Sequence[Any], ctx: Signed[RoundContext]) -> tuple[Signed[FusionVote], dict[str, Any]]:
        """BaaS: fuse the accepted models (each unmapped with its revealed seed), score it and each
        leave-one-out fusion on the test split, and sign what it found (for the proposer's rounds only).

        Also returns the fused weights (a second object the caller leaves in the object store): the
        coordinator delivers the fusion the votes agreed on from a validator that made it, by hash."""
        spec, ctx = inbound.round_of(task, ctx, self.proposer, self.chain_id)
        test = inbound.split(test, "test")
        contributors = inbound.wires(SubmissionArrival, contributors, "contributors", least=2)
        weight_refs = inbound.refs(weight_refs, "weight_refs", len(contributors))
        install_task_code(spec.code)
        parts = []
        for arrival, ref in zip(contributors, weight_refs):
            weights = self._fetch(ref)
            sub = arrival.signed.message
            if weights is None or crypto.hash_weights(weights) != sub.model_hash:
                raise InvalidModelFile(f"weights of {sub.commit[:12]} are unavailable or altered", reason="fusion")
            seed = arrival.reveal.message.sml_seed if arrival.reveal else None
            parts.append(baas.contribution(spec, weights, seed, ctx.shards.get(sub.miner, (0, sub.examples))[1]))
        scores = baas.fuse_and_score(spec, parts, test)
        vote = FusionVote(task_id=ctx.task_id, round_id=ctx.round_id, validator=self.identity.public_key,
                          rule=spec.fusion, contributors=tuple(a.signed.message.commit for a in contributors),
                          fused_hash=scores.fused_hash, score=scores.score, without=scores.without)
        return crypto.sign(self.identity, vote, ctx.chain_id), scores.weights

    def _audit(self, spec: Task, ctx: RoundContext, root: str, arrivals: Sequence[SubmissionArrival],
               judged: Sequence[Judged], audits: TranscriptAudits,
               sample: tuple[int, ...] | None = None) -> list[Challenge]:
        """The training itself, replayed on sampled segments, for each submission still valid; each replay
        mismatch is also a challenge the round's other validators referee (``consensus.dispute``)."""
        from dlbc_ray.models.replay import audit_arrival, describe  # Lightning: in the validator's process only

        challenges = []
        for arrival, j in zip(arrivals, judged):
            if not j.valid:
                continue
            outcome, cost = audit_arrival(spec, ctx, root, arrival, audits, mark=self._marks.get(j.sub.miner),
                                          protection=self.protection, validator=self.identity.public_key,
                                          sample=sample)
            if not outcome.passed:
                j.verdict, j.detail = Verdict.BAD_TRANSCRIPT, describe(outcome)
                challenge = compute_challenge(j.sub.commit, outcome, self.identity.public_key)
                challenges += [challenge] if challenge is not None else []
            else:  # evidence of the work checked: which segments, how compared, how many steps replayed
                tolerance = self.protection.transcript.tolerance
                j.detail = (f"audit: segments {','.join(map(str, cost.segments))} "
                            f"{'bitwise' if tolerance == 0 else f'within {tolerance:g}'}, {cost.replayed_steps} steps")
        return challenges

    def _own_ballot(self, ballot: Signed[Ballot], ctx: RoundContext) -> Signed[Ballot]:
        """Only a ballot this validator signed for this round is revised (nobody makes it sign another's)."""
        if ballot.signer != self.identity.public_key or ballot.message.validator != self.identity.public_key \
                or ballot.chain_id != ctx.chain_id or ballot.message.round_id != ctx.round_id \
                or not crypto.is_valid_signature(ballot):
            raise InvalidMessage("ballot: not this validator's signed ballot for this round", reason="malformed")
        return ballot

    def _resolve_audits(self, audits: TranscriptAudits | RoundAudits | None) -> TranscriptAudits | None:
        """A round's audits (rounds.RoundAudits: the training split a ref) as models.replay audits them."""
        if audits is None or not isinstance(audits.train, ray.ObjectRef):
            return audits  # type: ignore[return-value]
        from dlbc_ray.models.replay import TranscriptAudits

        train = get(audits.train, timeout=self.cfg.fetch_timeout_s, what="training split")
        return TranscriptAudits(train, audits.policy, audits.openers)

    def _fetch(self, ref: Any) -> dict[str, np.ndarray] | None:
        try:
            # an object-store read is safe to repeat: a lost reply is asked again, not judged as altered weights
            weights = (get_retrying(lambda: ref, timeout=self.cfg.fetch_timeout_s, what="submission weights",
                                    patience_s=self.cfg.fetch_timeout_s)
                       if isinstance(ref, ray.ObjectRef) else ref)
        except DLBCError:  # a lost object or a dead miner (the boundary names both): the weights are not there
            return None
        return weights if isinstance(weights, dict) else None



def _now_ms() -> int:
    return int(time.time() * 1e3)


@dataclass(frozen=True)
class ByDeadline:
    """A miner's transcript opening asked for a dispute, never waited for past ``deadline_ms``: one that comes
    later was not served in time, and the challenge stands against the miner that made the referee wait."""

    ask: Callable[[int], Any]
    deadline_ms: int

    def __call__(self, index: int) -> Any:
        left_s = (self.deadline_ms - _now_ms()) / 1e3
        if left_s <= 0:
            raise ActorUnavailable("the dispute's deadline passed before the miner opened it", reason="timeout")
        ask = replace(self.ask, timeout_s=min(self.ask.timeout_s, left_s)) if isinstance(self.ask, TranscriptAsk) \
            else self.ask
        served = ask(index)
        if _now_ms() > self.deadline_ms:
            raise ActorUnavailable("the miner opened it after the dispute's deadline", reason="timeout")
        return served


def mark_candidates(lineage: Lineage, lock: threading.Lock, registered: Sequence[str], protection: ProtectionConfig,
                    spec: Task, ctx: RoundContext, arrivals: Sequence[SubmissionArrival]) -> tuple[str, ...]:
    """Whose marks a ballot reads (``consensus.marks``): every registered miner's in a small network, else this
    ballot's submitters' and the owners' of the earlier models on this data it compares against, so a
    submission's check does not grow with the registry."""
    with lock:
        earlier = lineage.refs.earlier(provenance_key(spec), round_id=ctx.round_id)
    return compute_mark_candidates(registered, (a.signed.message.miner for a in arrivals), (r.miner for r in earlier),
                                   all_up_to=protection.all_marks_up_to)

