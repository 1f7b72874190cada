"""Who wins a round: the best accepted score meeting the target, earliest on ties.

``decide`` tallies the ballots it is given (the ledger's view: a block's ballots, less its
proven equivocators); ``decide_round`` is everyone else's: find the equivocators among
the ballots received, keep one whole bound ballot per honest-looking validator, decide.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Sequence
from dataclasses import dataclass

from dlbc_ray.consensus.ballot import find_equivocations, select_ballots, select_bound
from dlbc_ray.consensus.quorum import Tally, complete_voters, compute_tally, group_ballots, is_quorum
from dlbc_ray.errors import NoQuorum
from dlbc_ray.schema import Ballot, Evidence, FusionVote, Signed, Submission


@dataclass(frozen=True)
class Decision:
    """The outcome of a round, recomputable by anyone from the block's body."""

    tallies: tuple[Tally, ...]  # in submission (arrival) order
    voters: tuple[str, ...]  # validators that voted on every submission, sorted
    winner: Submission | None
    score: int | None

    def tally(self, commit: str) -> Tally:
        return next(t for t in self.tallies if t.commit == commit)


def compute_winner(submissions: Sequence[Submission], tallies: Sequence[Tally], target: int,
                   won: Container[str] = ()) -> Submission | None:
    """Highest accepted score >= target; arrival order breaks ties; weights that already won, on this chain
    (``won``) or earlier in this round, never win again.

    Only accepted submissions claim their weights: a thief's rejected copy that arrived
    first must not bar the original from winning.
    """
    best: tuple[Submission, int] | None = None
    seen: set[str] = set()
    for submission, tally in zip(submissions, tallies):
        if not tally.accepted or tally.score is None or submission.model_hash in seen or submission.model_hash in won:
            continue
        seen.add(submission.model_hash)
        if tally.score < target:
            continue
        if best is None or tally.score > best[1]:
            best = (submission, tally.score)
    return best[0] if best else None


def decide(
    submissions: Sequence[Submission],
    ballots: Iterable[Ballot],
    validators: Sequence[str],
    target: int,
    *,
    excluded: Iterable[str] = (),
    won: Container[str] = (),
) -> Decision:
    """Tally every submission and pick the winner; raise NoQuorum without > 2/3 complete ballots.

    ``excluded`` validators (caught equivocating) count neither for quorum nor for scores.
    """
    commits = [s.commit for s in submissions]
    grouped = group_ballots(ballots, validators, excluded)
    voters = complete_voters(grouped, commits)
    if commits and not is_quorum(len(voters), len(validators)):
        raise NoQuorum(
            f"only {len(voters)} of {len(validators)} validators voted on every submission; "
            f"more than 2/3 are needed",
            reason="quorum",
        )
    tallies = tuple(compute_tally(c, grouped.get(c, {}).values(), len(validators)) for c in commits)
    undecided = [t.commit for t in tallies if t.verdict is None]
    if undecided:
        raise NoQuorum(f"validators split on submission {undecided[0][:12]}: no 2/3 majority either way "
                       f"(more than a third of them are faulty)", reason="split")
    winner = compute_winner(submissions, tallies, target, won)
    score = next((t.score for t in tallies if winner and t.commit == winner.commit), None)
    return Decision(tallies=tallies, voters=voters, winner=winner, score=score)


@dataclass(frozen=True)
class RoundDecision:
    """A round decided from the ballots received: the block's ballots and evidence, and what they decide."""

    decision: Decision
    ballots: tuple[Signed[Ballot], ...]  # one whole bound ballot per validator not proven to equivocate, sorted
    evidence: tuple[Evidence, ...]

    @property
    def culprits(self) -> frozenset[str]:
        return frozenset(e.first.message.validator for e in self.evidence)


def decide_round(submissions: Sequence[Submission], ballots: Sequence[Signed[Ballot]], round_id: str,
                 validators: Sequence[str], target: int, *, won: Container[str] = (),
                 fusion_votes: Sequence[Signed[FusionVote]] = ()) -> RoundDecision:
    """Find the equivocators (by their ballots or BaaS fusion votes), keep one whole ballot bound to this
    round per other validator, and decide.

    Ballots bound to another round or submission set are ignored (they cannot go in the
    block), so are they as evidence. Raises NoQuorum as ``decide`` does.
    """
    commits = [s.commit for s in submissions]
    bound = [b for b in select_bound(ballots, round_id, commits) if b.message.validator in validators]
    task_id = submissions[0].task_id if submissions else None
    fused = [v for v in fusion_votes if v.message.validator in validators
             and (v.message.task_id, v.message.round_id) == (task_id, round_id)]
    evidence = find_equivocations(bound, fused)
    culprits = {e.first.message.validator for e in evidence}
    chosen = select_ballots(bound, round_id, commits, validators, culprits)
    decision = decide(submissions, [b.message for b in chosen], validators, target, won=won)
    return RoundDecision(decision, chosen, evidence)

