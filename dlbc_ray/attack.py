"""The adversary suite: each threat of DESIGN.md played for real against a local network.

One network serves every kind and trial: miners ``miner-0`` and ``miner-1`` are honest,
``miner-2`` is an ``AdversaryMiner``, ``validator-0``/``-1`` are honest and ``validator-2``
/``-3`` are ``AdversaryValidator``s (honest until armed). One honest round runs first (every
actor warm; a winner for ``replay``). Before each trial the suite arms the adversaries for
one kind and disarms them after; each trial is one real round on a fresh task. In the
validator kinds ``miner-2`` sends *bait*: an untrained, unmarked model every honest validator
rejects, so that an "always approve" liar has something to lie about.

How the adversaries play (adversary.py): the thief and the copier are armed with the task,
re-derive both honest models (training is deterministic) and take the one with the best
claimed score, so they submit first; they get the weights only, never a victim's mapping
seed, so they commit to their own; the copier adds 1% noise and settles its own mark to
the end, as a capable adversary would; random weights and replays also carry their own mark.
The secret prober holds the honest miners' actor handles and, while the window is open,
calls every method they expose with every argument it can make (its own window closes,
one claiming the proposer's key, real closes of earlier rounds).
The cross-chain replayer holds keys that also sign on another chain (the same identities
under another genesis): the requester's transfer and task signed there are sent to the
consensus actor here, and ``miner-2`` signs its honestly trained submission for that chain.
The dropping proposer is the suite itself, holding the consensus key: it runs an honest
round with the real miners and validators, signs the block without the best submission
(``drop_best``) and hands it to the ledger before the honest block.

Definitions, per trial (a kind's row sums them over its trials):

``false_positives``
    honest miners (``miner-0``, ``miner-1``) whose submission the round did not accept:
    dropped on arrival (an outcome naming the actor: bad signature, wrong task, late,
    failed) or, when a block was committed, not decided ``valid`` in it. A round that
    decides nothing (``too-many-liars``) counts only the drops.
``honest_winner_kept``
    a block was committed, both honest submissions are in it, and its winner is the one
    honest validators alone would pick among honest miners alone: the best median of the
    honest validators' (all but this trial's liars) valid scores that meets the target,
    earliest on ties, or no winner if none does. Training and scoring are deterministic,
    so this is the winner of the same round without the adversary. For
    ``too-many-liars``: no block was committed at all (the chain did not move).
``detected``
    thief: its submission is in the block, decided ``stolen`` or ``duplicate``, and does not
        win. copy-noise: decided ``stolen`` or ``copy``, and does not win.
    random-weights: never wins: decided a rejection, or accepted with a median below the
        task's target or below the best honest median.
    replay: the latest winning weights in the home's artifact store, decided ``replay`` or
        ``stolen``, and not the winner.
    disguised-replay: the same earlier winner with its hidden units permuted and rescaled (the
        same function, the old owner's mark scrambled), re-mapped to the replayer's own Secure
        Mapping Layer and the replayer's own mark written; decided ``derived`` (or ``stolen``)
        and not the winner.
    partial-reuse: the same earlier winner, the layer hosting its owner's mark re-initialised,
        then the task's epochs of training with the thief's own mark; decided ``derived`` (or
        ``stolen``) and not the winner.
    forged-signature / wrong-task / late: the round's outcomes record the adversary's
        sending with ``bad_signature`` / ``wrong_task`` / ``late``, and its commit is not
        in the block. hash-mismatch: in the block, decided ``hash_mismatch``, not the winner.
    lying-validators: ``validator-3`` lies (trial t: random scores, always approve, always
        reject, cycling) and at least one of its votes in the block disagrees with the
        decided tally (valid or not, or the score of an accepted submission).
    equivocating-validator: the block holds equivocation evidence against ``validator-3``
        and none of its votes.
    too-many-liars: ``validator-2`` and ``-3`` (f = 2 >= n/3) reject the best submission;
        the round commits no block and says why (a split or missing quorum).

    secret-probe: no rival answered any probe with a secret (a reveal of its seed for this
        task, raw bytes, a key or a mapping matrix), and the adversary does not win.
    cross-chain-replay: the replayed transfer and task are refused ``wrong_chain``, the
        replayed submission is dropped on arrival ``wrong_chain`` and not in the block, and
        the chain moved by the round's block alone.
    proposer-drop: the block without the best submission is refused ``ballot_set``, and the
        honest block of the same round commits after it (the chain moved by one block).

    fake-transcript: a model honestly trained and recorded, but under another round's training seed
        (seed shopping): the transcript it commits is not the run the round's public seed derives;
        decided ``bad_transcript`` and not the winner.

    false-claim: PoLe's standing task; the adversary sends untrained weights at once, claiming
        a perfect score. Detected when it does not win and a block is still committed: the
        validators refute the claim and the window reopens for the honest miners still
        training. The honest winner is kept when any honest miner wins (PoLe is a race).

Known gaps, run by name or with ``gaps`` (not in ``all``): none at present.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dlbc_ray.config import MINIMAL, NetworkConfig, network_config
from dlbc_ray.consensus.baas import compute_delivered
from dlbc_ray.consensus.decision import compute_winner, decide
from dlbc_ray.consensus.proposal import seal
from dlbc_ray.consensus.quorum import compute_tally
from dlbc_ray.consensus.settlement import compute_settlement
from dlbc_ray.consensus.state import ChainState
from dlbc_ray.consensus.validation import get_block_task
from dlbc_ray.constants import SCORE_SCALE
from dlbc_ray.errors import ConfigError
from dlbc_ray.home import Home
from dlbc_ray.crypto import Identity
from dlbc_ray.schema import Block, PostTaskTx, Signed, Task, Verdict
from dlbc_ray.schema.rounds import RoundReport, SubmissionOutcome

if TYPE_CHECKING:  # torch and Ray load only when a network is assembled
    from dlbc_ray.actors.adversary import AttackRecord, MinerAttack, ValidatorLie

HONEST_MINERS = ("miner-0", "miner-1")
ADVERSARY = "miner-2"
LIARS = ("validator-3", "validator-2")  # the first lies alone (f = 1 < n/3); both in too-many-liars
LIE_CYCLE = ("random", "approve", "reject")
KINDS = ("thief", "copy-noise", "random-weights", "replay", "disguised-replay", "partial-reuse", "forged-signature",
         "hash-mismatch", "wrong-task", "late", "lying-validators", "equivocating-validator", "too-many-liars",
         "false-claim", "secret-probe",
         "cross-chain-replay", "proposer-drop", "fake-transcript")
KNOWN_GAPS: tuple[str, ...] = ()


def attack_config(window_s: float = 20.0) -> NetworkConfig:
    """MINIMAL with the adversary as a third miner and a short submission window (``late`` waits it out)."""
    consensus = MINIMAL.consensus.model_copy(update={"collect_timeout_s": window_s})
    return network_config(MINIMAL, miners=3, validators=4, consensus=consensus.model_dump())


def check_kinds(kind: str) -> tuple[str, ...]:
    """'all' (the kinds the defenses must stop), 'gaps' (known gaps), or one kind by name."""
    if kind in ("all", "gaps"):
        return KINDS if kind == "all" else KNOWN_GAPS
    if kind not in KINDS + KNOWN_GAPS:
        raise ConfigError(f"unknown attack kind {kind!r}; use 'all', 'gaps' or one of "
                          f"{', '.join(KINDS + KNOWN_GAPS)}", reason="kind")
    return (kind,)


# ------------------------------------------------------------------ results


@dataclass(frozen=True)
class Trial:
    """Everything one round left behind that the definitions above read."""

    kind: str
    index: int
    report: RoundReport
    block: Block | None
    height_before: int
    height_after: int
    record: AttackRecord | None
    keys: dict[str, str]  # actor name -> public key
    liars: tuple[str, ...]
    target: int
    refusals: dict[str, str] = field(default_factory=dict)  # what was replayed or forged -> the reason refused

    def key(self, name: str) -> str:
        return self.keys[name]


@dataclass(frozen=True)
class TrialResult:
    kind: str
    index: int
    detected: bool
    honest_winner_kept: bool
    false_positives: int
    how: str
    seconds: float


@dataclass(frozen=True)
class KindResult:
    kind: str
    trials: int
    detected: int
    honest_winner_kept: int
    false_positives: int
    how: tuple[str, ...] = field(default=())

    @property
    def passed(self) -> bool:
        return self.detected == self.honest_winner_kept == self.trials and self.false_positives == 0

    def as_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "trials": self.trials, "detected": self.detected,
                "honest_winner_kept": self.honest_winner_kept, "false_positives": self.false_positives}


def summarize(kind: str, results: Sequence[TrialResult]) -> KindResult:
    return KindResult(kind, len(results), sum(r.detected for r in results),
                      sum(r.honest_winner_kept for r in results), sum(r.false_positives for r in results),
                      tuple(r.how for r in results))


def judge(trial: Trial, seconds: float = 0.0) -> TrialResult:
    detected, how = DETECTORS[trial.kind](trial)
    return TrialResult(trial.kind, trial.index, detected, is_honest_winner_kept(trial), count_false_positives(trial),
                       how, seconds)


# -------------------------------------------------------------- definitions


def _verdict(outcome: SubmissionOutcome | None) -> str:
    return "none" if outcome is None else str(getattr(outcome.verdict, "value", outcome.verdict))


def decided(trial: Trial, commit: str | None) -> SubmissionOutcome | None:
    """The block's decision on one submission (outcomes with a commit come from the decision)."""
    return next((o for o in trial.report.outcomes if commit and o.commit == commit), None)


def dropped(trial: Trial, name: str) -> SubmissionOutcome | None:
    """An outcome recorded on arrival (no commit) for what actor ``name`` sent."""
    return next((o for o in trial.report.outcomes if o.commit is None and o.detail.startswith(f"{name}:")), None)


def count_false_positives(trial: Trial) -> int:
    race = trial.kind == "false-claim"  # PoLe: miners still training when the window closes lose the race

    def refused(name: str) -> bool:
        cut = dropped(trial, name)
        if cut and race and _verdict(cut) == Verdict.LATE.value:
            return False
        if cut:
            return True
        accepted = any(o.miner == trial.key(name) and o.commit and _verdict(o) == Verdict.VALID.value
                       for o in trial.report.outcomes)
        return trial.report.committed and not accepted

    return sum(refused(n) for n in HONEST_MINERS)


def honest_choice(trial: Trial) -> str | None:
    """The winner honest validators alone would pick among honest miners alone (None: nobody)."""
    if trial.block is None:
        return None
    honest_validators = {k for n, k in trial.keys.items() if n.startswith("validator-") and n not in trial.liars}
    miners = {trial.key(n) for n in HONEST_MINERS}
    subs = [s.message for s in trial.block.submissions if s.message.miner in miners]
    votes = [v.message for v in trial.block.votes if v.message.validator in honest_validators]
    tallies = [compute_tally(s.commit, [v for v in votes if v.commit == s.commit], len(honest_validators))
               for s in subs]
    winner = compute_winner(subs, tallies, trial.target)
    return winner.miner if winner else None


def is_honest_winner_kept(trial: Trial) -> bool:
    if trial.kind == "too-many-liars":
        return not trial.report.committed and trial.height_after == trial.height_before
    if trial.kind == "false-claim":  # a race: any honest miner first to the target is the honest outcome
        return trial.report.committed and trial.report.winner in {trial.key(n) for n in HONEST_MINERS}
    if trial.block is None:
        return False
    present = {s.message.miner for s in trial.block.submissions}
    return all(trial.key(n) in present for n in HONEST_MINERS) and trial.block.header.winner == honest_choice(trial)


def _adversary_rejected(*verdicts: str) -> Callable[[Trial], tuple[bool, str]]:
    def detect(trial: Trial) -> tuple[bool, str]:
        outcome = decided(trial, trial.record.commit if trial.record else None)
        won = trial.report.winner == trial.key(ADVERSARY)
        return _verdict(outcome) in verdicts and not won, _verdict(outcome)

    return detect


def _adversary_dropped(verdict: str) -> Callable[[Trial], tuple[bool, str]]:
    def detect(trial: Trial) -> tuple[bool, str]:
        outcome = dropped(trial, ADVERSARY)
        commits = {s.message.commit for s in trial.block.submissions} if trial.block else set()
        in_block = trial.record is not None and trial.record.commit in commits
        return _verdict(outcome) == verdict and not in_block, _verdict(outcome)

    return detect


def _never_wins(trial: Trial) -> tuple[bool, str]:
    outcome = decided(trial, trial.record.commit if trial.record else None)
    if outcome is None or trial.report.winner == trial.key(ADVERSARY):
        return False, _verdict(outcome)
    if _verdict(outcome) != Verdict.VALID.value:
        return True, _verdict(outcome)
    honest = [o.score or 0 for o in trial.report.outcomes
              if o.commit and o.miner in {trial.key(n) for n in HONEST_MINERS} and _verdict(o) == "valid"]
    score = outcome.score or 0
    return score < trial.target or score < max(honest, default=0), f"valid at {score / SCORE_SCALE:.2f}"


def _liar_caught(trial: Trial) -> tuple[bool, str]:
    if trial.block is None:
        return False, f"no block: {trial.report.failure}"
    liar = trial.key(LIARS[0])
    tallies = {o.commit: o for o in trial.report.outcomes if o.commit}
    wrong = 0
    for vote in (v.message for v in trial.block.votes if v.message.validator == liar):
        o = tallies.get(vote.commit)
        says_valid, is_valid = vote.verdict is Verdict.VALID, _verdict(o) == Verdict.VALID.value
        wrong += says_valid != is_valid or (says_valid and o is not None and o.score != vote.score)
    return wrong > 0, f"{LIE_CYCLE[trial.index % len(LIE_CYCLE)]}: {wrong} lies seen"


def _equivocation_evidenced(trial: Trial) -> tuple[bool, str]:
    if trial.block is None:
        return False, f"no block: {trial.report.failure}"
    liar = trial.key(LIARS[0])
    evidence = [e for e in trial.block.evidence if e.first.message.validator == liar]
    votes = [v for v in trial.block.votes if v.message.validator == liar]
    return bool(evidence) and not votes, f"evidence x{len(evidence)}, {len(votes)} votes kept"


def _failed_safely(trial: Trial) -> tuple[bool, str]:
    failure = trial.report.failure
    reason = "split" if "split" in failure else "quorum" if "quorum" in failure else ""
    unmoved = not trial.report.committed and trial.height_after == trial.height_before
    return bool(reason) and unmoved, f"no block ({reason or failure[:40]})" if unmoved else "committed"


def _claim_ignored(trial: Trial) -> tuple[bool, str]:
    """PoLe: a false claim of the target must not win, nor stall the chain by cutting honest miners off."""
    cut = [n for n in HONEST_MINERS if _verdict(dropped(trial, n)) == Verdict.LATE.value]
    won = trial.report.winner == trial.key(ADVERSARY)
    refuted = int(trial.report.timings.get("refuted_claims", 0))
    how = f"{refuted} claim(s) refuted, {len(cut)} honest cut off" + ("" if trial.report.committed else ", no block")
    return trial.report.committed and len(cut) < len(HONEST_MINERS) and not won, how


def _nothing_leaked(trial: Trial) -> tuple[bool, str]:
    """Secrets are sealed: every probe of a rival during the window was refused or answered nothing secret."""
    leaks = trial.record.leaks if trial.record else ("no record",)
    won = trial.report.winner == trial.key(ADVERSARY)
    how = trial.record.note if trial.record else "no record"
    return not leaks and not won, how + (f"; leaked: {', '.join(leaks)}" if leaks else "")


def _replays_refused(trial: Trial) -> tuple[bool, str]:
    """Nothing signed for another chain moves this one: not a transfer, not a task, not a submission."""
    outcome = dropped(trial, ADVERSARY)
    in_block = trial.block is not None and trial.record is not None and \
        trial.record.commit in {s.message.commit for s in trial.block.submissions}
    moved = trial.height_after - trial.height_before - int(trial.report.committed)
    refused = [trial.refusals.get(what) for what in ("transfer", "task")]
    how = f"transfer {refused[0]}, task {refused[1]}, submission {_verdict(outcome)}"
    return (refused == ["wrong_chain"] * 2 and _verdict(outcome) == Verdict.WRONG_CHAIN.value and not in_block
            and moved == 0), how + (f", {moved} extra block(s)" if moved else "")


def _drop_refused(trial: Trial) -> tuple[bool, str]:
    """The censoring block is refused for its ballots, and the honest block of the round still commits."""
    refused = trial.refusals.get("block without the best submission", "not tried")
    moved = trial.height_after - trial.height_before
    how = f"forged block {refused}, honest block " + (f"{trial.report.height}" if trial.report.committed else
                                                       f"lost ({trial.report.failure[:60]})")
    return refused == "ballot_set" and trial.report.committed and moved == 1, how


DETECTORS: dict[str, Callable[[Trial], tuple[bool, str]]] = {
    "thief": _adversary_rejected(Verdict.STOLEN.value, Verdict.DUPLICATE.value),
    "copy-noise": _adversary_rejected(Verdict.STOLEN.value, Verdict.COPY.value),
    "random-weights": _never_wins,
    "replay": _adversary_rejected(Verdict.REPLAY.value, Verdict.STOLEN.value),
    "disguised-replay": _adversary_rejected(Verdict.DERIVED.value, Verdict.STOLEN.value),
    "partial-reuse": _adversary_rejected(Verdict.DERIVED.value, Verdict.STOLEN.value),
    "forged-signature": _adversary_dropped(Verdict.BAD_SIGNATURE.value),
    "wrong-task": _adversary_dropped(Verdict.WRONG_TASK.value),
    "late": _adversary_dropped(Verdict.LATE.value),
    "hash-mismatch": _adversary_rejected(Verdict.HASH_MISMATCH.value),
    "lying-validators": _liar_caught,
    "equivocating-validator": _equivocation_evidenced,
    "too-many-liars": _failed_safely,
    "false-claim": _claim_ignored,
    "secret-probe": _nothing_leaked,
    "cross-chain-replay": _replays_refused,
    "proposer-drop": _drop_refused,
    "fake-transcript": _adversary_rejected(Verdict.BAD_TRANSCRIPT.value),
}


def drop_best(block: Block, state: ChainState, proposer: Identity) -> Block:
    """What a proposer that censors the winner signs: ``block`` without its best submission and every vote and
    piece of evidence on it, re-decided and re-settled over the rest, so that only the ballots give it away
    (pure; ``state`` is the chain after the block's parent)."""
    task, post_index = get_block_task(block, state)
    culprits = {e.first.message.validator for e in block.evidence}
    subs, votes = [s.message for s in block.submissions], [v.message for v in block.votes]
    honest = decide(subs, votes, state.params.validators, task.target, excluded=culprits, won=state.won_models)
    ranked = sorted((t for t in honest.tallies if t.accepted), key=lambda t: t.score or 0, reverse=True)
    best = honest.winner.commit if honest.winner else ranked[0].commit if ranked else None
    if best is None:
        raise ValueError(f"block {block.header.height} accepted no submission to drop")
    kept = tuple(s for s in block.submissions if s.message.commit != best)
    kept_votes = tuple(v for v in block.votes if v.message.commit != best)
    evidence = tuple(e for e in block.evidence if e.first.message.commit != best)
    decision = decide([s.message for s in kept], [v.message for v in kept_votes], state.params.validators,
                      task.target, excluded={e.first.message.validator for e in evidence}, won=state.won_models)
    balances = dict(state.balances)
    if post_index >= 0:
        balances[task.requester] = max(0, balances.get(task.requester, 0) - task.reward)
    task_id = block.header.task_id or ""
    posting = tuple(tx for tx in block.txs if isinstance(tx, PostTaskTx))
    txs = posting + compute_settlement(task_id, task, [s.message for s in kept], decision, state.params, balances)
    header = block.header.model_copy(update=compute_delivered(decision, None))
    body = block.model_copy(update={"submissions": kept, "votes": kept_votes, "evidence": evidence, "txs": txs})
    return seal(header, body, proposer)


# ------------------------------------------------------------------ network


class AttackNetwork:
    """One local network with the adversaries in place, reused by every kind and trial."""

    def __init__(self, home: Home, cfg: NetworkConfig | None = None) -> None:
        self.home, self.cfg = home, cfg or attack_config()
        self.net: Any = None
        self.last: Trial | None = None  # the latest trial, for tests and post-mortems
        self._other_chain: str | None = None

    def __enter__(self) -> AttackNetwork:
        import ray

        from dlbc_ray.actors.adversary import AdversaryMiner, AdversaryValidator
        from dlbc_ray.actors.rounds import TaskData
        from dlbc_ray.models.data import load_builtin
        from dlbc_ray.network import Role, assemble, check_home, load_identities

        check_home(self.home, self.cfg)
        ids = load_identities(self.home, self.cfg)
        victims = {i.name: i for i in ids.miners if i.name in HONEST_MINERS}
        roles = {ADVERSARY: Role(AdversaryMiner, {"victims": victims}),
                 **{name: Role(AdversaryValidator) for name in LIARS}}
        self.net = assemble(self.cfg, self.home, ids, roles=roles)
        self.bundle = load_builtin(self.cfg.task.dataset, cache_dir=self.home.datasets)
        self.data = TaskData(train=ray.put(self.bundle.train), test=ray.put(self.bundle.test))
        members = self.net.miners + self.net.validators
        self.handles = {m.name: m.handle for m in members}
        self.keys = {m.name: m.public_key for m in members}
        return self

    def __exit__(self, *exc: object) -> None:
        from dlbc_ray.network import teardown

        if self.net is not None:
            teardown(self.net)

    # -------------------------------------------------------------- rounds

    def warm_up(self) -> RoundReport:
        """One round with everyone honest: every actor warm, and a winner for ``replay`` to replay."""
        return self._round(self._task())

    def trial(self, kind: str, index: int) -> TrialResult:
        t0 = time.perf_counter()
        task = self._task()
        attack, lies = self.plan(kind, index, task)
        self._arm(attack, lies)
        refusals: dict[str, str] = {}
        try:
            before = self._height()
            if kind == "cross-chain-replay":
                refusals = self.replay_from_another_chain()
            if kind == "proposer-drop":
                report, refusals = self.drop_best_as_proposer(task)
            else:
                report = self._round(None if kind == "false-claim" else task)
            record = None if attack is None else self._get(self.handles[ADVERSARY].last_record.remote(),
                                                           "adversary record")
        finally:
            self._arm(None, {})
        block = self._get(self.net.ledger.blocks.remote(report.height, report.height + 1), "ledger")[0] \
            if report.committed and report.height is not None else None
        target = block.header.difficulty if block and block.header.difficulty is not None else \
            round(self.cfg.task.target * SCORE_SCALE)
        self.last = Trial(kind, index, report, block, before, self._height(), record, self.keys, tuple(lies), target,
                          refusals)
        return judge(self.last, time.perf_counter() - t0)

    def plan(self, kind: str, index: int, task: Signed[Task]) -> tuple[MinerAttack | None, dict[str, ValidatorLie]]:
        """The adversaries' parts in trial ``index`` of ``kind`` on ``task``.

        Thieves get the task when armed, so they hold the likely winner's model when the round
        opens and always submit first (the strongest thief); a forger impersonates each honest
        miner in turn. The dropping proposer is the suite itself: no miner is armed.
        """
        from dlbc_ray.actors.adversary import MinerAttack, ValidatorLie

        if kind in ("thief", "copy-noise"):
            return MinerAttack(kind, task=task, train=self.bundle.train), {}  # type: ignore[arg-type]
        if kind == "forged-signature":
            return MinerAttack(kind, victim=HONEST_MINERS[index % len(HONEST_MINERS)]), {}
        if kind in ("replay", "disguised-replay", "partial-reuse"):
            weights, seed = self.earlier_winner()
            return MinerAttack(kind, weights=weights, sml_seed=seed), {}  # type: ignore[arg-type]
        if kind == "secret-probe":
            return MinerAttack(kind, rivals={n: self.handles[n] for n in HONEST_MINERS}), {}
        if kind == "cross-chain-replay":
            return MinerAttack(kind, chain_id=self.other_chain_id()), {}
        if kind == "proposer-drop":
            return None, {}
        if kind in ("random-weights", "hash-mismatch", "wrong-task", "late", "false-claim", "fake-transcript"):
            return MinerAttack(kind), {}  # type: ignore[arg-type]
        bait = MinerAttack("bait")
        if kind == "lying-validators":
            return bait, {LIARS[0]: ValidatorLie(LIE_CYCLE[index % len(LIE_CYCLE)], seed=index)}  # type: ignore[arg-type]
        if kind == "equivocating-validator":
            return bait, {LIARS[0]: ValidatorLie("equivocate")}
        if kind == "too-many-liars":
            return bait, {name: ValidatorLie("reject-best") for name in LIARS}
        raise ConfigError(f"unknown attack kind {kind!r}", reason="kind")

    def other_chain_id(self) -> str:
        """The chain id of a second genesis with this network's identities, made a moment later."""
        from dlbc_ray.actors.rounds import now_ms
        from dlbc_ray.consensus import make_genesis
        from dlbc_ray.network import genesis_params

        if self._other_chain is None:
            ids, when = self.net.identities, now_ms()
            self._other_chain = make_genesis(genesis_params(ids, self.cfg, when), ids.consensus, when).header.chain_id
        if self._other_chain == self.net.chain_id:
            raise ConfigError("the second genesis has this chain's id", reason="chain_id")
        return self._other_chain

    def replay_from_another_chain(self) -> dict[str, str]:
        """The requester's transfer to the adversary and a task, both signed for the other chain, sent to the
        consensus actor here; returns what became of each ('accepted' or the reason refused)."""
        from dlbc_ray import crypto
        from dlbc_ray.actors.rounds import now_ms
        from dlbc_ray.network import make_task
        from dlbc_ray.schema import Transfer

        requester, other = self.net.identities.requester, self.other_chain_id()
        nonce = self._get(self.net.ledger.snapshot.remote(), "ledger").nonces.get(requester.public_key, 0)
        transfer = crypto.sign(requester, Transfer(sender=requester.public_key, recipient=self.key(ADVERSARY),
                                                   amount=1, nonce=nonce), other)
        task = make_task(requester, self.cfg.task, self.bundle, nonce=time.time_ns(), created_ms=now_ms(),
                         chain_id=other)
        consensus = self.net.consensus
        return {"transfer": self._refusal(consensus.submit_transfer.remote(transfer), "transfer"),
                "task": self._refusal(consensus.submit_task.remote(task, self.data.train, self.data.test), "task")}

    def drop_best_as_proposer(self, task: Signed[Task]) -> tuple[RoundReport, dict[str, str]]:
        """Play the proposer with its own key: an honest round of the honest miners, then the block without
        its best submission (``drop_best``) to the ledger, then the honest block of the same round."""
        import threading

        from dlbc_ray import crypto
        from dlbc_ray.actors.rounds import RoundRunner, RoundState, miner_policy, now_ms
        from dlbc_ray.consensus import propose_task_block
        from dlbc_ray.consensus.ballot import compute_round_id
        from dlbc_ray.errors import InvalidBlock

        proposer, ledger = self.net.identities.consensus, self.net.ledger
        base = self._get(ledger.snapshot.remote(), "ledger")
        task_id = crypto.message_hash(task.message)
        state = RoundState(task_id, compute_round_id(task_id, base.head_hash, time.time_ns()))
        miners = [m for m in self.net.miners if m.name in HONEST_MINERS]
        result = RoundRunner(self.cfg.consensus, task=task, data=self.data, miners=miners,
                             validators=self.net.validators, base=base, state=state, lock=threading.Lock(),
                             proposer=proposer, policy=miner_policy(self.cfg.miner)).run()
        honest, decision = propose_task_block(base, task, [a.signed for a in result.arrivals], result.votes, proposer,
                                              now_ms(), state.round_id)
        refused = {"block without the best submission": self._refusal(
            ledger.import_block.remote(drop_best(honest, base, proposer)), "forged block")}
        try:
            imported = self._get(ledger.import_block.remote(honest), "ledger")
        except InvalidBlock as e:
            return RoundReport(height=None, block_hash=None, task_id=task_id, winner=None, score=None,
                               committed=False, failure=str(e), outcomes=tuple(result.outcomes)), refused
        winner = decision.winner
        if winner is not None:  # kept like the consensus actor keeps it: ``replay`` replays the latest winner
            arrival = next(a for a in result.arrivals if a.signed.message.commit == winner.commit)
            seed = {"sml_seed": arrival.reveal.message.sml_seed} if arrival.reveal else {}
            self._get(ledger.store_artifact.remote(result.weight_refs[winner.commit], winner.model_hash,
                                                   {"task_id": task_id, "miner": winner.miner, **seed}), "artifacts")
        outcomes = tuple(SubmissionOutcome(miner=a.signed.message.miner, commit=a.signed.message.commit,
                                           verdict=t.verdict.value if t.verdict else "undecided", score=t.score)
                         for a, t in zip(result.arrivals, decision.tallies))
        return RoundReport(height=imported.height, block_hash=imported.hash, prev_hash=imported.prev_hash,
                           task_id=task_id, winner=imported.winner, score=decision.score, committed=True,
                           outcomes=tuple(result.outcomes) + outcomes, timings=result.timings), refused

    def earlier_winner(self) -> tuple[dict[str, Any], str]:
        """The latest winning weights in the artifact store and their mapping seed (mines one block if none)."""
        from dlbc_ray.ledger import ArtifactStore

        for _ in range(3):
            won = self._get(self.net.ledger.snapshot.remote(), "ledger").won_models
            if won:
                model_hash = max(won, key=won.get)
                store = ArtifactStore(self.home.artifacts)
                return store.get(model_hash), store.metadata(model_hash)["sml_seed"]
            self.warm_up()
        raise ConfigError("three honest rounds produced no winner to replay", reason="no_winner")

    def _task(self) -> Signed[Task]:
        from dlbc_ray.actors.rounds import now_ms
        from dlbc_ray.network import make_task

        return make_task(self.net.identities.requester, self.cfg.task, self.bundle, nonce=time.time_ns(),
                         created_ms=now_ms(), chain_id=self.net.chain_id)

    def _round(self, task: Signed[Task] | None) -> RoundReport:
        """A round on ``task``, or (None) on PoLe's standing task at the chain's difficulty."""
        from dlbc_ray.network import run_round, standing_template

        timeout = self.cfg.consensus.collect_timeout_s + self.cfg.consensus.validate_timeout_s + 120
        standing = None if task else standing_template(self.cfg, self.bundle)
        return run_round(self.net, task, self.data, timeout_s=timeout, standing=standing)

    def _arm(self, attack: MinerAttack | None, lies: dict[str, ValidatorLie]) -> None:
        calls = [self.handles[ADVERSARY].arm.remote(attack)]
        calls += [self.handles[name].arm.remote(lies.get(name)) for name in LIARS]
        self._get(calls, "arming adversaries")  # a thief steals while being armed: a few seconds

    def key(self, name: str) -> str:
        return self.keys[name]

    def _refusal(self, ref: Any, what: str) -> str:
        """'accepted' when the call went through, else the reason it was refused."""
        from dlbc_ray.errors import DLBCError

        try:
            self._get(ref, what)
        except DLBCError as e:
            return e.reason or type(e).__name__
        return "accepted"

    def _height(self) -> int:
        return int(self._get(self.net.ledger.head.remote(), "ledger")["height"])

    @staticmethod
    def _get(ref: Any, what: str) -> Any:
        from dlbc_ray.actors._ray import get

        return get(ref, timeout=60, what=what)


def run_attacks(kinds: Sequence[str], trials: int, home: Home, *, cfg: NetworkConfig | None = None,
                on_trial: Callable[[TrialResult], None] | None = None,
                on_stage: Callable[[str], None] = lambda text: None) -> list[KindResult]:
    """``trials`` rounds of each kind on one local network in ``home``; starts and stops Ray if none is up."""
    import ray

    from dlbc_ray.network import start_local_ray

    if trials < 1:
        raise ConfigError(f"--trials must be at least 1 (got {trials})", reason="trials")
    cfg = cfg or attack_config()
    on_stage("starting a local Ray cluster")
    owns = start_local_ray(home, cfg)
    try:
        on_stage("starting 2 honest miners, 1 adversary, 4 validators (2 of them switchable liars)")
        with AttackNetwork(home, cfg) as network:
            on_stage("warm-up round (everyone honest)")
            network.warm_up()
            results = []
            for kind in kinds:
                done = []
                for i in range(trials):
                    on_stage(f"{kind}: trial {i + 1}/{trials}")
                    done.append(network.trial(kind, i))
                    if on_trial:
                        on_trial(done[-1])
                results.append(summarize(kind, done))
            return results
    finally:
        if owns:
            ray.shutdown()
