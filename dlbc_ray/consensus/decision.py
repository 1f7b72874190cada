"""Who wins a round: the best accepted score meeting the target, earliest on ties."""

from __future__ import annotations

from collections.abc import Container, Iterable, Sequence
from dataclasses import dataclass

from dlbc_ray.consensus.quorum import Tally, complete_voters, compute_tally, group_ballots, is_quorum
from dlbc_ray.errors import NoQuorum
from dlbc_ray.schema import Submission, Vote


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
    votes: Iterable[Vote],
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
    ballots = group_ballots(votes, validators, excluded)
    voters = complete_voters(ballots, commits)
    if commits and not is_quorum(len(voters), len(validators)):
        raise NoQuorum(
            f"only {len(voters)} of {len(validators)} validators voted on every submission; "
            f"more than 2/3 are needed",
            reason="quorum",
        )
    tallies = tuple(compute_tally(c, ballots.get(c, {}).values(), len(validators)) for c in commits)
    undecided = [t.commit for t in tallies if t.verdict is None]
    if undecided:
        raise NoQuorum(f"validators split on submission {undecided[0][:12]}: no 2/3 majority either way "
                       f"(more than a third of them are faulty)", reason="split")
    winner = compute_winner(submissions, tallies, target, won)
    score = next((t.score for t in tallies if winner and t.commit == winner.commit), None)
    return Decision(tallies=tallies, voters=voters, winner=winner, score=score)
