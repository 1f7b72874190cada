"""The ASERT-style retarget law on its own: fixed-point 2^x, bounds, monotonicity, exactness, and
convergence after a step change in hash power against a model of PoLe block times."""

from __future__ import annotations

import math
import pickle
import random
import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dlbc_ray.consensus.difficulty import (
    RetargetParams,
    compute_difficulty_at,
    compute_lateness,
    compute_next_difficulty,
    compute_standing_difficulty,
    scale_by_pow2,
)
from dlbc_ray.constants import SCORE_SCALE

ONE = 1 << 16
WIDE = RetargetParams(target_interval_s=2.5, window=1, initial=9_000, max_step=SCORE_SCALE, floor=0,
                      ceiling=SCORE_SCALE)
gains = st.integers(1, 10_000)
gaps = st.integers(1, 10**7)


@given(value=st.integers(0, 10**6), exponent=st.integers(-40 * ONE, 40 * ONE))
def test_fixed_point_power_of_two_is_within_its_stated_error(value: int, exponent: int) -> None:
    got = scale_by_pow2(value, exponent)
    exact = value * 2 ** (exponent / ONE)
    assert type(got) is int and got >= 0
    assert abs(got - exact) <= 1.3e-4 * exact + 1


@given(value=st.integers(0, 10**6), a=st.integers(-40 * ONE, 40 * ONE), b=st.integers(-40 * ONE, 40 * ONE))
def test_fixed_point_power_of_two_never_decreases_with_the_exponent(value: int, a: int, b: int) -> None:
    low, high = sorted((a, b))
    assert scale_by_pow2(value, low) <= scale_by_pow2(value, high)


def test_whole_powers_of_two_are_exact() -> None:
    assert [scale_by_pow2(1_000, k * ONE) for k in (-3, -1, 0, 1, 5)] == [125, 500, 1_000, 2_000, 32_000]


@given(current=st.integers(1_000, 9_000), intervals=st.lists(gaps, min_size=1, max_size=8), gain=gains,
       cap=st.integers(1, 10))
def test_one_retarget_moves_log2_error_by_at_most_the_gain_times_the_capped_lateness(
        current: int, intervals: list[int], gain: int, cap: int) -> None:
    params = WIDE.model_copy(update={"gain_bps": gain, "interval_cap": cap})
    error, following = SCORE_SCALE - current, SCORE_SCALE - compute_next_difficulty(current, intervals, params)
    g = gain / 10_000
    low, high = error * 2 ** -g, error * 2 ** (g * (cap - 1))
    assert low * (1 - 1e-4) - 1 <= following <= max(error + 1, high * (1 + 1e-4) + 1)


@given(current=st.integers(0, SCORE_SCALE), intervals=st.lists(gaps, min_size=1, max_size=8),
       bump=st.integers(1, 10**6), at=st.integers(0, 7), gain=gains)
def test_a_later_block_never_gives_a_higher_target(current: int, intervals: list[int], bump: int, at: int,
                                                  gain: int) -> None:
    params = WIDE.model_copy(update={"gain_bps": gain, "max_step": 300, "floor": 1_000, "ceiling": 9_800})
    later = list(intervals)
    later[at % len(later)] += bump
    assert compute_next_difficulty(current, later, params) <= compute_next_difficulty(current, intervals, params)


@given(current=st.integers(0, SCORE_SCALE), intervals=st.lists(gaps, min_size=1, max_size=8), gain=gains)
def test_the_direction_follows_the_sign_of_the_lateness(current: int, intervals: list[int], gain: int) -> None:
    params = WIDE.model_copy(update={"gain_bps": gain, "floor": 0, "ceiling": SCORE_SCALE})
    following, late = compute_next_difficulty(current, intervals, params), compute_lateness(intervals, params)
    if late > 0:
        assert following < current or current == 0
    elif late < 0:
        assert following > current or current == SCORE_SCALE
    else:
        assert following == current


@given(current=st.integers(0, SCORE_SCALE), intervals=st.lists(gaps, min_size=1, max_size=8), gain=gains)
def test_the_retarget_is_integer_exact_and_deterministic(current: int, intervals: list[int], gain: int) -> None:
    params = WIDE.model_copy(update={"gain_bps": gain})
    first = compute_next_difficulty(current, intervals, params)
    again = compute_next_difficulty(current, tuple(intervals), pickle.loads(pickle.dumps(params)))
    assert type(first) is int and first == again


# ------------------------------------------------------------------ a model of PoLe's block times
# interval = overhead + work(e) / power, with work(e) ~ e^-s: the learning-curve law the module
# docstring assumes. s = 2 (beta 1/2) and an overhead of 40% of T are what the PoLe benchmark
# sees on digits; both make the loop gain per block about 0.25 * ln 2 * 2 * 0.6 = 0.2.


def block_ms(target: int, power: float, rng: random.Random, noise: float) -> int:
    error = (SCORE_SCALE - target) / SCORE_SCALE
    work = 1_500 * (0.08 / error) ** 2
    return max(1, round((1_000 + work / power) * (1 + noise * rng.uniform(-1, 1))))


def mine_with_power_changes(params: RetargetParams, phases: list[tuple[float, int]], noise: float,
                            seed: int) -> list[int]:
    """Intervals of a chain mined in phases of (hash power, blocks), the controller in the loop."""
    rng, stamps, target, height = random.Random(seed), [0], params.initial, 0
    for power, blocks in phases:
        for _ in range(blocks):
            height += 1
            target = compute_difficulty_at(height, target, stamps[-params.window - 1:], params)
            stamps.append(stamps[-1] + block_ms(target, power, rng, noise))
    return [b - a for a, b in zip(stamps, stamps[1:])]


def settled_after(intervals: list[int], target_ms: int, window: int = 4, band: float = 0.2) -> int | None:
    """As benchmarks/block_rate.py counts it: blocks until a window's mean is within the band."""
    for end in range(window, len(intervals) + 1):
        if abs(statistics.mean(intervals[end - window:end]) - target_ms) <= band * target_ms:
            return end
    return None


PLANT = WIDE.model_copy(update={"initial": 9_000, "floor": 6_000, "ceiling": 9_700, "max_step": 200})


@pytest.mark.parametrize("change", [2.0, 0.5])
@pytest.mark.parametrize("seed", range(5))
def test_the_interval_is_back_within_20_percent_within_8_blocks_after_hash_power_doubles_or_halves(
        change: float, seed: int) -> None:
    intervals = mine_with_power_changes(PLANT, [(1.0, 40), (change, 16)], noise=0.1, seed=seed)
    before, after = intervals[20:40], intervals[40:]
    assert abs(statistics.mean(before) - 2_500) <= 0.1 * 2_500  # on target before the change
    assert abs(statistics.mean(after[:4]) - 2_500) > 0.2 * 2_500 or change == 2.0  # halving: a real upset
    settled = settled_after(after, 2_500)
    assert settled is not None and settled <= 8
    assert abs(statistics.mean(after[8:]) - 2_500) <= 0.1 * 2_500  # and it stays


def test_noise_alone_is_not_amplified_into_the_interval_spread() -> None:
    intervals = mine_with_power_changes(PLANT, [(1.0, 400)], noise=0.15, seed=3)[50:]
    spread = statistics.stdev(intervals) / statistics.mean(intervals)
    assert abs(statistics.mean(intervals) - 2_500) <= 0.03 * 2_500
    assert spread <= 1.3 * 0.15 / math.sqrt(3)  # uniform +-15% noise has CV 0.087; the loop adds < 30%


def test_a_window_of_one_keeps_the_target_until_a_counted_interval_exists() -> None:
    # The block after genesis is not counted (it measures start-up), so at standing height 2 with
    # window 1 there is nothing to retarget from: the target stands, and the next interval moves it.
    assert compute_standing_difficulty(2, 9_000, (), WIDE) == 9_000
    assert compute_standing_difficulty(3, 9_000, (5_000,), WIDE) < 9_000
    assert compute_standing_difficulty(1, None, (), WIDE) == WIDE.initial
