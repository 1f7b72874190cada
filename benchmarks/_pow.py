"""A real SHA-256 proof-of-work miner: the baseline PoLe's steadier block rate is compared with.

A block is found when SHA-256(prev_hash | nonce) read as a 256-bit number is below
``2^(256 - bits)``, i.e. starts with ``bits`` zero bits. Each try succeeds with
probability 2^-bits independently, so the tries per block are geometric and, at a
steady hash rate, the interval is exponential with mean 2^bits / rate: its coefficient
of variation is 1 however the difficulty is set. That is the figure PoLe improves on.

    from benchmarks._pow import measure_hash_rate, mine_at_interval, coefficient_of_variation
    run = mine_at_interval(50, 0.5)            # 50 real blocks, ~0.5 s apart on this machine
    coefficient_of_variation(run.intervals_s)  # ~1 (+- about 1/sqrt(50))
"""

from __future__ import annotations

import hashlib
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

NONCE_BYTES = 8


def target_from_bits(bits: float) -> int:
    """The threshold a hash must be under; fractional bits give difficulties between powers of two."""
    if not 0 <= bits <= 255:
        raise ValueError(f"difficulty bits must be in [0, 255], got {bits}")
    whole, frac = int(bits), bits - int(bits)
    return max(1, round((1 << (256 - whole)) / 2**frac))


@dataclass(frozen=True)
class PowBlock:
    nonce: int
    digest: bytes
    hashes: int  # tries it took
    seconds: float  # wall time it took


def mine_block(prev: bytes, bits: float) -> PowBlock:
    """Try nonces 0, 1, ... until SHA-256(prev | nonce) has ``bits`` leading zero bits."""
    threshold = target_from_bits(bits).to_bytes(33, "big")[1:] if bits > 0 else b"\xff" * 32 + b"\x01"
    base = hashlib.sha256(prev)
    started = time.perf_counter()
    nonce = 0
    while True:
        h = base.copy()
        h.update(nonce.to_bytes(NONCE_BYTES, "big"))
        digest = h.digest()
        if digest < threshold:  # equal-length bytes compare as big-endian numbers
            return PowBlock(nonce, digest, nonce + 1, time.perf_counter() - started)
        nonce += 1


def measure_hash_rate(seconds: float = 0.5) -> float:
    """Tries per second of ``mine_block`` itself on this machine (one core), from easy blocks."""
    tries, spent, prev = 0, 0.0, b"calibration"
    while spent < seconds:
        block = mine_block(prev, 12)
        tries, spent, prev = tries + block.hashes, spent + block.seconds, block.digest
    return tries / spent


def calibrate_bits(target_mean_s: float, hash_rate: float, *, whole: bool = True) -> float:
    """Bits whose expected interval 2^bits / rate is ``target_mean_s`` (rounded to whole bits by default)."""
    if target_mean_s <= 0 or hash_rate <= 0:
        raise ValueError("target mean and hash rate must be positive")
    bits = max(0.0, math.log2(target_mean_s * hash_rate))
    return float(round(bits)) if whole else bits


def expected_interval_s(bits: float, hash_rate: float) -> float:
    """Mean time to a block: 2^256 / threshold tries, at ``hash_rate`` tries per second."""
    return 2**256 / target_from_bits(bits) / hash_rate


def mine_blocks(n: int, bits: float, *, seed: bytes = b"dlbc-pow") -> list[PowBlock]:
    """Mine ``n`` chained blocks (each on its parent's digest) and time each one."""
    blocks, prev = [], hashlib.sha256(seed).digest()
    for _ in range(n):
        block = mine_block(prev, bits)
        blocks.append(block)
        prev = block.digest
    return blocks


@dataclass(frozen=True)
class PowRun:
    bits: float
    hash_rate: float
    expected_mean_s: float
    blocks: tuple[PowBlock, ...]

    @property
    def intervals_s(self) -> list[float]:
        return [b.seconds for b in self.blocks]


def mine_at_interval(n: int, target_mean_s: float, *, whole_bits: bool = False, seed: bytes = b"dlbc-pow",
                     calibration_s: float = 0.5) -> PowRun:
    """Measure the hash rate, set the difficulty for ``target_mean_s``, mine ``n`` blocks."""
    rate = measure_hash_rate(calibration_s)
    bits = calibrate_bits(target_mean_s, rate, whole=whole_bits)
    blocks = mine_blocks(n, bits, seed=seed)
    return PowRun(bits, rate, expected_interval_s(bits, rate), tuple(blocks))


# ------------------------------------------------------------- the exact model


def exponential_intervals(n: int, mean_s: float, *, seed: int = 0) -> np.ndarray:
    """``n`` intervals of the ideal PoW chain: i.i.d. Exp(mean) (the limit of geometric tries)."""
    return np.random.default_rng(seed).exponential(mean_s, size=n)


def exponential_quantile(p: float, mean_s: float) -> float:
    """The interval that a share ``p`` of PoW blocks stay under: -mean * ln(1 - p)."""
    return -mean_s * math.log1p(-p)


EXPONENTIAL_CV = 1.0  # std / mean of Exp(mean), whatever the mean


def coefficient_of_variation(intervals: Sequence[float] | np.ndarray) -> float:
    """Sample standard deviation (n - 1) over the mean: 1 for PoW, lower is steadier."""
    values = [float(v) for v in intervals]
    if len(values) < 2:
        raise ValueError("the coefficient of variation needs at least two intervals")
    mean = statistics.fmean(values)
    if mean <= 0:
        raise ValueError("intervals must have a positive mean")
    return statistics.stdev(values) / mean


if __name__ == "__main__":
    run = mine_at_interval(40, 0.25)
    print(f"hash rate {run.hash_rate:,.0f}/s, {run.bits:.2f} bits, expected mean {run.expected_mean_s:.3f} s")
    print(f"40 real blocks: mean {statistics.fmean(run.intervals_s):.3f} s, "
          f"CV {coefficient_of_variation(run.intervals_s):.2f}; Exp model CV "
          f"{coefficient_of_variation(exponential_intervals(10_000, run.expected_mean_s)):.3f}")
