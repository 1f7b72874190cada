"""PoLe difficulty: the accuracy target moves so that mined blocks come at a steady rate.

The difficulty is an accuracy target in score units (accuracy x SCORE_SCALE). Training
longer reaches a higher accuracy, so a higher target makes rounds longer; blocks that
come faster than ``target_interval_s`` raise it, slower ones lower it.

The response is very non-linear: near what the model can reach, each extra unit of
accuracy costs far more time (learning curves go like error ~ time^-beta). So the rule
is proportional in the *error rate* e = SCORE_SCALE - target rather than in the target:

    r  = (T - mean_interval) / T, clamped to [-1, 1]      (> 0: blocks too fast)
    e' = e * (1 - gain * r)                                 i.e. step = gain * r * e

Steps shrink as the target nears perfect accuracy, where time is most sensitive, and
grow far from it. If the time to reach error e goes like e^(-1/beta), one retarget
moves the interval error by a factor (1 - gain/beta): it converges monotonically for
gain <= beta and with damped overshoot up to 2 beta (beta is about 0.3-1 for small
nets; the default gain is 0.25). Near a saturation point a_max < 1 the local gain grows
by e / (a_max - target), which is why the ceiling must sit below what the model can
reach. Each step is at least one unit (no dead band), at most ``max_step``, and the
result is clamped to [floor, ceiling]. Everything is integer arithmetic, so every
verifier recomputes the same number from the headers' timestamps alone.

Heights here count the blocks the difficulty governs, with 0 the anchor (genesis):
block 1 .. window carry ``initial``; the difficulty changes at heights k*window + 1
(k >= 1), computed from the ``window`` intervals between blocks (k-1)*window .. k*window.
"""

from __future__ import annotations

from collections.abc import Sequence

from dlbc_ray.constants import BPS, SCORE_SCALE
from dlbc_ray.errors import ConsensusError, InvalidBlock
from dlbc_ray.schema.block import RetargetParams

__all__ = ["RetargetParams", "compute_difficulty_at", "compute_intervals", "compute_next_difficulty",
           "compute_standing_difficulty",
           "difficulty_schedule", "expected_difficulty", "is_retarget_height"]


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
    den = len(intervals_ms) * params.target_interval_ms
    capped = sum(min(gap, params.interval_cap * params.target_interval_ms) for gap in intervals_ms)
    num = max(-den, min(den, den - capped))  # r = num / den in [-1, 1]
    if num == 0:
        return _clamp(current, params.floor, params.ceiling)
    error = max(0, SCORE_SCALE - current)
    magnitude = error * params.gain_bps * abs(num) // (BPS * den)  # rounded toward zero
    step = max(1, min(params.max_step, magnitude))
    return _clamp(current + (step if num > 0 else -step), params.floor, params.ceiling)


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
    if not is_retarget_height(height, params):
        return previous
    return compute_next_difficulty(previous, intervals_ms[-params.window:], params)
