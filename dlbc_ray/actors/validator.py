"""A validator: holds the held-out split, judges every submission, signs one vote per submission.

Checks run cheapest first and the first failure is the verdict: envelope, timing,
weight hash, architecture, mapping-seed reveal, watermark ownership, reuse of weights
already accepted or already rewarded, then the score on the test split through the
miner's own mapping layer, then near copies of earlier valid submissions.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import ray
import torch

from dlbc_ray import crypto
from dlbc_ray.config import ProtectionConfig, ValidatorConfig
from dlbc_ray.consensus.verdicts import Judgement, check_envelope, check_reuse, check_reveal, check_timing
from dlbc_ray.constants import SCORE_SCALE
from dlbc_ray.crypto import Identity
from dlbc_ray.errors import DLBCError, InvalidModelFile
from dlbc_ray.models import baas, sml, watermark
from dlbc_ray.models.data import Split, split_hash
from dlbc_ray.models.evaluate import evaluate
from dlbc_ray.models.nets import build_net, count_parameters, net_info
from dlbc_ray.models.protect import mapping_layer, read_mark, watermark_key
from dlbc_ray.models.weights import check_architecture
from dlbc_ray.schema import FusionVote, Signed, Submission, Task, Verdict, Vote
from dlbc_ray.schema.rounds import Ballot, RoundContext, SubmissionArrival, ValidatorStats


@dataclass
class _Clock:
    """Milliseconds spent per kind of work in one ballot (for the overhead benchmark)."""

    ms: dict[str, float] = field(default_factory=lambda: dict.fromkeys(ValidatorStats.model_fields, 0.0))

    def add(self, kind: str, since: float) -> float:
        now = time.perf_counter()
        self.ms[kind] += (now - since) * 1e3
        return now


def relative_distance(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> float:
    """||a - b|| / ||b|| over all tensors; inf when the architectures differ."""
    if a.keys() != b.keys() or any(a[k].shape != b[k].shape for k in a):
        return float("inf")
    diff = sum(float(np.sum((a[k].astype(np.float64) - b[k]) ** 2)) for k in a)
    norm = sum(float(np.sum(b[k].astype(np.float64) ** 2)) for k in b)
    return (diff / max(norm, 1e-30)) ** 0.5


class Validator:
    """Verifies and scores; only validators ever receive a task's test split."""

    def __init__(self, cfg: ValidatorConfig, *, identity: Identity, protection: ProtectionConfig) -> None:
        self.cfg, self.identity, self.protection = cfg, identity, protection
        self._marks: dict[str, bytes] = {}  # miner public key -> watermark secret, told privately
        self._keys: dict[tuple[str, str, Any], watermark.WatermarkKey] = {}
        torch.set_num_threads(max(1, int(cfg.num_cpus)))

    def info(self) -> dict[str, Any]:
        return {"name": self.identity.name, "public_key": self.identity.public_key, "num_cpus": self.cfg.num_cpus,
                "num_gpus": self.cfg.num_gpus, "device": "cpu", "miners_known": len(self._marks)}

    def register_miner(self, public_key: str, watermark_secret: bytes) -> None:
        self._marks[public_key] = watermark_secret

    def validate(self, task: Signed[Task], test: Split, arrivals: Sequence[SubmissionArrival],
                 weight_refs: Sequence[Any], ctx: RoundContext, won_models: frozenset[str] = frozenset(),
                 progress: Any = None) -> Ballot:
        """One signed vote per submission, in arrival order."""
        spec = crypto.verify(task, expected_signer=task.message.requester)
        if split_hash(test) != spec.dataset.test_hash:
            raise InvalidModelFile("test split does not match the task's test_hash", reason="data_hash")
        clock, judged, votes = _Clock(), [], []
        for arrival, ref in zip(arrivals, weight_refs):
            verdict, score, detail, weights = self._judge(spec, test, arrival, ref, ctx, won_models, judged, clock)
            judged.append((arrival.signed.message, weights, score if verdict is Verdict.VALID else None))
            t = time.perf_counter()
            vote = Vote(task_id=ctx.task_id, round_id=ctx.round_id, commit=arrival.signed.message.commit, validator=self.identity.public_key,
                        verdict=verdict, score=score, detail=detail[:200])
            votes.append(crypto.sign(self.identity, vote))
            clock.add("sign_ms", t)
        return Ballot(votes=tuple(votes), stats=ValidatorStats(**clock.ms))

    def fuse(self, task: Signed[Task], test: Split, contributors: Sequence[SubmissionArrival],
             weight_refs: Sequence[Any], ctx: RoundContext) -> Signed[FusionVote]:
        """BaaS: fuse the accepted models (each unmapped with its revealed seed), score it and each
        leave-one-out fusion on the test split, and sign what it found."""
        spec = crypto.verify(task, expected_signer=task.message.requester)
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
        return crypto.sign(self.identity, vote)

    # --------------------------------------------------------------- judging

    def _judge(self, spec: Task, test: Split, arrival: SubmissionArrival, ref: Any, ctx: RoundContext,
               won: frozenset[str], judged: list[Any], clock: _Clock) -> tuple[Verdict, int, str, Any]:
        sub = arrival.signed.message
        t = time.perf_counter()
        early = check_envelope(arrival.signed, ctx.task_id) or check_timing(arrival, ctx.submit_deadline_ms)
        t = clock.add("verify_ms", t)
        if early:
            return early[0], 0, early[1], None
        weights = self._fetch(ref)
        t = clock.add("fetch_ms", t)
        if weights is None or crypto.hash_weights(weights) != sub.model_hash:
            clock.add("hash_ms", t)
            return Verdict.HASH_MISMATCH, 0, "weights do not hash to model_hash", None
        t = clock.add("hash_ms", t)
        net = build_net(spec.model.name, spec.model.params, spec.dataset.input_shape, spec.dataset.n_classes)
        # Ownership before reuse: a thief who copies a victim's weights and arrives first must
        # be the one rejected (stolen), never the victim (duplicate of a rejected submission).
        rejection = self._check_model(spec, net, sub, weights, arrival)
        earlier_valid = {s.model_hash for s, _, score in judged if score is not None}
        rejection = rejection or check_reuse(sub.model_hash, earlier_valid, won)
        t = clock.add("checks_ms", t)
        if rejection:
            return rejection[0], 0, rejection[1], weights
        score = self._score(spec, net, test, sub, weights, arrival)
        t = clock.add("eval_ms", t)
        copied = self._check_copy(sub, weights, score, judged)
        clock.add("checks_ms", t)
        return (copied[0], 0, copied[1], weights) if copied else (Verdict.VALID, score, "", weights)

    @staticmethod
    def _fetch(ref: Any) -> dict[str, np.ndarray] | None:
        try:
            weights = ray.get(ref, timeout=120) if isinstance(ref, ray.ObjectRef) else ref
        except Exception:  # a lost object or a dead miner: the weights are simply not there
            return None
        return weights if isinstance(weights, dict) else None

    def _check_model(self, spec: Task, net: torch.nn.Module, sub: Submission, weights: dict[str, np.ndarray],
                     arrival: SubmissionArrival) -> Judgement | None:
        try:
            check_architecture(net, weights)
        except DLBCError as e:
            return Verdict.WRONG_ARCHITECTURE, str(e)
        if sub.num_params != count_parameters(net):
            return Verdict.WRONG_ARCHITECTURE, f"claims {sub.num_params} parameters, the model has another count"
        seed = bytes.fromhex(arrival.reveal.message.sml_seed) if arrival.reveal else None
        if self.protection.secure_mapping and sub.sml_commitment is None:
            return Verdict.BAD_REVEAL, "no Secure Mapping Layer commitment"
        reveal = check_reveal(sub, arrival.reveal, sml.seed_commitment(seed) if seed else None)
        return reveal or self._check_marks(spec, sub, weights)

    def _check_marks(self, spec: Task, sub: Submission, weights: dict[str, np.ndarray]) -> Judgement | None:
        """The submitter's own mark must be there and nobody else's (DLBC's anti-theft rule)."""
        if not self.protection.watermark:
            return None
        for owner in self._marks:
            mark = read_mark(weights, self._key(owner, spec.model.name, weights), self.protection)
            if owner == sub.miner and not mark.owned:
                return Verdict.STOLEN, f"the submitter's own watermark is missing (BER {mark.ber:.3f})"
            if owner != sub.miner and mark.carried:
                return Verdict.STOLEN, (f"carries the watermark of miner {owner[:12]} ({mark.errors}/{mark.t} bit "
                                        f"errors, chance {mark.chance:.1e})")
        if sub.miner not in self._marks:
            return Verdict.STOLEN, "the submitter is not a registered miner"
        return None

    def _key(self, owner: str, model: str, weights: dict[str, np.ndarray]) -> watermark.WatermarkKey:
        """Keys are derived once per miner and host shape (a seeded M x T Gaussian each)."""
        layer = net_info(model).watermark_layer
        cache_key = (owner, model, tuple(weights[layer].shape) if layer in weights else None)
        if cache_key not in self._keys:
            bits = self.protection.watermark_bits
            self._keys[cache_key] = watermark_key(self._marks[owner], owner, weights, model, bits)
        return self._keys[cache_key]

    def _score(self, spec: Task, net: torch.nn.Module, test: Split, sub: Submission,
               weights: dict[str, np.ndarray], arrival: SubmissionArrival) -> int:
        x = test.x
        if sub.sml_commitment is not None and arrival.reveal is not None:
            q, kind = mapping_layer(bytes.fromhex(arrival.reveal.message.sml_seed), net, spec.model.name,
                                    spec.dataset.input_shape)
            x = sml.map_inputs(test.x, q, kind)
        accuracy = evaluate(net, weights, Split(x=x, y=test.y), batch_size=self.cfg.eval_batch_size)
        return round(accuracy * SCORE_SCALE)

    def _check_copy(self, sub: Submission, weights: dict[str, np.ndarray], score: int,
                    judged: list[Any]) -> Judgement | None:
        """SN9's rule: within copy_distance of an earlier valid model, it must beat it by epsilon."""
        for earlier, earlier_weights, earlier_score in judged:
            if earlier_score is None or earlier_weights is None:
                continue
            distance = relative_distance(weights, earlier_weights)
            if distance < self.protection.copy_distance and score <= earlier_score + self.protection.copy_epsilon:
                return Verdict.COPY, f"within {distance:.4f} of {earlier.commit[:12]} without beating it"
        return None
