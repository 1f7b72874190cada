"""PoLe retargeting: converges on a simulated miner, bounded steps, clamps, window boundaries, purity."""

from __future__ import annotations

import math
import pickle
import random
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dlbc_ray.consensus.difficulty import (
    RetargetParams,
    compute_difficulty_at,
    compute_next_difficulty,
    difficulty_schedule,
    expected_difficulty,
    is_retarget_height,
)
from dlbc_ray.errors import ConfigError, ConsensusError, InvalidBlock

TARGET_MS = 10_000
PARAMS = RetargetParams(target_interval_s=10, initial=5_000, window=5, max_step=200, floor=1_000, ceiling=9_700)


def saturating(a: int) -> int:
    """ms to reach accuracy a (x1e-4) when the model saturates at 0.98: error-to-go ~ time^-1/2."""
    return round(2_000 * ((9_800 - 5_000) / (9_800 - a)) ** 2)


def exponential(a: int) -> int:
    """ms to reach accuracy a: every extra 0.1 of accuracy multiplies the time by e."""
    return round(300 * math.exp(a / 1_000))


def mine(params: RetargetParams, ms_to: Callable[[int], int], blocks: int, jitter: float = 0.0) -> list[int]:
    """Timestamps of a chain whose every block takes ``ms_to(target in force)`` (times noise)."""
    rng = random.Random(7)
    stamps, target = [0], params.initial
    for height in range(1, blocks + 1):
        target = compute_difficulty_at(height, target, stamps[-params.window - 1:], params)
        spent = ms_to(target)
        stamps.append(stamps[-1] + max(1, round(spent * (1 + jitter * rng.uniform(-1, 1)))))
    return stamps


def mean_interval(stamps: list[int], last: int) -> float:
    return (stamps[-1] - stamps[-1 - last]) / last


@pytest.mark.parametrize("miner", [saturating, exponential])
@pytest.mark.parametrize("start", [1_000, 9_700])
def test_block_interval_converges_to_the_target_from_above_and_below(miner: Callable[[int], int], start: int) -> None:
    params = PARAMS.model_copy(update={"initial": start})
    stamps = mine(params, miner, 400)
    assert not TARGET_MS / 2 < miner(start) < 2 * TARGET_MS  # starts a factor 2+ off, one side or the other
    assert abs(mean_interval(stamps, 50) - TARGET_MS) < 0.02 * TARGET_MS
    settled = difficulty_schedule(stamps, params)[-100:]
    assert max(settled) - min(settled) <= 2  # no oscillation once there: the one-unit dither at most


def test_noisy_training_times_still_average_to_the_target() -> None:
    stamps = mine(PARAMS.model_copy(update={"initial": 1_000}), saturating, 600, jitter=0.3)
    assert abs(mean_interval(stamps, 200) - TARGET_MS) < 0.1 * TARGET_MS


def test_fast_blocks_raise_the_target_and_slow_blocks_lower_it() -> None:
    assert compute_next_difficulty(5_000, [5_000] * 5, PARAMS) > 5_000
    assert compute_next_difficulty(5_000, [20_000] * 5, PARAMS) < 5_000
    assert compute_next_difficulty(5_000, [TARGET_MS] * 5, PARAMS) == 5_000


def test_one_interval_of_lateness_scales_the_error_rate_by_two_to_the_gain() -> None:
    # gain 1/4: half a target interval early -> e * 2^(-1/8); one late -> e * 2^(1/4); rounded down.
    params = PARAMS.model_copy(update={"max_step": 10_000, "ceiling": 10_000})
    assert compute_next_difficulty(10_000 - 800, [5_000], params) == 10_000 - math.floor(800 * 2 ** -0.125)
    assert compute_next_difficulty(10_000 - 800, [20_000], params) == 10_000 - math.floor(800 * 2 ** 0.25)
    assert compute_next_difficulty(10_000 - 800, [10_000, 20_000], params) == 10_000 - math.floor(800 * 2 ** 0.125)


def test_a_target_at_the_ceiling_can_still_fall_and_one_at_the_floor_rise() -> None:
    assert compute_next_difficulty(9_700, [50_000], PARAMS) == 9_700 - 200  # 300 * (2^0.75 - 1) = 204 > max_step
    assert compute_next_difficulty(1_000, [1], PARAMS) > 1_000
    perfect = PARAMS.model_copy(update={"ceiling": 10_000})
    assert compute_next_difficulty(10_000, [50_000], perfect) == 9_999  # no error left: the one-unit minimum


def test_extreme_intervals_count_as_interval_cap_targets() -> None:
    wide = PARAMS.model_copy(update={"max_step": 10_000})
    slow = compute_next_difficulty(5_000, [10**12], wide)
    assert slow == compute_next_difficulty(5_000, [4 * TARGET_MS], wide)
    assert 10_000 - slow == pytest.approx(5_000 * 2 ** 0.75, abs=1)  # e * 2^(gain * (cap - 1))


@given(current=st.integers(0, 10_000), intervals=st.lists(st.integers(1, 10**8), min_size=1, max_size=20),
       max_step=st.integers(1, 500), gain=st.integers(1, 10_000), bounds=st.tuples(st.integers(0, 10_000),
                                                                                   st.integers(0, 10_000)))
def test_steps_are_bounded_and_the_result_is_clamped(current: int, intervals: list[int], max_step: int, gain: int,
                                                     bounds: tuple[int, int]) -> None:
    floor, ceiling = sorted(bounds)
    params = RetargetParams(target_interval_s=10, initial=floor, floor=floor, ceiling=ceiling, max_step=max_step,
                            gain_bps=gain)
    clamped = min(ceiling, max(floor, current))
    following = compute_next_difficulty(current, intervals, params)
    assert floor <= following <= ceiling
    assert abs(following - clamped) <= max_step


@given(current=st.integers(1_000, 9_700), a=st.integers(1, 10**6), b=st.integers(1, 10**6))
def test_longer_intervals_never_give_a_higher_target(current: int, a: int, b: int) -> None:
    short, long = sorted((a, b))
    assert compute_next_difficulty(current, [short] * 3, PARAMS) >= compute_next_difficulty(current, [long] * 3, PARAMS)


def test_difficulty_changes_only_at_window_boundaries() -> None:
    stamps = mine(PARAMS, saturating, 60)
    schedule = difficulty_schedule(stamps, PARAMS)
    changed = [h for h in range(2, len(schedule) + 1) if schedule[h - 1] != schedule[h - 2]]
    assert changed and all(is_retarget_height(h, PARAMS) for h in changed)
    assert schedule[: PARAMS.window] == [PARAMS.initial] * PARAMS.window
    assert [h for h in range(1, 22) if is_retarget_height(h, PARAMS)] == [6, 11, 16, 21]


def test_a_window_of_one_retargets_every_block_from_the_last_interval() -> None:
    params = PARAMS.model_copy(update={"window": 1})
    assert not is_retarget_height(1, params) and is_retarget_height(2, params)
    assert difficulty_schedule([0, 1_000], params) == [5_000, compute_next_difficulty(5_000, [1_000], params)]


def test_incremental_check_agrees_with_the_full_schedule() -> None:
    stamps = mine(PARAMS, exponential, 40)
    schedule = difficulty_schedule(stamps, PARAMS)
    previous = 0
    for height in range(1, len(stamps) + 1):
        recent = stamps[max(0, height - PARAMS.window - 1): height]
        previous = compute_difficulty_at(height, previous, recent, PARAMS)
        assert previous == schedule[height - 1]
    assert expected_difficulty(stamps, PARAMS) == schedule[-1]


def test_the_schedule_is_pure_and_deterministic() -> None:
    stamps = tuple(mine(PARAMS, saturating, 30))
    first = difficulty_schedule(stamps, PARAMS)
    assert difficulty_schedule(list(stamps), pickle.loads(pickle.dumps(PARAMS))) == first
    assert all(type(d) is int for d in first)


def test_timestamps_that_do_not_increase_are_an_invalid_block() -> None:
    with pytest.raises(InvalidBlock) as info:
        difficulty_schedule([0, 5, 5], PARAMS)
    assert info.value.reason == "timestamp"


def test_bad_retarget_inputs_are_named() -> None:
    with pytest.raises(ConsensusError):
        compute_next_difficulty(5_000, [], PARAMS)
    with pytest.raises(ConsensusError):
        compute_difficulty_at(6, 5_000, [0, 1], PARAMS)
    with pytest.raises(ConsensusError):
        difficulty_schedule([], PARAMS)


@pytest.mark.parametrize("changes", [
    {"target_interval_s": 0}, {"target_interval_s": -1}, {"target_interval_s": 0.0001},
    {"window": 0}, {"floor": 9_000, "initial": 5_000}, {"gain_bps": 0}, {"max_step": 0}, {"bogus": 1},
])
def test_bad_params_are_a_one_line_config_error(changes: dict[str, object]) -> None:
    fields = {"target_interval_s": 10, "initial": 5_000, **changes}
    with pytest.raises(ConfigError) as info:
        RetargetParams(**fields)
    assert "\n" not in str(info.value) and str(info.value).startswith("retarget params: ")


def test_zero_target_interval_names_its_field() -> None:
    with pytest.raises(ConfigError, match="target_interval_s"):
        RetargetParams(target_interval_s=0, initial=5_000)
