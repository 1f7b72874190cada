"""What a validator judges with its secrets: each submission's checks, mark readings and score.

A plain object the ``Validator`` holds (``Validator._bench``), never methods of the actor: Ray
answers every function of an actor's class, underscored or not, for whoever holds its handle
(``handle._read_marks.remote(model, weights)`` read every registered miner's mark for anyone,
with no round at all), and none of an attribute's. Only ``Validator.validate`` calls in here,
after the proposer's signed round is checked (``consensus.round_context``).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from dlbc_ray import crypto
from dlbc_ray.config import ProtectionConfig, ValidatorConfig
from dlbc_ray.consensus.verdicts import Judgement, check_envelope, check_reuse, check_reveal, check_timing
from dlbc_ray.constants import SCORE_SCALE
from dlbc_ray.errors import DLBCError, InvalidModelFile
from dlbc_ray.models import sml, watermark
from dlbc_ray.models.data import Split
from dlbc_ray.models.evaluate import evaluate
from dlbc_ray.models.nets import build_task_net, count_parameters, net_info
from dlbc_ray.models.protect import MarkReading, layer_distance, mapping_layer, read_mark, watermark_key
from dlbc_ray.models.weights import check_architecture
from dlbc_ray.schema import Submission, Task, Verdict
from dlbc_ray.schema.round_messages import RoundContext, SubmissionArrival, ValidatorStats

KeyId = tuple[str, str, Any]  # (owner, model, host shape): one mark key


@dataclass
class Clock:
    """Milliseconds spent per kind of work in one ballot (for the overhead benchmark)."""

    ms: dict[str, float] = field(default_factory=lambda: dict.fromkeys(ValidatorStats.model_fields, 0.0))

    def add(self, kind: str, since: float) -> float:
        now = time.perf_counter()
        self.ms[kind] += (now - since) * 1e3
        return now


@dataclass
class Judged:
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


class Bench:
    """The checks that need the miners' mark secrets (given by the assembler, as the validator's own are)."""

    def __init__(self, cfg: ValidatorConfig, protection: ProtectionConfig, marks: Mapping[str, bytes],
                 memory: threading.Lock, fetch: Callable[[Any], dict[str, np.ndarray] | None]) -> None:
        self.cfg, self.protection, self.marks, self.memory, self.fetch = cfg, protection, marks, memory, fetch
        self.keys = KeyCache(round(cfg.mark_key_cache_mb * (1 << 20)))

    def judge_all(self, spec: Task, test: Split, arrivals: Sequence[SubmissionArrival], refs: Sequence[Any],
                  ctx: RoundContext, won: Collection[str], clock: Clock, owners: Sequence[str]) -> list[Judged]:
        """Every arrival judged as ``judge`` does, in arrival order, with one difference in cost only: the weights
        are fetched first and every submission's marks are read together, one product per owner's key for all of
        them (``watermark.bit_errors_many``), not one pass over every key per submission."""
        received = [self.receive(arrival, ref, ctx, clock) for arrival, ref in zip(arrivals, refs)]
        t = time.perf_counter()
        net = build_task_net(spec)
        readings = self.read_marks_many(spec, [w if isinstance(w, dict) and _fits(net, w) else None
                                               for w in received], owners)
        clock.add("checks_ms", t)
        judged: list[Judged] = []
        for arrival, got, marks in zip(arrivals, received, readings):
            judged.append(got if isinstance(got, Judged) else
                          self.assess(spec, test, arrival, got, ctx, won, judged, clock, owners, marks))
        return judged

    def judge(self, spec: Task, test: Split, arrival: SubmissionArrival, ref: Any, ctx: RoundContext,
              won: Collection[str], judged: Sequence[Judged], clock: Clock, owners: Sequence[str]) -> Judged:
        got = self.receive(arrival, ref, ctx, clock)
        if isinstance(got, Judged):
            return got
        return self.assess(spec, test, arrival, got, ctx, won, judged, clock, owners)

    def receive(self, arrival: SubmissionArrival, ref: Any, ctx: RoundContext,
                clock: Clock) -> Judged | dict[str, np.ndarray]:
        """The submission's weights, or its verdict when its envelope, timing or hash already rejects it."""
        sub = arrival.signed.message
        t = time.perf_counter()
        early = check_envelope(arrival.signed, ctx.task_id, ctx.chain_id) or check_timing(arrival, ctx.submit_deadline_ms)
        t = clock.add("verify_ms", t)
        if early:
            return Judged(sub, None, early[0], 0, early[1])
        weights = self.fetch(ref)
        t = clock.add("fetch_ms", t)
        if weights is None or crypto.hash_weights(weights) != sub.model_hash:
            clock.add("hash_ms", t)
            return Judged(sub, None, Verdict.HASH_MISMATCH, 0, "weights do not hash to model_hash")
        clock.add("hash_ms", t)
        return weights

    def assess(self, spec: Task, test: Split, arrival: SubmissionArrival, weights: dict[str, np.ndarray],
               ctx: RoundContext, won: Collection[str], judged: Sequence[Judged], clock: Clock, owners: Sequence[str],
               marks: Sequence[MarkReading] | None = None) -> Judged:
        """The checks of received weights (``marks``: their readings of ``owners``, when already read)."""
        sub, t = arrival.signed.message, time.perf_counter()
        net = build_task_net(spec)
        # Ownership before reuse: a thief who copies a victim's weights and arrives first must
        # be the one rejected (stolen), never the victim (duplicate of a rejected submission).
        rejection = self.check_model(spec, net, sub, weights, arrival, ctx.chain_id, owners, marks)
        earlier_valid = {j.sub.model_hash for j in judged if j.valid}
        rejection = rejection or check_reuse(sub.model_hash, earlier_valid, won)
        t = clock.add("checks_ms", t)
        if rejection:
            return Judged(sub, weights, rejection[0], 0, rejection[1])
        score = self.score(spec, net, test, sub, weights, arrival)
        clock.add("eval_ms", t)
        seed = bytes.fromhex(arrival.reveal.message.sml_seed) if sub.sml_commitment and arrival.reveal else None
        return Judged(sub, weights, Verdict.VALID, score, "", seed)

    def check_model(self, spec: Task, net: torch.nn.Module, sub: Submission, weights: dict[str, np.ndarray],
                    arrival: SubmissionArrival, chain_id: str, owners: Sequence[str],
                    marks: Sequence[MarkReading] | None = None) -> Judgement | None:
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
        return reveal or self.check_marks(spec, sub, weights, owners, marks)

    def check_marks(self, spec: Task, sub: Submission, weights: dict[str, np.ndarray], owners: Sequence[str],
                    marks: Sequence[MarkReading] | None = None) -> Judgement | None:
        """The submitter's own mark must be there and nobody else's of ``owners`` (DLBC's anti-theft rule)."""
        if not self.protection.watermark:
            return None
        marks = self.read_marks(spec.model.name, weights, owners) if marks is None else marks
        for owner, mark in zip(owners, marks):
            if owner == sub.miner and not mark.owned:
                return Verdict.STOLEN, f"the submitter's own watermark is missing (BER {mark.ber:.3f})"
            if owner != sub.miner and mark.carried:
                return Verdict.STOLEN, (f"carries the watermark of miner {owner[:12]} ({mark.errors}/{mark.t} bit "
                                        f"errors, chance {mark.chance:.1e})")
        if sub.miner not in self.marks:
            return Verdict.STOLEN, "the submitter is not a registered miner"
        return None

    def read_marks(self, model: str, weights: dict[str, np.ndarray],
                   owners: Sequence[str] | None = None) -> list[MarkReading]:
        """Each of ``owners``' marks in ``weights`` (every registered owner's, in registration order, when None):
        the same counts as ``protect.read_mark`` key by key."""
        owners = list(self.marks) if owners is None else owners
        (errors,), t = self.bit_errors(model, weights, [weights], owners)
        return [mark_reading(int(e), t, self.protection) for e in errors]

    def read_marks_many(self, spec: Task, models: Sequence[dict[str, np.ndarray] | None],
                        owners: Sequence[str]) -> list[list[MarkReading] | None]:
        """``read_marks`` of each model, all read at once (one product per owner's key); None for a model the keys
        cannot read (no such host, another shape, non-finite: ``check_marks`` then reads it alone and rejects it as
        before) or None given."""
        out: list[list[MarkReading] | None] = [None] * len(models)
        first = next((w for w in models if w is not None), None)
        if not self.protection.watermark or first is None or not owners:
            return out
        key = mark_key(self.keys, self.marks, self.protection, owners[0], spec.model.name, first)
        fits = [i for i, w in enumerate(models) if w is not None and _reads(w, key)]
        errors, t = self.bit_errors(spec.model.name, first, [models[i] for i in fits], owners)  # type: ignore[misc]
        for i, row in zip(fits, errors):
            out[i] = [mark_reading(int(e), t, self.protection) for e in row]
        return out

    def bit_errors(self, model: str, like: dict[str, np.ndarray], models: Sequence[dict[str, np.ndarray]],
                   owners: Sequence[str]) -> tuple[np.ndarray, int]:
        """``watermark.bit_errors_many`` of ``models`` under ``owners``' keys (for ``like``'s host), and T: a few keys
        at a time, as many as the key budget holds (at least one), so a ballot that reads many owners never holds
        more keys at once than the cache keeps (64 owners at once held 512 MiB, whatever the cache). Held keys are
        read first: past the budget, reading in ballot order evicted each key just before its next ballot needed it
        (no key of 32 owners was ever found under a 20-key budget), held first, every held key is used."""
        get = lambda owner: mark_key(self.keys, self.marks, self.protection, owner, model, like)  # noqa: E731
        if not owners:
            return np.zeros((len(models), 0), dtype=np.int64), 0
        order = sorted(range(len(owners)), key=lambda i: key_id(owners[i], model, like) not in self.keys)
        first = get(owners[order[0]])
        step = max(1, self.keys.budget // key_bytes(first))
        parts = [watermark.bit_errors_many(models, [get(owners[j]) for j in order[i:i + step]])
                 for i in range(0, len(order), step)]
        errors = np.empty((len(models), len(owners)), dtype=np.int64)
        errors[:, order] = np.concatenate(parts, axis=1)
        return errors, int(first.bits.shape[0])

    def score(self, spec: Task, net: torch.nn.Module, test: Split, sub: Submission,
              weights: dict[str, np.ndarray], arrival: SubmissionArrival) -> int:
        x = test.x
        if sub.sml_commitment is not None and arrival.reveal is not None:
            q, kind = mapping_layer(bytes.fromhex(arrival.reveal.message.sml_seed), net, spec.model.name,
                                    spec.dataset.input_shape)
            x = sml.map_inputs(test.x, q, kind)
        value = evaluate(net, weights, Split(x=x, y=test.y), metric=spec.metric, batch_size=self.cfg.eval_batch_size)
        return round(value * SCORE_SCALE)

    def resolve_copies(self, spec: Task, judged: Sequence[Judged]) -> set[frozenset[str]]:
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
                owner = self.copied_by_marks(spec, earlier, later)
                if owner is not None:
                    copy, original, chance = owner
                    copy.verdict, copy.detail = Verdict.STOLEN, (
                        f"a near copy (layer distance {distance:.4f}) of {original.sub.commit[:12]}, carrying its "
                        f"submitter's watermark (chance {chance:.1e})")
                elif later.score <= earlier.score + self.protection.copy_epsilon:
                    later.verdict, later.detail = Verdict.COPY, (
                        f"within {distance:.4f} of {earlier.sub.commit[:12]} without beating it")
        return near

    def copied_by_marks(self, spec: Task, a: Judged, b: Judged) -> tuple[Judged, Judged, float] | None:
        """(copy, original, chance) when exactly one of the pair carries the other's mark beyond ``copy_owner_p``."""
        if not self.protection.watermark or a.sub.miner not in self.marks or b.sub.miner not in self.marks:
            return None
        assert a.weights is not None and b.weights is not None
        key_a = mark_key(self.keys, self.marks, self.protection, a.sub.miner, spec.model.name, b.weights)
        key_b = mark_key(self.keys, self.marks, self.protection, b.sub.miner, spec.model.name, a.weights)
        b_has_a = read_mark(b.weights, key_a, self.protection).chance
        a_has_b = read_mark(a.weights, key_b, self.protection).chance
        p = self.protection.copy_owner_p
        if b_has_a < p <= a_has_b:
            return b, a, b_has_a
        if a_has_b < p <= b_has_a:
            return a, b, a_has_b
        return None


def _fits(net: torch.nn.Module, weights: dict[str, np.ndarray]) -> bool:
    """Whether ``weights`` fit the task's net (what ``check_model`` asks before any mark is read)."""
    try:
        check_architecture(net, weights)
    except DLBCError:
        return False
    return True


def _reads(weights: dict[str, np.ndarray], key: watermark.WatermarkKey) -> bool:
    """Whether ``key`` can read ``weights``' host (the checks of ``watermark.host_vector``)."""
    try:
        watermark.host_vector(weights, key)
    except InvalidModelFile:
        return False
    return True


def mark_reading(errors: int, t: int, protection: ProtectionConfig) -> MarkReading:
    """What ``errors`` wrong bits of ``t`` mean, judged as ``protect.read_mark`` judges them."""
    chance = watermark.chance_of_matching(errors, t)
    return MarkReading(t=t, errors=errors, ber=errors / t, chance=chance, owned=errors / t <= protection.max_ber,
                       carried=chance < protection.foreign_p)


class KeyCache:
    """Mark keys by ``KeyId``, least recently used first evicted once they hold more than ``budget`` bytes.

    A validator reads the same owners' keys ballot after ballot, but a key per registered miner (8 MiB on the mlp
    host) kept forever grew its memory with the registry. An evicted key is derived again, bitwise the same (a
    seeded draw), so only time is spent, never a verdict changed. Iteration reads, oldest first, moving nothing.
    """

    def __init__(self, budget: int) -> None:
        self.budget, self.held = budget, 0
        self._keys: OrderedDict[KeyId, watermark.WatermarkKey] = OrderedDict()

    def get(self, kid: KeyId) -> watermark.WatermarkKey | None:
        key = self._keys.get(kid)
        if key is not None:
            self._keys.move_to_end(kid)
        return key

    def __setitem__(self, kid: KeyId, key: watermark.WatermarkKey) -> None:
        old = self._keys.pop(kid, None)
        self.held += key_bytes(key) - (key_bytes(old) if old is not None else 0)
        self._keys[kid] = key
        while self.held > self.budget and self._keys:
            self.held -= key_bytes(self._keys.popitem(last=False)[1])

    def __contains__(self, kid: object) -> bool:
        return kid in self._keys

    def __iter__(self) -> Iterator[KeyId]:
        return iter(list(self._keys))

    def __len__(self) -> int:
        return len(self._keys)


def key_bytes(key: watermark.WatermarkKey) -> int:
    """What one key holds: X (M x T float32) and its bits (``xt`` is built only by a training regularizer)."""
    return int(key.x.nbytes + key.bits.nbytes)


def key_id(owner: str, model: str, weights: dict[str, np.ndarray]) -> KeyId:
    layer = net_info(model).watermark_layer
    return owner, model, tuple(weights[layer].shape) if layer in weights else None


def mark_key(cache: KeyCache | MutableMapping[KeyId, watermark.WatermarkKey], marks: Mapping[str, bytes],
             protection: ProtectionConfig, owner: str, model: str,
             weights: dict[str, np.ndarray]) -> watermark.WatermarkKey:
    """``owner``'s mark key, derived once per miner and host shape (a seeded M x T Gaussian each) while ``cache``
    keeps it.

    A module function, not a method: every method of an actor answers whoever holds its handle.
    """
    cache_key = key_id(owner, model, weights)
    key = cache.get(cache_key)
    if key is None:
        key = watermark_key(marks[owner], owner, weights, model, protection.watermark_bits)
        cache[cache_key] = key
    return key
