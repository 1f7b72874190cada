"""How a task's escrowed reward is paid out. Integer units: nothing is created or lost."""

from __future__ import annotations

from collections.abc import Sequence

from dlbc_ray.constants import BPS
from dlbc_ray.schema import PayoutTx, Task


def compute_validator_fee(reward: int, n_voters: int, fee_bps: int) -> int:
    """Each voter's fee: an equal share of ``fee_bps`` of the reward, rounded down."""
    if n_voters == 0:
        return 0
    return reward * fee_bps // BPS // n_voters


def compute_payouts(
    task_id: str,
    task: Task,
    winner: str | None,
    voters: Sequence[str],
    fee_bps: int,
    *,
    escrow: int | None = None,
) -> tuple[PayoutTx, ...]:
    """Validators' fees first (sorted), then the rest to the winner, or back to the requester.

    ``escrow`` defaults to the task's reward; penalties collected in the round raise it.
    """
    pot = task.reward if escrow is None else escrow
    fee = compute_validator_fee(task.reward, len(voters), fee_bps)
    payouts = [PayoutTx(task_id=task_id, recipient=v, amount=fee, role="validator") for v in sorted(voters) if fee]
    rest = pot - fee * len(payouts)
    if rest:
        role = "winner" if winner else "refund"
        payouts.append(PayoutTx(task_id=task_id, recipient=winner or task.requester, amount=rest, role=role))
    return tuple(payouts)
