"""PoLe difficulty: the accuracy target moves so that mined blocks come at a steady rate.

The difficulty is an accuracy target in score units (accuracy x SCORE_SCALE); what the
rule steers is the *error rate* e = SCORE_SCALE - target, because training time is a
power of it (learning curves go like error ~ time^-beta, so ln time = -s ln e + c with
sensitivity s = 1/beta). A controller on the log of e is then linear in the log of the
interval, whatever the model and however close to saturation.

The law is ASERT's (absolutely scheduled exponentially rising targets, Bitcoin Cash's
aserti3-2d): every block that comes late by (gap - T) multiplies e by
2^(gain * (gap - T) / T), so a block a whole target interval late grows e by 2^gain and
one that came instantly shrinks it by 2^-gain. A window of w blocks applies its blocks'
mean lateness once: the loop gain per retarget stays the same for any window (applying
the sum, as w single-block steps would, multiplies it by w and limit-cycles for w > 2 on
a steep learning curve). With window 1 this is ASERT exactly: an integral controller on
the schedule, so the *mean* interval (not the median or the geometric mean) is driven
to T with no steady-state offset.

Why it replaced the earlier rule (step = gain * r * e, r the window mean's relative
error clamped to [-1, 1]): near the target the two are nearly the same law (slopes gain
and gain * ln 2), but the old one saw every block slower than 2T as exactly 2T, so it
corrected a halving of hash power no faster than a mild slowdown, and its result had to
lean on ``max_step``. What made the benchmark slow (0.900 -> 0.949 in 20 blocks while
blocks came 22% fast) was one retarget per 4 blocks at a loop gain of about 0.2; the
benchmark now retargets every block, and the law's own bound acts instead of max_step.

Choice of gain: per block the loop gain is k = gain * ln 2 * s. It converges for k < 2,
without overshoot for k <= 1, and an interval error decays as (1 - k)^n. The benchmark
(benchmarks/block_rate.py) fits s from its own blocks: 1.2 to 4.4 on mnist1d (the more
the machine is loaded, the steeper), so the default gain 0.25 gives k = 0.2 to 0.75: no
overshoot, settled within 8 blocks after the miners double or halve (measured 4 and 7
at k = 0.2), and one noisy interval moves the next target by only gain * ln 2 times its
relative error.

Bounds: an interval counts at most ``interval_cap`` target intervals (a network restart
or an outage must not slam the difficulty), so one block moves log2 e by at most
gain * (cap - 1) up or gain down; a step is also at most ``max_step`` score units and at
least one (no dead band), and the result is clamped to [floor, ceiling]. The power of
two is fixed point (16 fractional bits, aserti3-2d's cubic for 2^x on [0, 1)), so
everything is integer arithmetic and every verifier recomputes the same number from
the headers' timestamps alone.

Heights here count the blocks the difficulty governs, with 0 the anchor (genesis):
block 1 .. window carry ``initial``; the difficulty changes at heights k*window + 1
(k >= 1), computed from the ``window`` intervals between blocks (k-1)*window .. k*window.
"""

from __future__ import annotations

from collections.abc import Sequence

from dlbc_ray.constants import BPS, SCORE_SCALE
from dlbc_ray.errors import ConsensusError, InvalidBlock
from dlbc_ray.schema.block import RetargetParams

__all__ = ["RetargetParams", "compute_difficulty_at", "compute_intervals", "compute_lateness",
           "compute_next_difficulty", "compute_standing_difficulty", "difficulty_schedule", "expected_difficulty",
           "is_retarget_height", "scale_by_pow2"]

_FRAC_BITS = 16
_ONE = 1 << _FRAC_BITS  # fixed point: exponents of two in 1/65536ths
_MAX_EXPONENT = 32 * _ONE


def is_retarget_height(height: int, params: RetargetParams) -> bool:
    """True where the difficulty may change: heights k*window + 1 for k >= 1."""
    return height > params.window and (height - 1) % params.window == 0


def compute_intervals(timestamps_ms: Sequence[int]) -> list[int]:
    """Gaps between consecutive timestamps; ``InvalidBlock`` unless they strictly increase."""
    gaps = [b - a for a, b in zip(timestamps_ms, timestamps_ms[1:])]
    if any(gap <= 0 for gap in gaps):
        raise InvalidBlock("difficulty: block timestamps do not strictly increase", reason="timestamp")
    return gaps


def compute_next_difficulty(current: int, intervals_ms: Sequence[int], params: RetargetParams) -> int:
    """The target after one retarget from ``current``, given the last window's intervals (ms)."""
    if not intervals_ms or any(gap <= 0 for gap in intervals_ms):
        raise ConsensusError("difficulty: retargeting needs at least one positive interval", reason="retarget")
    late = compute_lateness(intervals_ms, params)
    if late == 0:
        return _clamp(current, params.floor, params.ceiling)
    error = max(0, SCORE_SCALE - current)
    den = BPS * params.target_interval_ms * len(intervals_ms)
    exponent = late * params.gain_bps * _ONE // den  # rounded down: the same everywhere
    exponent = max(-_MAX_EXPONENT, min(_MAX_EXPONENT, exponent))  # past 2^+-32 the step is max_step anyway
    magnitude = abs(scale_by_pow2(error, exponent) - error)
    step = max(1, min(params.max_step, magnitude))
    return _clamp(current + (-step if late > 0 else step), params.floor, params.ceiling)


def compute_lateness(intervals_ms: Sequence[int], params: RetargetParams) -> int:
    """How far (ms) the window's blocks fell behind the schedule of one per target interval, each capped."""
    target = params.target_interval_ms
    return sum(min(gap, params.interval_cap * target) - target for gap in intervals_ms)


def scale_by_pow2(value: int, exponent: int) -> int:
    """``value * 2^(exponent / 2^16)`` rounded down, in integers only (``value`` >= 0).

    2^f for f in [0, 1) is aserti3-2d's cubic, within 0.013% of the true value and
    increasing in f, so the result never decreases as ``exponent`` grows.
    """
    shifts, frac = exponent >> _FRAC_BITS, exponent & (_ONE - 1)
    factor = _ONE + ((195_766_423_245_049 * frac + 971_821_376 * frac ** 2 + 5_127 * frac ** 3 + (1 << 47)) >> 48)
    scaled = value * factor
    return scaled << shifts >> _FRAC_BITS if shifts >= 0 else scaled >> (_FRAC_BITS - shifts)


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


def compute_difficulty_at(height: int, previous: int, recent_ms: Sequence[int], params: RetargetParams) -> int:
    """The target of the block at ``height`` from its parent's target and recent timestamps.

    ``recent_ms`` ends with the parent's timestamp (height - 1) and must hold at least
    ``window + 1`` timestamps at a retarget height; elsewhere it is not read. This is the
    incremental check for a ledger that keeps the last ``window + 1`` timestamps.
    """
    if height < 1:
        raise ConsensusError(f"difficulty: height {height} has no target (genesis is 0)", reason="retarget")
    if height <= params.window:
        return params.initial
    if not is_retarget_height(height, params):
        return previous
    if len(recent_ms) < params.window + 1:
        raise ConsensusError(f"difficulty: height {height} needs the last {params.window + 1} timestamps, "
                             f"got {len(recent_ms)}", reason="retarget")
    return compute_next_difficulty(previous, compute_intervals(recent_ms[-(params.window + 1):]), params)


def difficulty_schedule(timestamps_ms: Sequence[int], params: RetargetParams) -> list[int]:
    """Targets of blocks 1 .. len(timestamps_ms) from the timestamps of blocks 0 .. len - 1.

    ``timestamps_ms[0]`` is the anchor (genesis). Entry i - 1 is the target of block i,
    so a verifier checks header i against it; the last entry is the target of the next
    block to be mined, which depends only on headers already in the chain.
    """
    if not timestamps_ms:
        raise ConsensusError("difficulty: a schedule needs at least the anchor's timestamp", reason="retarget")
    compute_intervals(timestamps_ms)
    targets: list[int] = []
    current = params.initial
    for height in range(1, len(timestamps_ms) + 1):
        recent = timestamps_ms[max(0, height - params.window - 1): height]
        current = compute_difficulty_at(height, current, recent, params)
        targets.append(current)
    return targets


def expected_difficulty(timestamps_ms: Sequence[int], params: RetargetParams) -> int:
    """The target the next block must meet, given the timestamps of every block so far (anchor first)."""
    return difficulty_schedule(timestamps_ms, params)[-1]


def compute_standing_difficulty(height: int, previous: int | None, intervals_ms: Sequence[int],
                                params: RetargetParams) -> int:
    """The target of the ``height``-th standing block, from the previous standing block's target and
    the intervals of the last standing blocks (each measured from its parent block, of any kind)."""
    if height <= params.window or previous is None:
        return params.initial
    if not is_retarget_height(height, params) or not intervals_ms:
        return previous  # no interval yet: the block after genesis measures start-up and is not counted
    return compute_next_difficulty(previous, intervals_ms[-params.window:], params)
