"""Adversarial miners (validators: liars.py): honest until armed, then one named attack per round.

Plain subclasses of ``Miner`` and ``Validator``, made remote by ``network.assemble(...,
roles=...)`` like everyone else, so an attack uses exactly the paths an honest actor
uses. Each one is armed for the next rounds with a frozen description of the attack
(``arm``) and disarmed with ``arm(None)``; the attack suite (``dlbc_ray.attack.harness``) does it.

Simulation devices, stated plainly: a thief is given its victims' identities only to
re-derive, bit for bit, the model a victim trains this round (training is deterministic
given identity and task), standing in for intercepting it; it takes the weights and the
signed submission and nothing else (no mark secret, no mapping seed), and signs only with
its own key. A secret prober gets its rivals' actor handles and asks them for their
secrets during the window. A lying validator judges honestly first and then lies about
what it found. A cross-chain replayer holds its key on another chain too and signs its
submission there (``chain_id``), as a miner mining both chains would.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray

from dlbc_ray import crypto
from dlbc_ray.actors import inbound
from dlbc_ray.actors import reuse_plays
from dlbc_ray.actors.miner import Miner, Sealed, mine_round
from dlbc_ray.actors.reuse_plays import THIEF_MARGIN, fresh_net, own_mark
from dlbc_ray.actors.secret_probe import probe_rivals
from dlbc_ray.actors.splice_play import splice
from dlbc_ray.config import MinerConfig
from dlbc_ray.constants import SCORE_SCALE
from dlbc_ray.crypto import Identity
from dlbc_ray.models import sml
from dlbc_ray.models.data import Split
from dlbc_ray.models.nets import build_task_net, count_parameters
from dlbc_ray.models.protect import mapping_seed
from dlbc_ray.models.weights import to_numpy
from dlbc_ray.schema import Reveal, Signed, Submission, Task
from dlbc_ray.schema.round_messages import MinedSubmission, MinerStats, RoundContext, WindowClose

MinerKind = str  # a key of PLAYS: the behaviour an attack kind's plan (attack/kinds.py) arms a miner with
Weights = dict[str, np.ndarray]
__all__ = ["PLAYS", "THIEF_MARGIN", "AdversaryMiner", "AttackRecord", "MinerAttack", "MinerKind"]


@dataclass(frozen=True)
class MinerAttack:
    """What an adversarial miner does in the rounds it is armed for."""

    kind: MinerKind
    victim: str | None = None  # thief, copy-noise, forged-signature: the honest miner's name (None: the best)
    task: Signed[Task] | None = None  # thief, copy-noise: the round's task, known when armed ...
    train: Split | None = None  # ... and its training data, so the loot is ready when the round opens
    weights: Weights | None = None  # replay and its disguises (REUSES): an earlier winner's weights ...
    sml_seed: str | None = None  # ... and the mapping seed they were trained behind (hex)
    noise: float = 0.01  # copy-noise: Gaussian noise, relative to each tensor's standard deviation
    late_by_s: float = 1.0  # late: how long after the deadline the submission arrives
    rivals: Mapping[str, Any] | None = None  # secret-probe: the honest miners' actor handles, by name
    chain_id: str | None = None  # cross-chain-replay: the other chain its submission is signed for
    settle_steps: int = 5_000  # an adversary settles its own mark to the end, not to an honest step cap
    segment: int = 1  # spliced: the transcript segment whose end checkpoint is swapped (clamped before the last)


@dataclass(frozen=True)
class AttackRecord:
    """What an armed miner sent in its last round, for the suite's accounting."""

    kind: str
    commit: str
    model_hash: str
    note: str = ""
    leaks: tuple[str, ...] = ()  # secret-probe: what the rivals handed out during the window (must stay empty)


# ------------------------------------------------------------------ miners


class AdversaryMiner(Miner):
    """A miner that mines honestly until ``arm`` gives it an attack."""

    def __init__(self, cfg: MinerConfig, *, victims: Mapping[str, Identity] | None = None, **miner: Any) -> None:
        super().__init__(cfg, **miner)  # identity, protection, proposer, keep_dir, chain_id: as an honest miner's
        self.victims = dict(victims or {})
        self.attack: MinerAttack | None = None
        self.records: list[AttackRecord] = []
        self.closes: list[Signed[WindowClose]] = []  # every real close it was shown: a prober replays them
        self._leaks: tuple[str, ...] = ()
        self._signed: Signed[RoundContext] | None = None  # the round being attacked, as the proposer signed it
        self._loot: _Loot | None = None

    def arm(self, attack: MinerAttack | None) -> None:
        """Attack from the next round on (None: honest again)."""
        self.attack = attack
        self._loot = None

    def last_record(self) -> AttackRecord | None:
        return self.records[-1] if self.records else None

    @ray.method(num_returns=2)
    def mine(self, task: Signed[Task], data: Split | None, ctx: Signed[RoundContext],
             progress: Any = None) -> tuple[MinedSubmission, Weights]:
        attack = self.attack
        if attack is None or data is None:  # private shards (BaaS): no attack is written for them
            return super().mine(task, data, ctx, progress)
        self._leaks, self._signed = (), ctx  # the proposer's signed round: plays that train honestly pass it on
        _, round_ = inbound.round_of(task, ctx, self.proposer, self.chain_id)  # it attacks real rounds only, as a miner would
        mined, weights, note = PLAYS[attack.kind](self, attack, task, data, round_)
        sub = mined.signed.message
        self.records.append(AttackRecord(attack.kind, sub.commit, sub.model_hash, note, self._leaks))
        if attack.kind == "late":  # recorded first: the suite may ask while this call still sleeps
            time.sleep(max(0.0, round_.submit_deadline_ms / 1e3 + attack.late_by_s - time.time()))
        return mined, weights

    def reveal(self, close: Signed[WindowClose], commit: str) -> Signed[Reveal]:
        self.closes.append(close)
        return super().reveal(close, commit)

    # ------------------------------------------------------------- plays

    def _thief(self, a: MinerAttack, task: Signed[Task], data: Split, ctx: RoundContext) -> _Play:
        loot = self._loot_for(a, task, data, ctx)
        note = f"exact copy of {loot.victim} ({loot.submission.model_hash[:12]}), under its own mapping seed"
        own = mapping_seed(self.identity, ctx.task_id, ctx.round_id)  # the victim's stays sealed while the window is open
        return self._submit(task, ctx, loot.weights, own, template=loot.submission), loot.weights, note

    def _copy_noise(self, a: MinerAttack, task: Signed[Task], data: Split, ctx: RoundContext) -> _Play:
        loot = self._loot_for(a, task, data, ctx)
        rng = np.random.default_rng(int(ctx.round_id[:8], 16))
        noisy = {k: (v + rng.standard_normal(v.shape).astype(v.dtype) * a.noise * float(v.std()))
                 if np.issubdtype(v.dtype, np.floating) else v for k, v in loot.weights.items()}
        noisy = own_mark(self, task.message, noisy, a.settle_steps)
        note = f"{loot.victim}'s weights + {a.noise:g} noise, under its own mapping seed"
        own = mapping_seed(self.identity, ctx.task_id, ctx.round_id)
        return self._submit(task, ctx, noisy, own, template=loot.submission), noisy, note

    def _random(self, a: MinerAttack, task: Signed[Task], data: Split, ctx: RoundContext) -> _Play:
        """Untrained weights of its own init. ``bait`` leaves them unmarked, so honest validators reject
        them; ``false-claim`` sends them so, at once, claiming a perfect score: PoLe closes its window
        on the first claim of the target, and the claim, not the model, is the attack."""
        spec = task.message
        seed = int.from_bytes(self.identity.derive("untrained")[:4], "big")
        net = build_task_net(spec, seed=seed)
        bait = a.kind in ("bait", "false-claim")
        weights = to_numpy(net) if bait else own_mark(self, spec, to_numpy(net), a.settle_steps)
        note = "untrained, unmarked" if bait else "untrained, own mark settled"
        claimed = SCORE_SCALE if a.kind == "false-claim" else None
        mined = self._submit(task, ctx, weights, mapping_seed(self.identity, ctx.task_id, ctx.round_id), claimed=claimed)
        return mined, weights, note + (", claims a perfect score" if claimed else "")

    def _fake_transcript(self, a: MinerAttack, task: Signed[Task], data: Split, ctx: RoundContext) -> _Play:
        """Seed shopping: train (and record, honestly) under another round's seed, as if it had kept the best
        of several runs, and commit that run's transcript; the round's public seed is not the one it used."""
        other = ctx.model_copy(update={"round_id": hashlib.sha256(b"another seed|" + ctx.round_id.encode()).hexdigest()})
        mined, weights = mine_round(self, task.message, data, other)  # its own code: no signed round needed
        commit = mined.signed.message.commit
        self._rounds[crypto.message_hash(task.message)] = ctx  # cancels and reveals are of the real round
        self._sealed[commit] = Sealed(ctx, self._sealed[commit].seed)
        return mined, weights, "trained and recorded under another round's seed"

    def _forged(self, a: MinerAttack, task: Signed[Task], data: Split, ctx: RoundContext) -> _Play:
        victim = self.victims[a.victim or ""].public_key
        mined, weights, _ = self._random(MinerAttack("random-weights"), task, data, ctx)
        sub = mined.signed.message
        forged = sub.model_copy(update={"miner": victim,
                                        "commit": crypto.compute_commit(sub.model_hash, victim, sub.task_id)})
        signed = crypto.sign(self.identity, forged, ctx.chain_id).model_copy(update={"signer": victim})
        return MinedSubmission(signed=signed, stats=mined.stats), weights, f"claims to be {a.victim}"

    def _hash_mismatch(self, a: MinerAttack, task: Signed[Task], data: Split, ctx: RoundContext) -> _Play:
        mined, weights = super().mine(task, data, self._signed)
        first = next(iter(weights))
        shipped = {**weights, first: weights[first] + np.float32(1e-3)}
        return mined, shipped, "signs its trained weights' hash, ships others"

    def _wrong_task(self, a: MinerAttack, task: Signed[Task], data: Split, ctx: RoundContext) -> _Play:
        mined, weights, _ = self._random(MinerAttack("random-weights"), task, data, ctx)
        sub = mined.signed.message
        other = hashlib.sha256(b"another task|" + sub.task_id.encode()).hexdigest()
        moved = sub.model_copy(update={"task_id": other,
                                       "commit": crypto.compute_commit(sub.model_hash, sub.miner, other)})
        signed = crypto.sign(self.identity, moved, ctx.chain_id)
        return MinedSubmission(signed=signed, stats=mined.stats), weights, "another task"

    def _late(self, a: MinerAttack, task: Signed[Task], data: Split, ctx: RoundContext) -> _Play:
        mined, weights = super().mine(task, data, self._signed)  # an honest model; ``mine`` holds it past the deadline
        return mined, weights, f"{a.late_by_s:g} s after the deadline"

    def _probe(self, a: MinerAttack, task: Signed[Task], data: Split, ctx: RoundContext) -> _Play:
        """Ask every rival, through every method its handle exposes, for a secret while the window is open,
        then use what came back: a rival's seed for this task makes its model worth stealing."""
        rivals = dict(a.rivals or {})
        leaks, tried, seeds = probe_rivals(rivals, self._forged_closes(ctx), ctx.task_id)
        self._leaks = tuple(leaks)
        if seeds:  # it worked: the rival's model behind the rival's own mapping layer, now "ours"
            name, seed = next(iter(seeds.items()))
            loot = self._loot_for(MinerAttack("thief", victim=name), task, data, ctx)
            mined = self._submit(task, ctx, loot.weights, seed, template=loot.submission)
            return mined, loot.weights, f"{tried} probes, {len(leaks)} answered; {name}'s model under its seed"
        mined, weights, _ = self._random(MinerAttack("random-weights"), task, data, ctx)
        return mined, weights, f"{tried} probes of {len(rivals)} rivals, {len(leaks)} answered"

    def _cross_chain(self, a: MinerAttack, task: Signed[Task], data: Split, ctx: RoundContext) -> _Play:
        """An honestly trained model, its submission signed for the other chain and replayed into this round."""
        if a.chain_id is None:
            raise ValueError("a cross-chain replay needs the other chain's id")
        mined, weights = super().mine(task, data, self._signed)
        replayed = crypto.sign(self.identity, mined.signed.message, a.chain_id)
        return MinedSubmission(signed=replayed, stats=mined.stats), weights, f"signed for chain {a.chain_id[:12]}"

    def _forged_closes(self, ctx: RoundContext) -> list[Signed[WindowClose]]:
        """Every close a miner can lay hands on during the window: its own, one claiming the proposer's key,
        and the real ones it was shown in earlier rounds."""
        close = WindowClose(task_id=ctx.task_id, round_id=ctx.round_id, closed_ms=ctx.submit_deadline_ms)
        own = crypto.sign(self.identity, close, ctx.chain_id)
        return [own, own.model_copy(update={"signer": self.proposer}), *self.closes[-3:]]

    # ------------------------------------------------------------- parts (reuse plays: actors/reuse_plays.py)

    def _loot_for(self, a: MinerAttack, task: Signed[Task], data: Split, ctx: RoundContext) -> _Loot:
        loot, key = self._loot, (crypto.message_hash(task.message), ctx.round_id)
        if loot is None or loot.round != key:
            loot = self._loot = self._steal(a, task, data, ctx)
        return loot

    def _steal(self, a: MinerAttack, task: Signed[Task], data: Split, ctx: RoundContext) -> _Loot:
        """The model a victim trains in this round, re-derived in this process (plain ``Miner``s), racing it.

        Mapping seeds are per round, so the copy can only be made once the round is open. With no
        victim named, the thief takes the model with the best claimed score: the likely winner.
        """
        names = [a.victim] if a.victim else sorted(self.victims)
        loot = []
        for name in names:
            victim = Miner(self.cfg, identity=self.victims[name or ""], protection=self.protection,
                           proposer=self.proposer)
            mined, weights = victim.mine(task, data, self._signed)
            loot.append(_Loot(name or "", mined.signed.message, weights, (ctx.task_id, ctx.round_id)))
        return max(loot, key=lambda x: x.submission.claimed_score)

    def _submit(self, task: Signed[Task], ctx: RoundContext, weights: Weights, seed: bytes | None, *,
                template: Submission | None = None, claimed: int | None = None,
                transcript_root: str | None = None) -> MinedSubmission:
        """Sign ``weights`` as our own submission for ``task``, committing to ``seed``'s mapping layer."""
        spec = task.message
        task_id = crypto.message_hash(spec)
        model_hash = crypto.hash_weights(weights)
        net = fresh_net(spec)
        commit = crypto.compute_commit(model_hash, self.identity.public_key, task_id)
        self._rounds[task_id] = ctx
        self._sealed[commit] = Sealed(ctx, seed)  # revealed, like an honest miner's, against the proposer's close
        sub = Submission(task_id=task_id, miner=self.identity.public_key, model_hash=model_hash, commit=commit,
                         num_params=count_parameters(net),
                         claimed_score=claimed if claimed is not None else template.claimed_score if template else 0,
                         epochs=template.epochs if template else spec.max_epochs,
                         train_ms=template.train_ms if template else 0,
                         examples=template.examples if template else 0,
                         sml_commitment=sml.seed_commitment(seed) if seed is not None else None,
                         transcript_root=transcript_root)
        stats = MinerStats(train_s=0.0, epochs=sub.epochs, hash_ms=0.0, sign_ms=0.0, put_ms=0.0, device="cpu")
        return MinedSubmission(signed=crypto.sign(self.identity, sub, ctx.chain_id), stats=stats)


_Play = tuple[MinedSubmission, Weights, str]


@dataclass(frozen=True)
class _Loot:
    """What intercepting a victim's submission yields: the signed submission and its weights, no secret."""

    victim: str
    submission: Submission
    weights: Weights
    round: tuple[str, str]  # (task id, round id) it was made for


PLAYS: dict[str, Callable[[AdversaryMiner, MinerAttack, Signed[Task], Split, RoundContext], _Play]] = {
    "thief": AdversaryMiner._thief,
    "copy-noise": AdversaryMiner._copy_noise,
    "random-weights": AdversaryMiner._random,
    "bait": AdversaryMiner._random,
    "replay": reuse_plays.replay,
    "disguised-replay": reuse_plays.replay,
    "partial-reuse": reuse_plays.reuse,
    "layer-reset": reuse_plays.reuse,
    "fine-tuned-replay": reuse_plays.reuse,
    "pruned-replay": reuse_plays.replay,
    "forged-signature": AdversaryMiner._forged,
    "hash-mismatch": AdversaryMiner._hash_mismatch,
    "wrong-task": AdversaryMiner._wrong_task,
    "late": AdversaryMiner._late,
    "false-claim": AdversaryMiner._random,
    "secret-probe": AdversaryMiner._probe,
    "cross-chain-replay": AdversaryMiner._cross_chain,
    "fake-transcript": AdversaryMiner._fake_transcript,
    "spliced": splice,
    "distilled": reuse_plays.distill,
}
