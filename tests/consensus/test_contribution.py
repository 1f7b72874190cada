"""BaaS contributor pay: exact integer shares in proportion to leave-one-out gains."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dlbc_ray.consensus.contribution import compute_contributor_payouts, compute_shares, leave_one_out_gains
from dlbc_ray.errors import ConsensusError
from tests.builders import fake_hash, fake_key

amounts = st.integers(0, 10**12)
gain_maps = st.dictionaries(st.text("abcdefgh", min_size=1, max_size=3), st.integers(-10_000, 10_000),
                            min_size=1, max_size=12)


@given(amount=amounts, gains=gain_maps)
def test_shares_are_non_negative_and_sum_exactly_to_the_amount(amount: int, gains: dict[str, int]) -> None:
    shares = compute_shares(amount, gains)
    assert set(shares) == set(gains)
    assert sum(shares.values()) == amount and all(v >= 0 for v in shares.values())


@given(amount=amounts, gains=gain_maps)
def test_a_larger_gain_never_gets_a_smaller_share(amount: int, gains: dict[str, int]) -> None:
    shares = compute_shares(amount, gains)
    for a in gains:
        for b in gains:
            if gains[a] > gains[b]:
                assert shares[a] >= shares[b]
            if gains[a] == gains[b]:
                assert abs(shares[a] - shares[b]) <= 1


@given(amount=amounts, gains=gain_maps, extra=st.integers(1, 10_000), data=st.data())
def test_raising_ones_own_gain_never_lowers_ones_share(amount: int, gains: dict[str, int], extra: int,
                                                       data: st.DataObject) -> None:
    key = data.draw(st.sampled_from(sorted(gains)))
    if gains[key] <= 0:
        return  # moving from "nobody positive" (equal split) to "only me" is covered by the sum test
    before = compute_shares(amount, gains)[key]
    assert compute_shares(amount, {**gains, key: gains[key] + extra})[key] >= before


@given(amount=amounts, gains=gain_maps)
def test_each_share_is_its_quota_rounded_down_or_up(amount: int, gains: dict[str, int]) -> None:
    positive = {k: g for k, g in gains.items() if g > 0}
    shares = compute_shares(amount, gains)
    total = sum(positive.values())
    for key, share in shares.items():
        if not positive:
            assert share in (amount // len(gains), amount // len(gains) + 1)
        elif key not in positive:
            assert share == 0
        else:
            assert amount * positive[key] // total <= share <= -(-amount * positive[key] // total)


def test_proportional_split_with_largest_remainders_and_key_order_on_ties() -> None:
    assert compute_shares(100, {"a": 1, "b": 1, "c": 1}) == {"a": 34, "b": 33, "c": 33}
    assert compute_shares(10, {"a": 1, "b": 2, "c": 7}) == {"a": 1, "b": 2, "c": 7}
    assert compute_shares(10, {"x": 2, "y": 1}) == {"x": 7, "y": 3}  # quotas 6.67 and 3.33


def test_zero_and_negative_gains_get_nothing() -> None:
    assert compute_shares(1_000, {"good": 30, "idle": 0, "harmful": -500}) == {"good": 1_000, "idle": 0,
                                                                                 "harmful": 0}


def test_nobody_positive_means_an_equal_split_extra_units_to_the_highest_gains() -> None:
    assert compute_shares(10, {"c": 0, "a": -1, "b": 0}) == {"a": 3, "b": 4, "c": 3}
    assert compute_shares(11, {"c": 0, "a": -1, "b": 0}) == {"a": 3, "b": 4, "c": 4}


def test_nothing_to_split_and_nobody_to_pay() -> None:
    assert compute_shares(0, {}) == {}
    assert compute_shares(0, {"a": 5}) == {"a": 0}
    with pytest.raises(ConsensusError):
        compute_shares(5, {})
    with pytest.raises(ConsensusError):
        compute_shares(-1, {"a": 1})


def test_leave_one_out_gain_is_what_the_fused_score_loses_without_each() -> None:
    assert leave_one_out_gains(9_000, {"a": 8_500, "b": 9_000, "c": 9_200}) == {"a": 500, "b": 0, "c": -200}


def test_contributor_payouts_are_sorted_transactions_without_zeros() -> None:
    a, b, c = fake_key("a"), fake_key("b"), fake_key("c")
    payouts = compute_contributor_payouts(fake_hash("t"), 900, {b: 2, a: 1, c: -3})
    assert [(p.recipient, p.amount, p.role) for p in payouts] == sorted([(a, 300, "contributor"),
                                                                          (b, 600, "contributor")])
