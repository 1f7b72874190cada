"""Benchmark of a round's crypto on the node that runs it: weight hashing and Ed25519 sign/verify.

Meant to run as a Ray job (it needs no Ray itself, for now):

    dlbc-ray bench submit examples/bench_round.py --address http://127.0.0.1:8265
    dlbc-ray bench submit examples/bench_round.py -- --quick      # 8 MB, seconds

Locally: ``python examples/bench_round.py --quick``. It prints one ``DLBC_RESULT {json}``
line, which ``dlbc_ray.runtime.jobs`` saves in the home's results/ folder.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import time
from collections.abc import Callable

import numpy as np

from dlbc_ray import crypto
from dlbc_ray.crypto import Identity
from dlbc_ray.runtime.jobs import emit_result
from dlbc_ray.schema import Submission

TENSOR_MB = 16  # a large layer's size; the last tensor takes the remainder


def synthetic_weights(size_mb: int, seed: int = 0) -> dict[str, np.ndarray]:
    """float32 tensors adding up to ``size_mb`` MiB, named like a state_dict."""
    rng = np.random.default_rng(seed)
    left, weights, i = size_mb * 2**20 // 4, {}, 0
    while left > 0:
        n = min(left, TENSOR_MB * 2**20 // 4)
        weights[f"layers.{i}.weight"] = rng.standard_normal(n, dtype=np.float32).reshape(-1, 256 if n % 256 == 0 else 1)
        left, i = left - n, i + 1
    return weights


def timed(fn: Callable[[], object], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def summary(times: list[float], scale: float = 1.0) -> dict[str, float]:
    return {"median": statistics.median(times) * scale, "min": min(times) * scale, "max": max(times) * scale}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 MB of weights and 2 repeats (for tests)")
    parser.add_argument("--size-mb", type=int, default=100, help="total weight size in MiB")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    size_mb, repeats = (8, 2) if args.quick else (args.size_mb, args.repeats)

    weights = synthetic_weights(size_mb)
    hash_times = timed(lambda: crypto.hash_weights(weights), repeats)
    model_hash = crypto.hash_weights(weights)
    miner = Identity.from_seed("bench-miner", b"bench")
    task_id = crypto.sha256_hex(b"bench-task")
    submission = Submission(task_id=task_id, miner=miner.public_key, model_hash=model_hash,
                            commit=crypto.compute_commit(model_hash, miner.public_key, task_id),
                            num_params=sum(w.size for w in weights.values()), claimed_score=9000, epochs=1,
                            train_ms=0, examples=1)
    chain_id = crypto.sha256_hex(b"bench-chain")
    signed = crypto.sign(miner, submission, chain_id)
    sign_times = timed(lambda: crypto.sign(miner, submission, chain_id), repeats * 20)

    def verify_uncached() -> None:  # verdicts are cached; a benchmark of the cache would measure a dict lookup
        crypto.clear_signature_cache()
        crypto.verify(signed, chain_id=chain_id, expected_signer=miner.public_key)

    verify_times = timed(verify_uncached, repeats * 20)

    median_hash = statistics.median(hash_times)
    print(f"hash_weights: {size_mb} MiB in {median_hash * 1e3:.1f} ms ({size_mb / median_hash:.0f} MiB/s)")
    print(f"sign: {statistics.median(sign_times) * 1e6:.0f} us, verify: {statistics.median(verify_times) * 1e6:.0f} us")
    emit_result({
        "benchmark": "bench_round", "version": 1, "quick": args.quick,
        "size_mb": size_mb, "tensors": len(weights), "repeats": repeats,
        "hash_weights_s": summary(hash_times), "hash_mib_per_s": size_mb / median_hash,
        "sign_us": summary(sign_times, 1e6), "verify_us": summary(verify_times, 1e6),
        "model_hash": model_hash,
        "host": socket.gethostname(), "cpus": os.cpu_count(), "python": platform.python_version(),
        "numpy": np.__version__, "dlbc_ray": os.path.dirname(os.path.abspath(crypto.__file__)),
    })


if __name__ == "__main__":
    main()
