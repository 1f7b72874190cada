"""The system transactions that close a task: penalties on thieves, then payouts.

The proposer emits exactly these; the ledger recomputes them and demands equality.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from dlbc_ray.consensus.baas import FusionOutcome, compute_fusion_payouts
from dlbc_ray.consensus.decision import Decision
from dlbc_ray.consensus.rewards import compute_payouts
from dlbc_ray.schema import ChainParams, PayoutTx, PenaltyTx, Submission, Task
from dlbc_ray.schema.submission import Verdict

# Rejections that prove intent (the watermark of another miner), so they cost stake.
PENALIZED_VERDICTS = frozenset({Verdict.STOLEN})


def compute_penalties(
    task_id: str,
    submissions: Sequence[Submission],
    decision: Decision,
    params: ChainParams,
    balances: Mapping[str, int],
) -> tuple[PenaltyTx, ...]:
    """One penalty per miner whose submission validators agreed was stolen, capped by its balance."""
    penalties: list[PenaltyTx] = []
    charged: set[str] = set()
    for submission, tally in zip(submissions, decision.tallies):
        miner = submission.miner
        if tally.verdict not in PENALIZED_VERDICTS or miner in charged:
            continue
        charged.add(miner)
        amount = min(params.theft_penalty, balances.get(miner, 0))
        if amount:
            penalties.append(PenaltyTx(task_id=task_id, account=miner, amount=amount, reason=tally.verdict.value))
    return tuple(penalties)


def debit_escrow(balances: Mapping[str, int], task: Task, *, posted_here: bool) -> dict[str, int]:
    """Balances as the settlement sees them: less the task's reward when its posting is in the same block."""
    after = dict(balances)
    if posted_here:
        after[task.requester] = max(0, after.get(task.requester, 0) - task.reward)
    return after


def compute_settlement(
    task_id: str,
    task: Task,
    submissions: Sequence[Submission],
    decision: Decision,
    params: ChainParams,
    balances: Mapping[str, int],
    fusion: FusionOutcome | None = None,
) -> tuple[PenaltyTx | PayoutTx, ...]:
    """Penalties, then payouts: to the winner, or shared by contributors when a fusion is delivered."""
    penalties = compute_penalties(task_id, submissions, decision, params, balances)
    escrow = task.reward + sum(p.amount for p in penalties)
    if fusion is not None and fusion.delivered:
        return penalties + compute_fusion_payouts(task_id, task, fusion, decision.voters, params.validator_fee_bps,
                                                  escrow=escrow)
    winner = decision.winner.miner if decision.winner else None
    payouts = compute_payouts(task_id, task, winner, decision.voters, params.validator_fee_bps, escrow=escrow)
    return penalties + payouts
