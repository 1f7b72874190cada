"""Ledger speed: actor restart, full `chain verify`, and durable import, on synthetic chains.

Each block is a real task block made by the project's proposal and signing code
(tests/builders.py): 3 signed submissions, 4 validators' signed ballots (a vote on each), the
task's posting and its payouts. Figures are the median of 3 runs with their spread.
Beside each wall-clock figure is the CPU time it took (this process and its workers)
and its idle-core bound: the best figure that CPU work allows on this many idle cores
(all of it spread evenly, or the calling thread's own share, whichever takes longer;
a commit's wait for the disk comes on top). On a shared machine the wall clock
measures the neighbours too; the CPU figures much less.

    python benchmarks/ledger.py [--quick] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dlbc_ray import crypto  # noqa: E402
from dlbc_ray.actors.ledger import Ledger  # noqa: E402
from dlbc_ray.consensus import compute_block_hash  # noqa: E402
from dlbc_ray.ledger import Chain, verify_chain  # noqa: E402
from dlbc_ray.ledger.chain import encode_block  # noqa: E402
from dlbc_ray.ledger.snapshot import is_checkpoint_height, make_checkpoint  # noqa: E402
from dlbc_ray.ledger.store import LedgerStore, StoredBlock, Synchronous  # noqa: E402
from dlbc_ray.schema import Block  # noqa: E402
from tests.builders import World  # noqa: E402

SCORES = {0: [9000, 9100, 8900, 9050], 1: [8000] * 4, 2: [7000] * 4}  # 3 submissions x 4 validators
TARGETS = {"restart_s": 2.0, "verify_s": 10.0, "import_blocks_per_s": 1000.0}


def build_blocks(n: int) -> tuple[World, list[Block], dict[int, object]]:
    """``n`` task blocks after genesis, and the state checkpoints a ledger would have stored."""
    world, blocks, checkpoints = World(), [], {}
    for _ in range(n):
        block, _ = world.round(SCORES, task=world.task(reward=5))
        state = world.apply(block)
        blocks.append(block)
        if is_checkpoint_height(block.height):
            checkpoints[block.height] = make_checkpoint(state)
    return world, blocks, checkpoints


def write_ledger(path: Path, world: World, blocks: list[Block], checkpoints: dict[int, object]) -> None:
    """The ledger a running network would have written (every block was valid when proposed)."""
    store = LedgerStore(path)
    rows = [StoredBlock(b.height, compute_block_hash(b.header), b.header.prev_hash, encode_block(b))
            for b in [world.genesis, *blocks]]
    store.append(rows[0])
    store.append_many(rows[1:], list(checkpoints.values()))  # type: ignore[arg-type]
    store.close()


def cold() -> None:
    """Forget signatures this process already verified (a ledger actor has not seen the consensus actor's)."""
    crypto.clear_signature_cache()


def cpu_s() -> float:
    """CPU seconds of this process and of its finished workers (``chain verify`` runs some)."""
    own, workers = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + workers.ru_utime + workers.ru_stime


def floor_s(cpu: float, main: float) -> float:
    """The least wall time this CPU work could take on idle cores: all of it spread evenly, or the calling thread's share."""
    return max(main, cpu / (os.cpu_count() or 1))


def timed(fn: Callable[[], object], runs: int = 3) -> list[tuple[float, float, float]]:
    """(wall s, CPU s, CPU floor s) of each run, from a cold signature cache."""
    out = []
    for _ in range(runs):
        cold()
        c0, m0, t0 = cpu_s(), time.thread_time(), time.perf_counter()
        fn()
        cpu = cpu_s() - c0
        out.append((time.perf_counter() - t0, cpu, floor_s(cpu, time.thread_time() - m0)))
    return out


def import_rate(world: World, blocks: list[Block], folder: Path, batch: int,
                synchronous: Synchronous = "FULL") -> list[tuple[float, float, float]]:
    """(blocks/s, CPU ms a block, blocks/s the CPU floor allows) for validate + durable append, ``batch`` blocks a
    transaction (1: a commit a block; the disk's commit latency comes on top of the floor)."""
    rates = []
    for run in range(3):
        path = folder / f"import-{batch}-{synchronous}-{run}.sqlite"
        chain = Chain.open(path, synchronous=synchronous)
        chain.import_block(world.genesis)
        cold()
        c0, m0, t0 = cpu_s(), time.thread_time(), time.perf_counter()
        for i in range(0, len(blocks), batch):
            chain.import_blocks(blocks[i:i + batch])
        cpu = cpu_s() - c0
        rates.append((len(blocks) / (time.perf_counter() - t0), cpu * 1e3 / len(blocks),
                      len(blocks) / floor_s(cpu, time.thread_time() - m0)))
        chain.close()
    return rates


def commit_latency_ms(folder: Path, body: bytes, n: int = 50) -> float:
    """Median wall time of one durable commit of a block-sized row: what bounds one-commit-per-block import."""
    store = LedgerStore(folder / "commits.sqlite")
    store.append(StoredBlock(0, f"{0:064x}", "0" * 64, body))
    times = []
    for i in range(1, n + 1):
        t0 = time.perf_counter()
        store.append(StoredBlock(i, f"{i:064x}", f"{i - 1:064x}", body))
        times.append(time.perf_counter() - t0)
    store.close()
    return statistics.median(times) * 1e3


def summary(runs: list[tuple[float, float, float]]) -> dict[str, float]:
    values = [r[0] for r in runs]
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "cpu_median": statistics.median(r[1] for r in runs), "floor_median": statistics.median(r[2] for r in runs)}


def measure(n: int, import_n: int, folder: Path) -> dict[str, object]:
    folder = folder / f"chain-{n}"  # each size imports into fresh files
    folder.mkdir()
    t0 = time.perf_counter()
    world, blocks, checkpoints = build_blocks(n)
    built = time.perf_counter() - t0
    path = folder / f"chain-{n}.sqlite"
    write_ledger(path, world, blocks, checkpoints)
    restart = timed(lambda: Ledger(str(path)))
    verify = timed(lambda: verify_chain(path))
    commit_ms = commit_latency_ms(folder, encode_block(blocks[0]))
    single = import_rate(world, blocks[:import_n], folder, 1)
    batched = import_rate(world, blocks[:import_n], folder, 100)
    normal = import_rate(world, blocks[:import_n], folder, 1, "NORMAL")
    return {"blocks": n + 1, "build_s": round(built, 1), "ledger_mb": round(path.stat().st_size / 2**20, 1),
            "restart_s": summary(restart), "verify_s": summary(verify),
            "import_blocks_per_s": summary(single), "import_batched_blocks_per_s": summary(batched),
            "import_normal_blocks_per_s": summary(normal),
            "commit_ms": round(commit_ms, 2)}


def show(result: dict[str, object]) -> None:
    print(f"chain of {result['blocks']} blocks ({result['ledger_mb']} MB; built in {result['build_s']} s)")
    rows = [("restart (ledger actor __init__)", "restart_s", "s", f"< {TARGETS['restart_s']:g} s", "s CPU"),
            (f"chain verify, all signatures, {os.cpu_count()} cores", "verify_s", "s", f"< {TARGETS['verify_s']:g} s",
             "s CPU"),
            ("import, one durable commit per block", "import_blocks_per_s", "blocks/s",
             f">= {TARGETS['import_blocks_per_s']:g} blocks/s", "ms CPU/block"),
            ("import, 100 blocks per commit", "import_batched_blocks_per_s", "blocks/s",
             f">= {TARGETS['import_blocks_per_s']:g} blocks/s", "ms CPU/block"),
            ("import, a commit per block, sync NORMAL*", "import_normal_blocks_per_s", "blocks/s",
             f">= {TARGETS['import_blocks_per_s']:g} blocks/s", "ms CPU/block")]
    for label, key, unit, target, cpu_unit in rows:
        s = result[key]
        assert isinstance(s, dict)
        print(f"  {label:<42} {s['median']:9.2f} {unit:<9} (spread {s['min']:.2f}-{s['max']:.2f}; "
              f"{s['cpu_median']:.2f} {cpu_unit}; idle-core bound {s['floor_median']:.2f} {unit})  target {target}")
    ms = float(result["commit_ms"])  # type: ignore[arg-type]
    print(f"  (one durable commit on this disk: {ms:.2f} ms, so one commit per block cannot pass {1e3 / ms:.0f} blocks/s)")
    print("  * synchronous=NORMAL: a returned import survives a process kill, not an OS crash or power loss; the "
          "ledger's default is FULL (the rows above)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 blocks only (under a minute)")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = parser.parse_args(argv)
    sizes = [1_000] if args.quick else [1_000, 10_000]
    results = []
    with tempfile.TemporaryDirectory(prefix="dlbc-ledger-bench-") as tmp:
        for n in sizes:
            results.append(measure(n, 200 if args.quick else 500, Path(tmp)))
            if not args.json:
                show(results[-1])
    if args.json:
        print(json.dumps({"command": " ".join(["python", *sys.argv]), "targets": TARGETS, "results": results}))


if __name__ == "__main__":
    main()
