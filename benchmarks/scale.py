"""How the protocol's cost grows with miners M and validators V, on a task so tiny that training does not matter.

Real rounds on a local Ray network (fractional CPUs; 300 training samples, 1 epoch) for each (M, V) of the
grid; per part of a round the median cost over the rounds with its spread, and its growth exponent k in
cost ~ (M x V)^k (least squares on log-log; target k <= 1). Then, without Ray, a validator's watermark
check of one submission against N registered miners (every key, as before, and the owners it reads now,
``consensus.marks``; target: flat in N), one ballot's signature and size, and a projection to 1,000 miners
and 100 validators from the fitted costs: per signature (M submissions + V ballots, one per validator and
round) and per vote line (M x V), not per M x V signatures.

    python benchmarks/scale.py --quick            # M in {4, 16}, V in {4, 16} (not 16 x 16), 3 rounds each
    python benchmarks/scale.py                    # M in {4, 16, 64} x V in {4, 16}, 3 rounds each
    python benchmarks/scale.py --quick --json --plot build/scale.png
    python benchmarks/scale.py --grid 64x16 --rounds 1   # one big network; prints its actors' memory
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("RAY_AUTH_MODE", "token")  # decided before Ray is imported, as the CLI does
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._scale_report import plot, print_report  # noqa: E402,F401  (plot: also for the tests)
from benchmarks._scale_units import (actor_memory, ballot_costs, ballot_marks, exponent, mark_checks,  # noqa: E402
                                     pair_costs)

QUICK_GRID = [(4, 4), (16, 4), (4, 16)]
FULL_GRID = [(m, v) for m in (4, 16, 64) for v in (4, 16)]
TRAIN_SAMPLES, TEST_SAMPLES = 300, 100
PROJECT_M, PROJECT_V = 1_000, 100

# part -> (how to read it (ms) from a round's timings and wall seconds, who pays it, what its cost is made of).
# Terms: "1" once; "M" per submission; "M2" per pair of submissions (near copies, provenance rivals); "sig" per
# signature (M submissions + V ballots: one signed ballot per validator and round); "vote" per vote line (M x V:
# each ballot holds M votes, hashed, tallied and stored). Validators run on their own machines in parallel, so
# their parts are one validator's wall time; the coordinator is one actor.
PARTS: dict[str, tuple[Any, str, tuple[str, ...]]] = {
    "scheduling": (lambda t, s: max(0.0, 1e3 * (t.get("collect_s", 0.0) - t.get("train_s", 0.0))), "coordinator",
                   ("M",)),
    "transfer": (lambda t, s: t.get("fetch_ms", 0.0), "validator", ("M",)),
    "checks": (lambda t, s: t.get("checks_ms", 0.0) + t.get("hash_ms", 0.0) + t.get("verify_ms", 0.0), "validator",
               ("M", "M2")),
    "ballot signing": (lambda t, s: t.get("sign_ms", 0.0), "validator", ("1", "M")),
    "signature checks": (lambda t, s: t.get("consensus_verify_ms", 0.0), "coordinator", ("sig", "vote")),
    "decision+block": (lambda t, s: max(0.0, 1e3 * t.get("commit_s", 0.0) - t.get("ledger_validate_ms", 0.0)
                                        - t.get("ledger_persist_ms", 0.0)), "coordinator", ("sig", "vote")),
    "ledger import": (lambda t, s: t.get("ledger_validate_ms", 0.0) + t.get("ledger_persist_ms", 0.0), "coordinator",
                      ("sig", "vote")),
    "round": (lambda t, s: s * 1e3, "round", ("M",)),
}
TERMS: dict[str, Any] = {"1": lambda m, v: 1, "M": lambda m, v: m, "M2": lambda m, v: m * (m - 1) / 2,
                         "sig": lambda m, v: m + v, "vote": lambda m, v: m * v}
MEMORY: dict[tuple[int, int], dict[str, Any]] = {}  # grid point -> actor_memory() after its last round


def tiny_bundle(home: Any) -> Any:
    """Digits cut to a few hundred samples: the protocol, not the training, dominates a round."""
    from dlbc_ray.models.data import Split, load_builtin

    full = load_builtin("digits", cache_dir=home.datasets)
    cut = lambda s, n: Split(x=s.x[:n], y=s.y[:n])  # noqa: E731
    return dataclasses.replace(full, train=cut(full.train, TRAIN_SAMPLES), test=cut(full.test, TEST_SAMPLES))


def run_grid_point(miners: int, validators: int, rounds: int) -> list[dict[str, float]]:
    """``rounds`` real rounds (after one warm-up) on a fresh local network; one row of part costs per round."""
    import ray

    from dlbc_ray.actors.coordinator import TaskData, now_ms
    from dlbc_ray.config import DEFAULT, TaskDefaults
    from dlbc_ray.runtime.home import open_home
    from dlbc_ray.runtime.network import assemble, load_identities, make_task, run_round, start_local_ray, teardown

    cfg = DEFAULT.model_copy(update={"miners": miners, "validators": validators,
                                     "task": TaskDefaults(epochs=1, target=0.1),
                                     "consensus": DEFAULT.consensus.model_copy(update={  # costs, not deadlines
                                         "max_faulty": (validators - 1) // 3, "collect_timeout_s": 1800.0,
                                         "validate_timeout_s": 1800.0})})
    home = open_home(tempfile.mkdtemp(prefix="dlbc-scale-"))
    start_local_ray(home, cfg, object_store_mb=512)
    rows: list[dict[str, float]] = []
    try:
        net = assemble(cfg, home, load_identities(home, cfg))
        bundle = tiny_bundle(home)
        data = TaskData(train=ray.put(bundle.train), test=ray.put(bundle.test))
        for i in range(rounds + 1):  # round 0 warms imports and caches; not reported
            task = make_task(net.identities.requester, cfg.task, bundle, nonce=time.time_ns(), created_ms=now_ms(),
                             chain_id=net.chain_id)
            report = run_round(net, task, data, timeout_s=1800)
            if not report.committed:
                raise SystemExit(f"M={miners} V={validators}: round failed: {report.failure}")
            if i:
                rows.append({p: read(report.timings, report.round_seconds) for p, (read, *_) in PARTS.items()})
        MEMORY[(miners, validators)] = actor_memory()
        teardown(net)
    finally:
        ray.shutdown()
    return rows


def summarize(grid: dict[tuple[int, int], list[dict[str, float]]], cores: int) -> dict[str, Any]:
    """Per part: median and spread per grid point, growth exponents (vs M x V; vs M at the smallest V; vs V at
    the smallest M) and its cost per term (``fit``). Validators share this machine's ``cores`` here (each has its
    own node on a cluster), so their parts are fitted on the wall time divided by V / cores (at least 1)."""
    out: dict[str, Any] = {}
    m0, v0 = min(m for m, _ in grid), min(v for _, v in grid)
    for part, (_, payer, terms) in PARTS.items():
        cells, medians, own = {}, {}, {}
        for (m, v), rows in grid.items():
            vals = [r[part] for r in rows]
            medians[(m, v)] = med = statistics.median(vals)
            own[(m, v)] = med / max(1.0, v / cores) if payer == "validator" else med
            cells[f"{m}x{v}"] = {"median_ms": med, "min_ms": min(vals), "max_ms": max(vals), "n": len(vals)}
        out[part] = {"cells": cells, "payer": payer, "coef_ms": fit(own, terms),
                     "exponent_mv": exponent([(m * v, c) for (m, v), c in medians.items()]),
                     "exponent_m": exponent([(m, c) for (m, v), c in medians.items() if v == v0]),
                     "exponent_v": exponent([(v, c) for (m, v), c in medians.items() if m == m0])}
    return out


def fit(costs: dict[tuple[int, int], float], terms: tuple[str, ...]) -> dict[str, float]:
    """ms per unit of each term, cost ~ sum_t c_t * count_t(M, V), c_t >= 0: non-negative least squares on relative
    errors (every grid point counts alike); one term: the median of cost / count."""
    from scipy.optimize import nnls

    points = [(mv, c) for mv, c in costs.items() if c > 0]
    if not points:
        return dict.fromkeys(terms, 0.0)
    if len(terms) == 1:
        return {terms[0]: statistics.median(c / TERMS[terms[0]](*mv) for mv, c in points)}
    a = np.array([[TERMS[t](*mv) / c for t in terms] for mv, c in points], dtype=np.float64)
    coef, _ = nnls(a, np.ones(len(points)))
    return dict(zip(terms, (float(x) for x in coef)))


# --------------------------------------------------------------------------------- projection


def projection(parts: dict[str, Any], marks: dict[str, Any], ballots: dict[int, dict[str, float]],
               m: int = PROJECT_M, v: int = PROJECT_V, checks: dict[str, Any] | None = None) -> dict[str, Any]:
    """Seconds per block at M miners (all submitting) and V validators, from the fitted cost per term.

    Validators run on V machines in parallel, so their side is one validator's wall time: transfer, checks
    (per submission and per pair), its ballot's signature, and the mark check of each submission against the
    owners it reads (``consensus.marks``: its round's submitters and the earlier models' owners; with every
    registered miner submitting, that is all M, as before; measured apart, so the part of ``checks`` fitted on
    small rounds that is marks counts twice: an upper bound). The coordinator (one actor) pays per signature
    (M submissions + V ballots) and per vote line (M x V) to check, decide, build and import the block, plus
    scheduling per miner. With ``checks`` (``ballot_marks``), the marks are priced as a validator reads them
    now: a ballot's submissions from one product, per key and submission at the largest ballot measured.
    """
    cost = {p: sum(c * TERMS[t](m, v) for t, c in info["coef_ms"].items()) / 1e3 for p, info in parts.items()}
    per_key = _per_key(marks, checks)
    read = m  # all M submit, so the round's submitters are the whole registry (``earlier`` owners among them)
    validator = {p: cost[p] for p, info in parts.items() if info["payer"] == "validator"}
    validator["marks"] = m * read * per_key / 1e3
    coordinator = {p: cost[p] for p, info in parts.items() if info["payer"] == "coordinator"}
    biggest = max(ballots)
    per_vote_bytes = ballots[biggest]["bytes"] / biggest
    load = {"signatures_checked": 2 * (m + v), "vote_lines": m * v, "block_mib": v * m * per_vote_bytes / 2**20,
            "ballot_verify_ms": ballots[biggest]["verify_ms"] * m / biggest}
    ring_gib = read * marks["host_m"] * marks["bits_t"] * 4 / 2**30
    sides = {"validator": sum(validator.values()), "coordinator": sum(coordinator.values())}
    worst = max([*((f"validator: {p}", c) for p, c in validator.items()),
                 *((f"coordinator: {p}", c) for p, c in coordinator.items())], key=lambda x: x[1])
    return {"miners": m, "validators": v, "validator_s": validator, "coordinator_s": coordinator, "sides_s": sides,
            "marks_read": read, "ring_gib": ring_gib, "coordinator_load": load, "first_bottleneck": worst[0],
            "first_bottleneck_s": worst[1]}


def _per_key(marks: dict[str, Any], checks: dict[str, Any] | None = None) -> float:
    """ms per key and submission of the ring (read at the largest ring measured; batched when measured)."""
    if checks and checks.get("ballot_marks"):
        rows = checks["ballot_marks"]["per_s"]
        biggest = max(rows, key=int)
        return rows[biggest]["batched_ms"] / int(biggest)
    biggest = max(marks["per_n"])
    return marks["per_n"][biggest]["all_ms"] / biggest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"grid {QUICK_GRID}, 3 rounds each")
    parser.add_argument("--grid", default=None, help="grid points as MxV,MxV (e.g. 64x16), instead of the preset")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--plot", type=Path, default=None, help="write the log-log plot here (PNG)")
    parser.add_argument("--out", type=Path, default=None, help="also write the figures here (JSON)")
    parser.add_argument("--from", dest="source", type=Path, default=None,
                        help="summarize the rounds of an earlier --out file instead of running new ones")
    args = parser.parse_args()
    grid_points, rounds = (QUICK_GRID, 3) if args.quick else (FULL_GRID, args.rounds)
    if args.grid:
        grid_points = [tuple(int(x) for x in point.split("x")) for point in args.grid.split(",")]
    grid, marks, cores = {}, None, os.cpu_count() or 1
    if args.source:
        saved = json.loads(args.source.read_text())
        grid = {tuple(int(x) for x in k.split("x")): rows for k, rows in saved["grid"].items()}
        cores = saved.get("cores", 2)
        if "ballot signing" not in next(iter(grid.values()))[0]:
            raise SystemExit(f"{args.source}: rounds from before votes were split by ballot; run them again")
        marks = {**saved["marks"], "per_n": {int(n): r for n, r in saved["marks"]["per_n"].items()}}
    marks = marks if marks and "all_ms" in next(iter(marks["per_n"].values())) else mark_checks(
        [4, 16, 64], repeats=5 if args.quick else 9)
    ballots = ballot_costs([16, 256, 1_000], repeats=5)
    checks = {"ballot_marks": ballot_marks([4, 16, 64], repeats=3 if args.quick else 5), "pairs": pair_costs(5)}
    for m, v in [] if args.source else grid_points:
        t0 = time.monotonic()
        grid[(m, v)] = run_grid_point(m, v, rounds)
        print(f"M={m} V={v}: {rounds} rounds in {time.monotonic() - t0:.0f} s (with start-up); actors' memory "
              + json.dumps(MEMORY[(m, v)]), flush=True)
        if args.out:  # each grid point as it ends: a later failure keeps the rounds already run
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps({"cores": cores, "grid": {f"{a}x{b}": r for (a, b), r in grid.items()},
                                            "marks": marks}, indent=1))
    parts = summarize(grid, cores)
    proj = projection(parts, marks, ballots, checks=checks)
    if args.plot:
        plot(grid, args.plot)
    figures = {"command": " ".join(["python", *sys.argv]), "cores": cores,
               "grid": {f"{m}x{v}": rows for (m, v), rows in grid.items()},
               "memory": {f"{m}x{v}": mem for (m, v), mem in MEMORY.items()},
               "parts": parts, "marks": marks, "ballots": ballots, "checks": checks, "projection": proj}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(figures, indent=1))
    if args.json:
        print(json.dumps(figures))
        return
    print_report(parts, marks, ballots, proj, checks)


if __name__ == "__main__":
    main()
