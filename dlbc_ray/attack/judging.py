"""Judging an attack trial: what one round left behind, and whether the defenses held.

Pure reading of a finished round (its report, block and the adversary's record): each kind has
one detector saying whether the attack was caught and how; ``judge`` adds whether the honest
winner was kept and how many honest miners were wrongly refused. ``dlbc_ray.attack.harness`` plays the
trials; this module only reads them, so the rules are testable on hand-built trials.

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
        ``stolen``) and not the winner. layer-reset: the same with the first layer re-initialised.
        fine-tuned-replay: disguised as above, then one epoch of training with the thief's mark.
        pruned-replay: disguised, 30% of the weights pruned and a quarter of the units made dead.
        All three: decided ``derived`` (or ``stolen``) and not the winner.
    forged-signature / wrong-task / late: the round's outcomes record the adversary's
        sending with ``bad_signature`` / ``wrong_task`` / ``late``, and its commit is not
        in the block. hash-mismatch: in the block, decided ``hash_mismatch``, not the winner.
    lying-validators: ``validator-3`` lies (trial t: random scores, always approve, always
        reject, cycling) and at least one of its votes in the block disagrees with the
        decided tally (valid or not, or the score of an accepted submission).
    equivocating-validator: the block holds equivocation evidence (two different signed
        ballots) against ``validator-3`` and no ballot of it.
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

    distilled: a fresh model of the adversary's own, trained as an honest miner trains (its init, map, mark,
        the round's derived data order, every checkpoint recorded and committed) but on the labels the latest
        earlier winner predicts; its weights owe the winner nothing, so provenance does not name it. Detected
        when the block does not accept it (not decided ``valid``; a 2-2 split of 4 validators leaves it
        undecided, which pays nothing either), it does not win, and at least one validator voted it
        ``bad_transcript`` (the audit replays with the task's labels: a replayed segment whose batches hold a
        label the winner got wrong diverges). Each validator samples its segments, so a round catches it with
        a probability, not for sure (``benchmarks/pol.py``).

    false-claim: PoLe's standing task; the adversary sends untrained weights at once, claiming
        a perfect score. Detected when it does not win and a block is still committed: the
        validators refute the claim and the window reopens for the honest miners still
        training. The honest winner is kept when any honest miner wins (PoLe is a race).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dlbc_ray.consensus.ballot import votes_by_commit
from dlbc_ray.consensus.decision import compute_winner
from dlbc_ray.consensus.quorum import compute_tally
from dlbc_ray.constants import SCORE_SCALE
from dlbc_ray.schema import Block, Verdict
from dlbc_ray.schema.round_messages import RoundReport, SubmissionOutcome

if TYPE_CHECKING:
    from dlbc_ray.actors.adversary import AttackRecord

HONEST_MINERS = ("miner-0", "miner-1")
ADVERSARY = "miner-2"
LIARS = ("validator-3", "validator-2")  # the first lies alone (f = 1 < n/3); both in too-many-liars
LIE_CYCLE = ("random", "approve", "reject")

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
    votes = votes_by_commit(b.message for b in trial.block.ballots if b.message.validator in honest_validators)
    tallies = [compute_tally(s.commit, [v for _, v in votes.get(s.commit, [])], len(honest_validators))
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


def _refused_for_its_transcript(trial: Trial) -> tuple[bool, str]:
    """Not accepted, not the winner, and named ``bad_transcript`` by at least one validator's vote."""
    commit = trial.record.commit if trial.record else None
    outcome = decided(trial, commit)
    votes = [v for b in (trial.block.ballots if trial.block else ()) for v in b.message.votes if v.commit == commit]
    bad = sum(v.verdict is Verdict.BAD_TRANSCRIPT for v in votes)
    won = trial.report.winner == trial.key(ADVERSARY)
    refused = outcome is not None and _verdict(outcome) != Verdict.VALID.value
    return refused and bad > 0 and not won, f"{_verdict(outcome)} ({bad}/{len(votes)} bad_transcript votes)"


def _liar_caught(trial: Trial) -> tuple[bool, str]:
    if trial.block is None:
        return False, f"no block: {trial.report.failure}"
    liar = trial.key(LIARS[0])
    tallies = {o.commit: o for o in trial.report.outcomes if o.commit}
    wrong = 0
    for vote in (v for b in trial.block.ballots if b.message.validator == liar for v in b.message.votes):
        o = tallies.get(vote.commit)
        says_valid, is_valid = vote.verdict is Verdict.VALID, _verdict(o) == Verdict.VALID.value
        wrong += says_valid != is_valid or (says_valid and o is not None and o.score != vote.score)
    return wrong > 0, f"{LIE_CYCLE[trial.index % len(LIE_CYCLE)]}: {wrong} lies seen"


def _equivocation_evidenced(trial: Trial) -> tuple[bool, str]:
    if trial.block is None:
        return False, f"no block: {trial.report.failure}"
    liar = trial.key(LIARS[0])
    evidence = [e for e in trial.block.evidence if e.first.message.validator == liar]
    ballots = [b for b in trial.block.ballots if b.message.validator == liar]
    return bool(evidence) and not ballots, f"evidence x{len(evidence)}, {len(ballots)} ballots kept"


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
    "layer-reset": _adversary_rejected(Verdict.DERIVED.value, Verdict.STOLEN.value),
    "fine-tuned-replay": _adversary_rejected(Verdict.DERIVED.value, Verdict.STOLEN.value),
    "pruned-replay": _adversary_rejected(Verdict.DERIVED.value, Verdict.STOLEN.value),
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
    "distilled": _refused_for_its_transcript,
}
