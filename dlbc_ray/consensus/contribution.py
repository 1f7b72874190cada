"""Fair pay for BaaS contributors: an integer amount split in proportion to each one's gain.

The gain of a contributor is what the fused model loses without it (leave-one-out on
the validators' median score), so a contributor that adds nothing or harms the fused
model earns nothing. Integer units throughout; shares always sum exactly to the amount.
"""

from __future__ import annotations

from collections.abc import Mapping

from dlbc_ray.errors import ConsensusError
from dlbc_ray.schema import PayoutTx


def leave_one_out_gains(full_score: int, without: Mapping[str, int]) -> dict[str, int]:
    """Each contributor's gain: the fused score minus the score of the model fused without it.

    Negative when the fused model is better without that contributor (e.g. a poisoner).
    """
    return {key: full_score - score for key, score in without.items()}


def _split_equally(amount: int, gains: Mapping[str, int]) -> dict[str, int]:
    """Equal shares; the units that do not divide go to the highest gains, ties to the smaller key."""
    base, extra = divmod(amount, len(gains))
    lucky = set(sorted(gains, key=lambda key: (-gains[key], key))[:extra])
    return {key: base + (1 if key in lucky else 0) for key in sorted(gains)}


def compute_shares(amount: int, gains: Mapping[str, int]) -> dict[str, int]:
    """Split ``amount`` among every key of ``gains`` in proportion to its positive gain (Hamilton's method).

    Each positive-gain key first gets ``floor(amount * gain / total)``; the units left over
    go one each to the largest remainders, ties to the smaller key. Keys with zero or
    negative gain get 0. If no key has a positive gain the amount is split equally (the
    units that do not divide to the highest gains, then the smaller keys): the fused
    model is then nobody's in particular, and symmetry is the only fair rule left.
    Shares are non-negative, sum to ``amount``, and a larger gain never gets a smaller share.
    """
    if amount < 0:
        raise ConsensusError(f"cannot split a negative amount ({amount})", reason="shares")
    keys = sorted(gains)
    if not keys:
        if amount:
            raise ConsensusError(f"nobody to pay {amount} to: no contributors", reason="shares")
        return {}
    positive = {key: int(gains[key]) for key in keys if gains[key] > 0}
    if not positive:
        return _split_equally(amount, gains)
    total = sum(positive.values())
    shares = {key: 0 for key in keys}
    remainders: list[tuple[int, str]] = []
    for key, gain in positive.items():
        shares[key], remainder = divmod(amount * gain, total)
        remainders.append((remainder, key))
    left = amount - sum(shares.values())
    for _, key in sorted(remainders, key=lambda rk: (-rk[0], rk[1]))[:left]:
        shares[key] += 1
    return shares


def compute_contributor_payouts(task_id: str, amount: int, gains: Mapping[str, int]) -> tuple[PayoutTx, ...]:
    """``compute_shares`` as payout transactions (role "contributor"), sorted by recipient, zeros left out."""
    shares = compute_shares(amount, gains)
    return tuple(PayoutTx(task_id=task_id, recipient=key, amount=value, role="contributor")
                 for key, value in sorted(shares.items()) if value)
