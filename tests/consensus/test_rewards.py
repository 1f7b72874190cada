from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dlbc_ray.consensus.rewards import compute_payouts
from tests.builders import World, fake_hash, fake_key


@given(reward=st.integers(1, 10**9), voters=st.integers(0, 10), fee_bps=st.integers(0, 10_000),
       has_winner=st.booleans())
def test_payouts_spend_exactly_the_escrow(reward: int, voters: int, fee_bps: int, has_winner: bool) -> None:
    world = World()
    task = world.task(reward=reward).message
    voter_keys = [fake_key(f"v{i}") for i in range(voters)]
    winner = fake_key("w") if has_winner else None
    payouts = compute_payouts(fake_hash("t"), task, winner, voter_keys, fee_bps)
    assert sum(p.amount for p in payouts) == reward
    assert all(p.amount > 0 for p in payouts)
    rest = [p for p in payouts if p.role != "validator"]
    fees = sum(p.amount for p in payouts if p.role == "validator")
    if fees < reward:  # whatever the validators do not take goes to the winner, or back to the requester
        assert [(p.recipient, p.role) for p in rest] == [(winner or task.requester, "winner" if winner else "refund")]
    else:
        assert rest == [] and fee_bps == 10_000


def test_validators_get_equal_fees_and_the_remainder_goes_to_the_winner() -> None:
    task = World().task(reward=1_001).message
    payouts = compute_payouts(fake_hash("t"), task, fake_key("w"), [fake_key("b"), fake_key("a")], 1_000)
    assert [(p.role, p.amount) for p in payouts] == [("validator", 50), ("validator", 50), ("winner", 901)]
    assert payouts[0].recipient < payouts[1].recipient
