"""BaaS on the chain: which models are fused, what the fusion scored, who is paid for it.

Pure rules. The accepted submissions of a round (their weights unique) are the
contributors; validators each fuse them and sign a ``FusionVote``. More than 2/3 of all
validators must agree on the fused model's hash; its score and each leave-one-out score
are medians. The fusion is delivered only if it scores at least the best single model
(and the task's target); otherwise the best single model wins as usual and the block
says so (``fused`` is False). A delivered fusion pays validators their fee and splits
the rest among contributors in proportion to their leave-one-out gains.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from dlbc_ray.consensus.contribution import compute_shares, leave_one_out_gains
from dlbc_ray.consensus.decision import Decision
from dlbc_ray.consensus.quorum import compute_median_score, is_quorum
from dlbc_ray.consensus.rewards import compute_validator_fee
from dlbc_ray.errors import NoQuorum
from dlbc_ray.schema import FusionVote, PayoutTx, Submission, Task


@dataclass(frozen=True)
class FusionOutcome:
    fused_hash: str
    score: int
    gains: dict[str, int]  # contributor miner -> score gain it brought (may be <= 0)
    delivered: bool  # the fusion beat the best single model and met the target


def compute_contributors(submissions: Sequence[Submission], decision: Decision) -> tuple[Submission, ...]:
    """Accepted submissions in arrival order, one per model hash: what gets fused."""
    seen: set[str] = set()
    chosen = []
    for submission, tally in zip(submissions, decision.tallies):
        if tally.accepted and submission.model_hash not in seen:
            seen.add(submission.model_hash)
            chosen.append(submission)
    return tuple(chosen)


def is_fusion_task(task: Task, contributors: Sequence[Submission]) -> bool:
    """Fusion needs a fusion rule and at least two distinct accepted models."""
    return task.fusion != "winner" and len(contributors) >= 2


def decide_fusion(task: Task, contributors: Sequence[Submission], votes: Iterable[FusionVote],
                  validators: Sequence[str], best_single: int | None, excluded: Iterable[str] = ()) -> FusionOutcome:
    """The fusion the validators agree on; NoQuorum unless > 2/3 of all validators sign one fused hash."""
    commits = tuple(s.commit for s in contributors)
    members, skip = set(validators), set(excluded)
    by_hash: dict[str, dict[str, FusionVote]] = defaultdict(dict)
    for vote in votes:
        if vote.validator in members and vote.validator not in skip and vote.contributors == commits \
                and vote.rule == task.fusion and len(vote.without) == len(commits):
            by_hash[vote.fused_hash][vote.validator] = vote
    agreed = [(h, vs) for h, vs in by_hash.items() if is_quorum(len(vs), len(validators))]
    if not agreed:
        raise NoQuorum(f"no fused model was signed by more than 2/3 of {len(validators)} validators",
                       reason="fusion_quorum")
    fused_hash, ballot = agreed[0]
    score = compute_median_score([v.score for v in ballot.values()])
    without = {s.miner: compute_median_score([v.without[i] for v in ballot.values()])
               for i, s in enumerate(contributors)}
    delivered = score >= task.target and (best_single is None or score >= best_single)
    return FusionOutcome(fused_hash, score, leave_one_out_gains(score, without), delivered)


def compute_delivered(decision: Decision, fusion: FusionOutcome | None) -> dict[str, object]:
    """Header fields of the delivered model: the fusion when it won, else the best single submission."""
    if fusion is not None and fusion.delivered:
        return {"winner": None, "model_hash": fusion.fused_hash, "score": fusion.score, "fused": True}
    winner = decision.winner
    return {"winner": winner.miner if winner else None, "model_hash": winner.model_hash if winner else None,
            "score": decision.score, "fused": False}


def best_single_score(decision: Decision) -> int | None:
    scores = [t.score for t in decision.tallies if t.accepted and t.score is not None]
    return max(scores) if scores else None


def compute_fusion_payouts(task_id: str, task: Task, outcome: FusionOutcome, voters: Sequence[str],
                           fee_bps: int, *, escrow: int | None = None) -> tuple[PayoutTx, ...]:
    """Validators' fees, then the rest shared by leave-one-out gain (rejected models are not contributors)."""
    pot = task.reward if escrow is None else escrow
    fee = compute_validator_fee(task.reward, len(voters), fee_bps)
    payouts = [PayoutTx(task_id=task_id, recipient=v, amount=fee, role="validator") for v in sorted(voters) if fee]
    shares = compute_shares(pot - fee * len(payouts), outcome.gains)
    payouts += [PayoutTx(task_id=task_id, recipient=m, amount=a, role="contributor")
                for m, a in sorted(shares.items()) if a]
    return tuple(payouts)
