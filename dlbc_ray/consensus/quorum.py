"""Byzantine quorum and score aggregation (CometBFT's > 2/3, SN9's fixed-precision median).

With n validators of whom f < n/3 lie, a quorum of more than 2n/3 always holds an
honest majority, and the median of the scores lies between honest scores.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from dlbc_ray.schema import Ballot, Vote
from dlbc_ray.schema.submission import Verdict


def is_quorum(count: int, n_validators: int) -> bool:
    """More than two thirds of all validators (not of those who happened to vote)."""
    return 3 * count > 2 * n_validators


def quorum_size(n_validators: int) -> int:
    return 2 * n_validators // 3 + 1


def compute_median_score(scores: Sequence[int]) -> int:
    """Median in integer score units; the mean of the middle two is rounded down."""
    if not scores:
        raise ValueError("median of no scores")
    ordered = sorted(scores)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) // 2


@dataclass(frozen=True)
class Tally:
    """Validators' combined judgement of one submission.

    ``verdict`` is VALID when more than 2/3 of all validators accept it, the most common
    rejection when more than 2/3 reject it, and None (undecided) otherwise: with fewer
    than n/3 liars one side always has its quorum, so undecided means too many faults.
    """

    commit: str
    valid_votes: int
    total_votes: int
    verdict: Verdict | None
    score: int | None

    @property
    def accepted(self) -> bool:
        return self.verdict is Verdict.VALID


def compute_tally(commit: str, ballot: Iterable[Vote], n_validators: int) -> Tally:
    """Accepted when more than 2/3 of all validators say valid; its score is their median."""
    votes = list(ballot)
    valid_scores = [v.score for v in votes if v.verdict is Verdict.VALID]
    if is_quorum(len(valid_scores), n_validators):
        return Tally(commit, len(valid_scores), len(votes), Verdict.VALID, compute_median_score(valid_scores))
    rejected = is_quorum(len(votes) - len(valid_scores), n_validators)
    return Tally(commit, len(valid_scores), len(votes), compute_main_rejection(votes) if rejected else None, None)


def compute_main_rejection(votes: Sequence[Vote]) -> Verdict | None:
    """The most common rejection, ties broken by Verdict's declaration order; None if nobody rejected."""
    counts = Counter(v.verdict for v in votes if v.verdict is not Verdict.VALID)
    if not counts:
        return None
    order = list(Verdict)
    return max(counts, key=lambda verdict: (counts[verdict], -order.index(verdict)))


def group_ballots(ballots: Iterable[Ballot], validators: Iterable[str], excluded: Iterable[str] = ()) -> dict[
    str, dict[str, Vote]
]:
    """commit -> validator -> vote, keeping only members of the validator set not excluded."""
    members = set(validators) - set(excluded)
    grouped: dict[str, dict[str, Vote]] = {}
    for ballot in ballots:
        if ballot.validator in members:
            for vote in ballot.votes:
                grouped.setdefault(vote.commit, {})[ballot.validator] = vote
    return grouped


def complete_voters(ballots: Mapping[str, Mapping[str, Vote]], commits: Sequence[str]) -> tuple[str, ...]:
    """Validators that voted on every submission of the round, sorted: the quorum certificate."""
    if not commits:
        return ()
    sets = [set(ballots.get(c, {})) for c in commits]
    return tuple(sorted(set.intersection(*sets)))
