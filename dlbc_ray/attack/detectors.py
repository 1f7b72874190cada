"""Each attack kind's detector: whether a finished trial shows the attack caught, and how (one line).

Pure reading of a ``Trial`` (judging.py defines what a trial holds and what "detected" means per
kind); each detector is tested on its own against known-bad and known-good trials
(tests/test_attack_scoring.py). ``attack.kinds`` pairs each with the plan that arms the adversaries.
"""

from __future__ import annotations

from collections.abc import Callable

from dlbc_ray.attack.judging import ADVERSARY, HONEST_MINERS, LIARS, LIE_CYCLE, Trial, decided, dropped, verdict_of
from dlbc_ray.constants import SCORE_SCALE
from dlbc_ray.schema import Verdict

Detect = Callable[[Trial], tuple[bool, str]]


def adversary_rejected(*verdicts: str) -> Detect:
    def detect(trial: Trial) -> tuple[bool, str]:
        outcome = decided(trial, trial.record.commit if trial.record else None)
        won = trial.report.winner == trial.key(ADVERSARY)
        return verdict_of(outcome) in verdicts and not won, verdict_of(outcome)

    return detect


def adversary_dropped(verdict: str) -> Detect:
    def detect(trial: Trial) -> tuple[bool, str]:
        outcome = dropped(trial, ADVERSARY)
        commits = {s.message.commit for s in trial.block.submissions} if trial.block else set()
        in_block = trial.record is not None and trial.record.commit in commits
        return verdict_of(outcome) == verdict and not in_block, verdict_of(outcome)

    return detect


def never_wins(trial: Trial) -> tuple[bool, str]:
    outcome = decided(trial, trial.record.commit if trial.record else None)
    if outcome is None or trial.report.winner == trial.key(ADVERSARY):
        return False, verdict_of(outcome)
    if verdict_of(outcome) != Verdict.VALID.value:
        return True, verdict_of(outcome)
    honest = [o.score or 0 for o in trial.report.outcomes
              if o.commit and o.miner in {trial.key(n) for n in HONEST_MINERS} and verdict_of(o) == "valid"]
    score = outcome.score or 0
    return score < trial.target or score < max(honest, default=0), f"valid at {score / SCORE_SCALE:.2f}"


def refused_for_its_transcript(trial: Trial) -> tuple[bool, str]:
    """Not accepted, not the winner, and named ``bad_transcript`` by at least one validator's vote."""
    commit = trial.record.commit if trial.record else None
    outcome = decided(trial, commit)
    votes = [v for b in (trial.block.ballots if trial.block else ()) for v in b.message.votes if v.commit == commit]
    bad = sum(v.verdict is Verdict.BAD_TRANSCRIPT for v in votes)
    won = trial.report.winner == trial.key(ADVERSARY)
    refused = outcome is not None and verdict_of(outcome) != Verdict.VALID.value
    return refused and bad > 0 and not won, f"{verdict_of(outcome)} ({bad}/{len(votes)} bad_transcript votes)"


def liar_caught(trial: Trial) -> tuple[bool, str]:
    if trial.block is None:
        return False, f"no block: {trial.report.failure}"
    liar = trial.key(LIARS[0])
    tallies = {o.commit: o for o in trial.report.outcomes if o.commit}
    wrong = 0
    for vote in (v for b in trial.block.ballots if b.message.validator == liar for v in b.message.votes):
        o = tallies.get(vote.commit)
        says_valid, is_valid = vote.verdict is Verdict.VALID, verdict_of(o) == Verdict.VALID.value
        wrong += says_valid != is_valid or (says_valid and o is not None and o.score != vote.score)
    return wrong > 0, f"{LIE_CYCLE[trial.index % len(LIE_CYCLE)]}: {wrong} lies seen"


def equivocation_evidenced(trial: Trial) -> tuple[bool, str]:
    if trial.block is None:
        return False, f"no block: {trial.report.failure}"
    liar = trial.key(LIARS[0])
    evidence = [e for e in trial.block.evidence if e.first.message.validator == liar]
    ballots = [b for b in trial.block.ballots if b.message.validator == liar]
    return bool(evidence) and not ballots, f"evidence x{len(evidence)}, {len(ballots)} ballots kept"


def failed_safely(trial: Trial) -> tuple[bool, str]:
    failure = trial.report.failure
    reason = "split" if "split" in failure else "quorum" if "quorum" in failure else ""
    unmoved = not trial.report.committed and trial.height_after == trial.height_before
    return bool(reason) and unmoved, f"no block ({reason or failure[:40]})" if unmoved else "committed"


def claim_ignored(trial: Trial) -> tuple[bool, str]:
    """PoLe: a false claim of the target must not win, nor stall the chain by cutting honest miners off."""
    cut = [n for n in HONEST_MINERS if verdict_of(dropped(trial, n)) == Verdict.LATE.value]
    won = trial.report.winner == trial.key(ADVERSARY)
    refuted = int(trial.report.timings.get("refuted_claims", 0))
    how = f"{refuted} claim(s) refuted, {len(cut)} honest cut off" + ("" if trial.report.committed else ", no block")
    return trial.report.committed and len(cut) < len(HONEST_MINERS) and not won, how


def nothing_leaked(trial: Trial) -> tuple[bool, str]:
    """Secrets are sealed: every probe of a rival during the window was refused or answered nothing secret."""
    leaks = trial.record.leaks if trial.record else ("no record",)
    won = trial.report.winner == trial.key(ADVERSARY)
    how = trial.record.note if trial.record else "no record"
    return not leaks and not won, how + (f"; leaked: {', '.join(leaks)}" if leaks else "")


def replays_refused(trial: Trial) -> tuple[bool, str]:
    """Nothing signed for another chain moves this one: not a transfer, not a task, not a submission."""
    outcome = dropped(trial, ADVERSARY)
    in_block = trial.block is not None and trial.record is not None and \
        trial.record.commit in {s.message.commit for s in trial.block.submissions}
    moved = trial.height_after - trial.height_before - int(trial.report.committed)
    refused = [trial.refusals.get(what) for what in ("transfer", "task")]
    how = f"transfer {refused[0]}, task {refused[1]}, submission {verdict_of(outcome)}"
    return (refused == ["wrong_chain"] * 2 and verdict_of(outcome) == Verdict.WRONG_CHAIN.value and not in_block
            and moved == 0), how + (f", {moved} extra block(s)" if moved else "")


def drop_refused(trial: Trial) -> tuple[bool, str]:
    """The censoring block is refused for its ballots, and the honest block of the round still commits."""
    refused = trial.refusals.get("block without the best submission", "not tried")
    moved = trial.height_after - trial.height_before
    how = f"forged block {refused}, honest block " + (f"{trial.report.height}" if trial.report.committed else
                                                       f"lost ({trial.report.failure[:60]})")
    return refused == "ballot_set" and trial.report.committed and moved == 1, how


def oracle_refused(trial: Trial) -> tuple[bool, str]:
    """No validator judges a round the proposer did not sign: a thief learns nothing of anyone's watermark."""
    answered = sorted(q for q, answer in trial.refusals.items() if answer == "accepted")
    reasons = sorted(set(trial.refusals.values()) - {"accepted"})
    how = f"{len(trial.refusals)} questions, {len(answered)} answered" + (f" ({', '.join(reasons)})" if reasons else "")
    return bool(trial.refusals) and not answered, how + (f": {answered[0]}" if answered else "")
