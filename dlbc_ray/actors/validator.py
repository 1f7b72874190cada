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

import threading
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import ray
import torch

from dlbc_ray import crypto
from dlbc_ray.actors import inbound
from dlbc_ray.actors._ray import get, get_retrying
from dlbc_ray.actors.lineage import Lineage, provenance_key
from dlbc_ray.actors.winners import WinnerSource
from dlbc_ray.actors.task_code import install as install_task_code
from dlbc_ray.config import ProtectionConfig, ValidatorConfig
from dlbc_ray.consensus.ballot import compute_submissions_root
from dlbc_ray.consensus.marks import compute_mark_candidates
from dlbc_ray.consensus.verdicts import Judgement, check_envelope, check_reuse, check_reveal, check_timing
from dlbc_ray.constants import SCORE_SCALE
from dlbc_ray.crypto import Identity
from dlbc_ray.errors import DLBCError, InvalidModelFile
from dlbc_ray.models import baas_fusion as baas, sml, watermark
from dlbc_ray.models.data import Split, split_hash
from dlbc_ray.models.evaluate import evaluate
from dlbc_ray.models.nets import build_net, count_parameters, net_info
from dlbc_ray.models.protect import MarkReading, layer_distance, mapping_layer, read_mark, watermark_key
from dlbc_ray.models.weights import check_architecture
from dlbc_ray.schema import Ballot, FusionVote, Signed, Submission, Task, Verdict, Vote
from dlbc_ray.schema.round_messages import BallotReply, RoundContext, SubmissionArrival, ValidatorStats

RINGS_KEPT = 4  # key rings a validator keeps (one per host and candidate set)

if TYPE_CHECKING:
    from dlbc_ray.actors.round_runner import RoundAudits
    from dlbc_ray.models.replay import TranscriptAudits


@dataclass
class _Clock:
    """Milliseconds spent per kind of work in one ballot (for the overhead benchmark)."""

    ms: dict[str, float] = field(default_factory=lambda: dict.fromkeys(ValidatorStats.model_fields, 0.0))

    def add(self, kind: str, since: float) -> float:
        now = time.perf_counter()
        self.ms[kind] += (now - since) * 1e3
        return now


@dataclass
class _Judged:
    """One submission's verdict before it is signed (near copies may still change it)."""

    sub: Submission
    weights: dict[str, np.ndarray] | None
    verdict: Verdict
    score: int
    detail: str
    seed: bytes | None = None  # the revealed mapping seed the model was scored behind

    @property
    def valid(self) -> bool:
        return self.verdict is Verdict.VALID


class Validator:
    """Verifies and scores; only validators ever receive a task's test split."""

    def __init__(self, cfg: ValidatorConfig, *, identity: Identity, protection: ProtectionConfig,
                 marks: Mapping[str, bytes], proposer: str, winners: WinnerSource | None = None) -> None:
        self.cfg, self.identity, self.protection = cfg, identity, protection
        self.proposer = proposer  # from the assembler, as marks are: it alone signs the rounds this validator judges
        # miner public key -> watermark secret, from the network's assembler at construction: no method
        # sets it (anyone could re-register a rival) and none hands it out
        self._marks: dict[str, bytes] = dict(marks)
        self._keys: dict[tuple[str, str, Any], watermark.WatermarkKey] = {}
        self._rings: dict[Any, watermark.KeyRing] = {}  # every owner's key of one host, side by side
        self._memory = threading.Lock()  # two rounds may validate at once (max_concurrency): caches and refs
        # earlier valid models (and winners read back from the chain): never handed out by any method
        self._lineage = Lineage(self._memory, winners)
        torch.set_num_threads(max(1, int(cfg.num_cpus)))
        from dlbc_ray.models import replay  # noqa: F401  warm: Lightning loads as the actor starts, not inside a ballot

    def info(self) -> dict[str, Any]:
        return {"name": self.identity.name, "public_key": self.identity.public_key, "num_cpus": self.cfg.num_cpus,
                "num_gpus": self.cfg.num_gpus, "device": "cpu", "miners_known": len(self._marks)}

    def validate(self, task: Signed[Task], test: Split, arrivals: Sequence[SubmissionArrival],
                 weight_refs: Sequence[Any], ctx: Signed[RoundContext], won_models: Collection[str] = frozenset(),
                 progress: Any = None, audits: TranscriptAudits | RoundAudits | None = None) -> BallotReply:
        """One signed ballot: a vote per submission, in arrival order; with ``audits``, each training transcript too.
        Only for a round the proposer signed (no mark oracle for strangers); every argument re-parsed first."""
        spec, ctx = inbound.round_of(task, ctx, self.proposer)  # RoundRefused before any secret is read
        test, arrivals = inbound.split(test, "test"), inbound.wires(SubmissionArrival, arrivals, "arrivals", least=1)
        weight_refs = inbound.refs(weight_refs, "weight_refs", len(arrivals))
        won_models = inbound.hashes(won_models, "won_models")
        audits = self._resolve_audits(inbound.audits(audits, "audits"))
        install_task_code(spec.code)  # the task's own code, checked against its signed hash (actors/task_code.py)
        if split_hash(test) != spec.dataset.test_hash:
            raise InvalidModelFile("test split does not match the task's test_hash", reason="data_hash")
        clock, judged = _Clock(), []
        root = compute_submissions_root([a.signed.message.commit for a in arrivals])
        owners = mark_candidates(self._lineage, self._memory, list(self._marks), self.protection, spec, ctx, arrivals)
        for arrival, ref in zip(arrivals, weight_refs):
            judged.append(self._judge(spec, test, arrival, ref, ctx, won_models, judged, clock, owners))
        t = time.perf_counter()
        near = self._resolve_copies(spec, judged)
        fresh = self._lineage.resolve(spec, test, judged, ctx, won_models, near)
        if audits is not None:  # last: a copy or a derived model is named as such, not only as a bad transcript
            self._audit(spec, ctx, root, arrivals, judged, audits)
        self._lineage.remember(spec, fresh, won_models)  # after the audit: a bad transcript is nobody's reference
        t = clock.add("checks_ms", t)
        votes = tuple(Vote(commit=j.sub.commit, verdict=j.verdict, score=j.score if j.valid else 0,
                           detail=j.detail[:200]) for j in judged)
        ballot = crypto.sign(self.identity, Ballot(task_id=ctx.task_id, round_id=ctx.round_id, submissions_root=root,
                                                   base_hash=ctx.base_hash, close_ms=ctx.submit_deadline_ms,
                                                   validator=self.identity.public_key, votes=votes), ctx.chain_id)
        clock.add("sign_ms", t)
        return BallotReply(ballots=(ballot,), stats=ValidatorStats(**clock.ms))

    def fuse(self, task: Signed[Task], test: Split, contributors: Sequence[SubmissionArrival],
             weight_refs: Sequence[Any], ctx: Signed[RoundContext]) -> tuple[Signed[FusionVote], dict[str, Any]]:
        """BaaS: fuse the accepted models (each unmapped with its revealed seed), score it and each
        leave-one-out fusion on the test split, and sign what it found (for the proposer's rounds only).

        Also returns the fused weights (a second object the caller leaves in the object store): the
        coordinator delivers the fusion the votes agreed on from a validator that made it, by hash."""
        spec, ctx = inbound.round_of(task, ctx, self.proposer)
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

    # --------------------------------------------------------------- judging

    def _judge(self, spec: Task, test: Split, arrival: SubmissionArrival, ref: Any, ctx: RoundContext,
               won: Collection[str], judged: Sequence[_Judged], clock: _Clock, owners: Sequence[str]) -> _Judged:
        sub = arrival.signed.message
        t = time.perf_counter()
        early = check_envelope(arrival.signed, ctx.task_id, ctx.chain_id) or check_timing(arrival, ctx.submit_deadline_ms)
        t = clock.add("verify_ms", t)
        if early:
            return _Judged(sub, None, early[0], 0, early[1])
        weights = self._fetch(ref)
        t = clock.add("fetch_ms", t)
        if weights is None or crypto.hash_weights(weights) != sub.model_hash:
            clock.add("hash_ms", t)
            return _Judged(sub, None, Verdict.HASH_MISMATCH, 0, "weights do not hash to model_hash")
        t = clock.add("hash_ms", t)
        net = build_net(spec.model.name, spec.model.params, spec.dataset.input_shape, spec.dataset.n_classes)
        # Ownership before reuse: a thief who copies a victim's weights and arrives first must
        # be the one rejected (stolen), never the victim (duplicate of a rejected submission).
        rejection = self._check_model(spec, net, sub, weights, arrival, ctx.chain_id, owners)
        earlier_valid = {j.sub.model_hash for j in judged if j.valid}
        rejection = rejection or check_reuse(sub.model_hash, earlier_valid, won)
        t = clock.add("checks_ms", t)
        if rejection:
            return _Judged(sub, weights, rejection[0], 0, rejection[1])
        score = self._score(spec, net, test, sub, weights, arrival)
        clock.add("eval_ms", t)
        seed = bytes.fromhex(arrival.reveal.message.sml_seed) if sub.sml_commitment and arrival.reveal else None
        return _Judged(sub, weights, Verdict.VALID, score, "", seed)

    def _audit(self, spec: Task, ctx: RoundContext, root: str, arrivals: Sequence[SubmissionArrival],
               judged: Sequence[_Judged], audits: TranscriptAudits) -> None:
        """The training itself, replayed on sampled segments, for each submission still valid."""
        from dlbc_ray.models.replay import audit_arrival, describe  # Lightning: in the validator's process only

        for arrival, j in zip(arrivals, judged):
            if not j.valid:
                continue
            outcome, cost = audit_arrival(spec, ctx, root, arrival, audits, mark=self._marks.get(j.sub.miner),
                                          protection=self.protection, validator=self.identity.public_key)
            if not outcome.passed:
                j.verdict, j.detail = Verdict.BAD_TRANSCRIPT, describe(outcome)
            else:  # evidence of the work checked: which segments, how compared, how many steps replayed
                tolerance = self.protection.transcript.tolerance
                j.detail = (f"audit: segments {','.join(map(str, cost.segments))} "
                            f"{'bitwise' if tolerance == 0 else f'within {tolerance:g}'}, {cost.replayed_steps} steps")

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

    def _check_model(self, spec: Task, net: torch.nn.Module, sub: Submission, weights: dict[str, np.ndarray],
                     arrival: SubmissionArrival, chain_id: str, owners: Sequence[str]) -> Judgement | None:
        try:
            check_architecture(net, weights)
        except DLBCError as e:
            return Verdict.WRONG_ARCHITECTURE, str(e)
        if sub.num_params != count_parameters(net):
            return Verdict.WRONG_ARCHITECTURE, f"claims {sub.num_params} parameters, the model has another count"
        seed = bytes.fromhex(arrival.reveal.message.sml_seed) if arrival.reveal else None
        if self.protection.secure_mapping and sub.sml_commitment is None:
            return Verdict.BAD_REVEAL, "no Secure Mapping Layer commitment"
        reveal = check_reveal(sub, arrival.reveal, sml.seed_commitment(seed) if seed else None, chain_id)
        return reveal or self._check_marks(spec, sub, weights, owners)

    def _check_marks(self, spec: Task, sub: Submission, weights: dict[str, np.ndarray],
                     owners: Sequence[str]) -> Judgement | None:
        """The submitter's own mark must be there and nobody else's of ``owners`` (DLBC's anti-theft rule)."""
        if not self.protection.watermark:
            return None
        for owner, mark in zip(owners, self._read_marks(spec.model.name, weights, owners)):
            if owner == sub.miner and not mark.owned:
                return Verdict.STOLEN, f"the submitter's own watermark is missing (BER {mark.ber:.3f})"
            if owner != sub.miner and mark.carried:
                return Verdict.STOLEN, (f"carries the watermark of miner {owner[:12]} ({mark.errors}/{mark.t} bit "
                                        f"errors, chance {mark.chance:.1e})")
        if sub.miner not in self._marks:
            return Verdict.STOLEN, "the submitter is not a registered miner"
        return None

    def _read_marks(self, model: str, weights: dict[str, np.ndarray],
                    owners: Sequence[str] | None = None) -> list[MarkReading]:
        """Each of ``owners``' marks in ``weights`` (every registered owner's, in registration order, when None),
        from one projection (``watermark.key_ring``: the same counts as reading key by key, one BLAS call)."""
        owners = list(self._marks) if owners is None else owners
        keys = [mark_key(self._keys, self._marks, self.protection, owner, model, weights) for owner in owners]
        if not keys:
            return []
        ring_key = (model, keys[0].layer, keys[0].x.shape[0], tuple(owners))
        with self._memory:
            if ring_key not in self._rings:
                while len(self._rings) >= RINGS_KEPT:  # a ring per candidate set: the oldest go (M x sum T each)
                    del self._rings[next(iter(self._rings))]
                self._rings[ring_key] = watermark.key_ring(keys)
            ring = self._rings[ring_key]
        errors = watermark.bit_errors(weights, ring)
        return [mark_reading(int(e), int(k.bits.shape[0]), self.protection) for e, k in zip(errors, keys)]

    def _score(self, spec: Task, net: torch.nn.Module, test: Split, sub: Submission,
               weights: dict[str, np.ndarray], arrival: SubmissionArrival) -> int:
        x = test.x
        if sub.sml_commitment is not None and arrival.reveal is not None:
            q, kind = mapping_layer(bytes.fromhex(arrival.reveal.message.sml_seed), net, spec.model.name,
                                    spec.dataset.input_shape)
            x = sml.map_inputs(test.x, q, kind)
        value = evaluate(net, weights, Split(x=x, y=test.y), metric=spec.metric, batch_size=self.cfg.eval_batch_size)
        return round(value * SCORE_SCALE)

    def _resolve_copies(self, spec: Task, judged: Sequence[_Judged]) -> set[frozenset[str]]:
        """Two valid models within ``copy_distance`` of each other are one model twice; one is a copy.

        The copy is the one that carries the other submitter's watermark (a thief can re-mark
        the host layer with its own key, but cannot scrub a mark whose key it never saw, so
        the victim's bits stay far better than chance in the copy, while the victim's model
        shows nothing of the thief's key): judged ``stolen``. When the marks do not tell,
        SN9's rule: the later one is a ``copy`` unless it beats the earlier by ``copy_epsilon``.
        Returns the near pairs (by commit): this rule has judged them, provenance leaves them be.
        """
        near: set[frozenset[str]] = set()
        for i, later in enumerate(judged):
            for earlier in judged[:i]:
                if not (later.valid and earlier.valid) or later.sub.miner == earlier.sub.miner:
                    continue
                assert later.weights is not None and earlier.weights is not None
                distance = layer_distance(later.weights, earlier.weights)
                if distance >= self.protection.copy_distance:
                    continue
                near.add(frozenset((later.sub.commit, earlier.sub.commit)))
                owner = self._copied_by_marks(spec, earlier, later)
                if owner is not None:
                    copy, original, chance = owner
                    copy.verdict, copy.detail = Verdict.STOLEN, (
                        f"a near copy (layer distance {distance:.4f}) of {original.sub.commit[:12]}, carrying its "
                        f"submitter's watermark (chance {chance:.1e})")
                elif later.score <= earlier.score + self.protection.copy_epsilon:
                    later.verdict, later.detail = Verdict.COPY, (
                        f"within {distance:.4f} of {earlier.sub.commit[:12]} without beating it")
        return near

    def _copied_by_marks(self, spec: Task, a: _Judged, b: _Judged) -> tuple[_Judged, _Judged, float] | None:
        """(copy, original, chance) when exactly one of the pair carries the other's mark beyond ``copy_owner_p``."""
        if not self.protection.watermark or a.sub.miner not in self._marks or b.sub.miner not in self._marks:
            return None
        assert a.weights is not None and b.weights is not None
        key_a = mark_key(self._keys, self._marks, self.protection, a.sub.miner, spec.model.name, b.weights)
        key_b = mark_key(self._keys, self._marks, self.protection, b.sub.miner, spec.model.name, a.weights)
        b_has_a = read_mark(b.weights, key_a, self.protection).chance
        a_has_b = read_mark(a.weights, key_b, self.protection).chance
        p = self.protection.copy_owner_p
        if b_has_a < p <= a_has_b:
            return b, a, b_has_a
        if a_has_b < p <= b_has_a:
            return a, b, a_has_b
        return None


def mark_candidates(lineage: Lineage, lock: threading.Lock, registered: Sequence[str], protection: ProtectionConfig,
                    spec: Task, ctx: RoundContext, arrivals: Sequence[SubmissionArrival]) -> tuple[str, ...]:
    """Whose marks a ballot reads (``consensus.marks``): every registered miner's in a small network, else this
    ballot's submitters' and the owners' of the earlier models on this data it compares against, so a
    submission's check does not grow with the registry."""
    with lock:
        earlier = lineage.refs.earlier(provenance_key(spec), round_id=ctx.round_id)
    return compute_mark_candidates(registered, (a.signed.message.miner for a in arrivals), (r.miner for r in earlier),
                                   all_up_to=protection.all_marks_up_to)


def mark_reading(errors: int, t: int, protection: ProtectionConfig) -> MarkReading:
    """What ``errors`` wrong bits of ``t`` mean, judged as ``protect.read_mark`` judges them."""
    chance = watermark.chance_of_matching(errors, t)
    return MarkReading(t=t, errors=errors, ber=errors / t, chance=chance, owned=errors / t <= protection.max_ber,
                       carried=chance < protection.foreign_p)


def mark_key(cache: dict[tuple[str, str, Any], watermark.WatermarkKey], marks: Mapping[str, bytes],
             protection: ProtectionConfig, owner: str, model: str,
             weights: dict[str, np.ndarray]) -> watermark.WatermarkKey:
    """``owner``'s mark key, derived once per miner and host shape (a seeded M x T Gaussian each).

    A module function, not a method: every method of an actor answers whoever holds its handle.
    """
    layer = net_info(model).watermark_layer
    cache_key = (owner, model, tuple(weights[layer].shape) if layer in weights else None)
    if cache_key not in cache:
        cache[cache_key] = watermark_key(marks[owner], owner, weights, model, protection.watermark_bits)
    return cache[cache_key]
