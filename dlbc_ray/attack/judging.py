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

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dlbc_ray.consensus.ballot import votes_by_commit
from dlbc_ray.consensus.decision import compute_winner
from dlbc_ray.consensus.quorum import compute_tally
from dlbc_ray.schema import Block, Verdict
from dlbc_ray.schema.round_messages import RoundReport, SubmissionOutcome

if TYPE_CHECKING:
    from dlbc_ray.actors.adversary import AttackRecord
    from dlbc_ray.actors.liars import LieKind

HONEST_MINERS = ("miner-0", "miner-1")
ADVERSARY = "miner-2"
LIARS = ("validator-3", "validator-2")  # the first lies alone (f = 1 < n/3); both in too-many-liars
LIE_CYCLE: tuple[LieKind, ...] = ("random", "approve", "reject")

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
    """The trial's result: its kind's detector (``attack.kinds``), the honest winner, the false positives."""
    from dlbc_ray.attack.kinds import attack_kind  # the registry imports this module's definitions

    detected, how = attack_kind(trial.kind).detect(trial)
    false_positives = count_false_positives(trial)
    if false_positives:
        how = f"{how}; honest refused: {explain_false_positives(trial)}"
    return TrialResult(trial.kind, trial.index, detected, is_honest_winner_kept(trial), false_positives, how, seconds)


# -------------------------------------------------------------- definitions


def verdict_of(outcome: SubmissionOutcome | None) -> str:
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
        if cut and race and verdict_of(cut) == Verdict.LATE.value:
            return False
        if cut:
            return True
        accepted = any(o.miner == trial.key(name) and o.commit and verdict_of(o) == Verdict.VALID.value
                       for o in trial.report.outcomes)
        return trial.report.committed and not accepted

    return sum(refused(n) for n in HONEST_MINERS)


def explain_false_positives(trial: Trial) -> str:
    """Why each honest miner got nothing: its outcomes, and the block's rejecting votes on it (so a failed
    trial names the cause, not only the count)."""
    parts = []
    for name in HONEST_MINERS:
        if name not in trial.keys:
            continue
        mine = [o for o in trial.report.outcomes if o.miner == trial.key(name)]
        if any(o.commit and verdict_of(o) == Verdict.VALID.value for o in mine):
            continue
        said = [f"{verdict_of(o)} {o.detail}".strip() for o in mine] or ["no outcome"]
        commits = {o.commit for o in mine if o.commit}
        if trial.block is not None:
            said += [f"{b.message.validator[:8]}: {v.verdict.value} {v.detail}".strip()
                     for b in trial.block.ballots for v in b.message.votes
                     if v.commit in commits and v.verdict is not Verdict.VALID]
        parts.append(f"{name} ({'; '.join(said)})")
    return ", ".join(parts) or "none"


def honest_choice(trial: Trial) -> str | None:
    """The winner honest validators alone would pick among honest miners alone (None: nobody). An adversary
    miner that was not armed this trial (the suite attacked from elsewhere: liars, a proposer, questions)
    mined honestly, so it is one of them: its model winning is the honest outcome, not a beaten defense."""
    if trial.block is None:
        return None
    honest_validators = {k for n, k in trial.keys.items() if n.startswith("validator-") and n not in trial.liars}
    honest_miners = HONEST_MINERS if trial.record is not None else (*HONEST_MINERS, ADVERSARY)
    miners = {trial.key(n) for n in honest_miners if n in trial.keys}
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
