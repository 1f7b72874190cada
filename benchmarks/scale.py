"""How the protocol's cost grows with miners M and validators V, on a task so tiny that training does not matter.

Real rounds on a local Ray network (fractional CPUs; 300 training samples, 1 epoch) for each (M, V) of the
grid; per part of a round the median cost over the rounds with its spread, and its growth exponent k in
cost ~ (M x V)^k (least squares on log-log; target k <= 1). Then, without Ray, a validator's watermark
check of one submission against N registered miners, key by key (today) and as one key ring (target: flat
in N once only the round's candidates are checked), and a projection to 1,000 miners and 100 validators
built from the measured per-unit costs.

    python benchmarks/scale.py --quick            # M in {4, 16}, V in {4, 16} (not 16 x 16), 3 rounds each
    python benchmarks/scale.py                    # M in {4, 16, 64} x V in {4, 16}, 3 rounds each
    python benchmarks/scale.py --quick --json --plot build/scale.png
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("RAY_AUTH_MODE", "token")  # decided before Ray is imported, as the CLI does
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

QUICK_GRID = [(4, 4), (16, 4), (4, 16)]
FULL_GRID = [(m, v) for m in (4, 16, 64) for v in (4, 16)]
TRAIN_SAMPLES, TEST_SAMPLES = 300, 100
PROJECT_M, PROJECT_V = 1_000, 100

# part -> how to read it (ms) from a round's timings and wall seconds; the unit it is paid per
PARTS: dict[str, tuple[Any, str]] = {
    "scheduling": (lambda t, s: max(0.0, 1e3 * (t.get("collect_s", 0.0) - t.get("train_s", 0.0))), "M"),
    "transfer": (lambda t, s: t.get("fetch_ms", 0.0), "M"),
    "checks": (lambda t, s: t.get("checks_ms", 0.0) + t.get("hash_ms", 0.0) + t.get("verify_ms", 0.0), "M"),
    "votes": (lambda t, s: t.get("sign_ms", 0.0) + t.get("consensus_verify_ms", 0.0), "MV"),
    "decision+block": (lambda t, s: max(0.0, 1e3 * t.get("commit_s", 0.0) - t.get("ledger_validate_ms", 0.0)
                                        - t.get("ledger_persist_ms", 0.0)), "MV"),
    "ledger import": (lambda t, s: t.get("ledger_validate_ms", 0.0) + t.get("ledger_persist_ms", 0.0), "MV"),
    "round": (lambda t, s: s * 1e3, "MV"),
}
TARGET_EXPONENT = 1.0


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
                                     "consensus": DEFAULT.consensus.model_copy(update={"max_faulty": (validators - 1)
                                                                                        // 3})})
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
                rows.append({p: read(report.timings, report.round_seconds) for p, (read, _) in PARTS.items()})
        teardown(net)
    finally:
        ray.shutdown()
    return rows


def exponent(points: list[tuple[float, float]]) -> float:
    """k of cost ~ units^k by least squares on logs; nan with fewer than 2 distinct unit counts."""
    xs = [math.log(u) for u, c in points if c > 0]
    ys = [math.log(c) for u, c in points if c > 0]
    if len(set(xs)) < 2:
        return float("nan")
    return float(np.polyfit(xs, ys, 1)[0])


def summarize(grid: dict[tuple[int, int], list[dict[str, float]]]) -> dict[str, Any]:
    """Per part: median and spread per grid point, growth exponents (vs M x V; vs M at the smallest V;
    vs V at the smallest M) and a per-unit cost (per miner, or per miner x validator)."""
    out: dict[str, Any] = {}
    m0, v0 = min(m for m, _ in grid), min(v for _, v in grid)
    for part, (_, unit) in PARTS.items():
        cells, per_unit = {}, []
        medians: dict[tuple[int, int], float] = {}
        for (m, v), rows in grid.items():
            vals = [r[part] for r in rows]
            medians[(m, v)] = med = statistics.median(vals)
            cells[f"{m}x{v}"] = {"median_ms": med, "min_ms": min(vals), "max_ms": max(vals), "n": len(vals)}
            per_unit.append(med / (m if unit == "M" else m * v))
        out[part] = {"cells": cells, "unit": unit, "per_unit_ms": statistics.median(per_unit),
                     "exponent_mv": exponent([(m * v, c) for (m, v), c in medians.items()]),
                     "exponent_m": exponent([(m, c) for (m, v), c in medians.items() if v == v0]),
                     "exponent_v": exponent([(v, c) for (m, v), c in medians.items() if m == m0])}
    return out


# ------------------------------------------------------------------ the validator's mark check, without Ray


def mark_checks(registered: list[int], repeats: int) -> dict[str, Any]:
    """One submission checked against N registered miners' keys: key by key (today's validator) and as a ring."""
    from dlbc_ray.config import ProtectionConfig
    from dlbc_ray.crypto import Identity
    from dlbc_ray.models.nets import build_net
    from dlbc_ray.models.protect import mark_secret, read_mark, watermark_key
    from dlbc_ray.models.watermark import bit_errors, key_ring

    protection = ProtectionConfig()
    net = build_net("mlp", {}, (64,), 10)
    weights = {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}
    ids = [Identity.from_seed(f"miner-{i}", f"scale/{i}".encode()) for i in range(max(registered))]
    keys = [watermark_key(mark_secret(i), i.public_key, weights, "mlp", protection.watermark_bits) for i in ids]
    rows = {}
    for n in registered:
        ring = key_ring(keys[:n])

        def loop() -> None:
            for key in keys[:n]:
                read_mark(weights, key, protection)

        rows[n] = {"loop_ms": _median_ms(loop, repeats), "ring_ms": _median_ms(lambda: bit_errors(weights, ring),
                                                                              repeats)}
    m, t = keys[0].x.shape
    return {"host_m": int(m), "bits_t": int(t), "per_n": rows,
            "loop_exponent": exponent([(n, r["loop_ms"]) for n, r in rows.items()]),
            "ring_exponent": exponent([(n, r["ring_ms"]) for n, r in rows.items()])}


def _median_ms(fn: Any, repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(samples)


# --------------------------------------------------------------------------------- projection


def projection(parts: dict[str, Any], marks: dict[str, Any], m: int = PROJECT_M, v: int = PROJECT_V,
               candidates: int = 16) -> dict[str, float]:
    """Seconds per block at M miners and V validators from per-unit costs (linear in the unit, as measured).

    The validator's side runs on V machines in parallel, so its wall time is one validator's: per
    submission transfer and checks, plus the mark check against ``candidates`` keys (the round's
    participants and earlier winners) or, today, against all M registered miners. The coordinator
    (one actor) pays votes, decision, block and ledger import per vote, M x V of them.
    """
    per_key_loop = _per_key(marks, "loop_ms")
    per_key_ring = _per_key(marks, "ring_ms")
    validator = m * (parts["transfer"]["per_unit_ms"] + parts["checks"]["per_unit_ms"]) / 1e3
    coordinator = m * v * sum(parts[p]["per_unit_ms"] for p in ("votes", "decision+block", "ledger import")) / 1e3
    return {"miners": m, "validators": v, "validator_s": validator,
            "validator_marks_all_registered_s": m * m * per_key_loop / 1e3,
            "validator_marks_ring_candidates_s": m * candidates * per_key_ring / 1e3,
            "coordinator_s": coordinator, "scheduling_s": m * parts["scheduling"]["per_unit_ms"] / 1e3}


def _per_key(marks: dict[str, Any], field: str) -> float:
    biggest = max(marks["per_n"])
    return marks["per_n"][biggest][field] / biggest


# ------------------------------------------------------------------------------------- output


def plot(grid: dict[tuple[int, int], list[dict[str, float]]], path: Path) -> Path:
    """Log-log: each part's median against M (at the smallest V) and against V (at the smallest M)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m0, v0 = min(m for m, _ in grid), min(v for _, v in grid)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, cells, x, name in ((axes[0], sorted(c for c in grid if c[1] == v0), 0, f"miners M (V = {v0})"),
                               (axes[1], sorted(c for c in grid if c[0] == m0), 1, f"validators V (M = {m0})")):
        xs = [c[x] for c in cells]
        for part in PARTS:
            ax.loglog(xs, [max(1e-2, statistics.median(r[part] for r in grid[c])) for c in cells], marker="o",
                      label=part)
        first = statistics.median(r["round"] for r in grid[cells[0]])
        ax.loglog(xs, [first * u / xs[0] for u in xs], "k--", lw=0.8, label="linear (target bound)")
        ax.set(xlabel=name, title=f"ms per round vs {name.split()[0]}")
    axes[0].set_ylabel("ms per round (median)")
    axes[1].legend(fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def print_report(parts: dict[str, Any], marks: dict[str, Any], proj: dict[str, float]) -> None:
    cells = list(next(iter(parts.values()))["cells"])
    print("\nper part of a round: median ms [min-max] per grid point MxV; growth exponent k of cost ~ x^k for x = "
          f"M x V, M, V (target k <= {TARGET_EXPONENT:g})")
    print(f"{'part':>15} " + " ".join(f"{c:>20}" for c in cells) + f" {'k(MxV)':>7} {'k(M)':>6} {'k(V)':>6}"
          f" {'target':>7}")
    for part, info in parts.items():
        row = " ".join(f"{c['median_ms']:>8.1f} [{c['min_ms']:.0f}-{c['max_ms']:.0f}]".rjust(20)
                       for c in info["cells"].values())
        worst = max((info[k] for k in ("exponent_mv", "exponent_m", "exponent_v") if not math.isnan(info[k])),
                    default=float("nan"))
        ok = "ok" if not worst > TARGET_EXPONENT else "OVER"
        print(f"{part:>15} {row} {info['exponent_mv']:>7.2f} {info['exponent_m']:>6.2f} {info['exponent_v']:>6.2f}"
              f" {ok:>7}")
    print("  (validators share this machine's cores, so parts paid by each validator grow with V here; on a cluster")
    print("   each has its own node. Figures from a contended 2-core machine are provisional.)")
    print(f"\nwatermark check of one submission (host M={marks['host_m']}, T={marks['bits_t']}) against N registered "
          "miners (target: flat in N)")
    for n, r in marks["per_n"].items():
        print(f"  N={n:>3}: key by key {r['loop_ms']:8.2f} ms   one ring {r['ring_ms']:8.2f} ms")
    print(f"  exponent in N: key by key {marks['loop_exponent']:.2f}, ring {marks['ring_exponent']:.2f} "
          "(grows while every registered miner is checked; a fixed candidate set keeps it flat)")
    p = proj
    print(f"\nprojection at {p['miners']} miners, {p['validators']} validators (from per-unit costs above):")
    print(f"  per validator: transfer+checks {p['validator_s']:.1f} s; marks vs all registered "
          f"{p['validator_marks_all_registered_s']:.1f} s, ring over 16 candidates "
          f"{p['validator_marks_ring_candidates_s']:.2f} s")
    print(f"  coordinator (one actor): votes+decision+block+ledger {p['coordinator_s']:.1f} s per block; "
          f"scheduling {p['scheduling_s']:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"grid {QUICK_GRID}, 3 rounds each")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--plot", type=Path, default=None, help="write the log-log plot here (PNG)")
    parser.add_argument("--out", type=Path, default=None, help="also write the figures here (JSON)")
    parser.add_argument("--from", dest="source", type=Path, default=None,
                        help="summarize the rounds of an earlier --out file instead of running new ones")
    args = parser.parse_args()
    grid_points, rounds = (QUICK_GRID, 3) if args.quick else (FULL_GRID, args.rounds)
    grid, marks = {}, None
    if args.source:
        saved = json.loads(args.source.read_text())
        grid = {tuple(int(x) for x in k.split("x")): rows for k, rows in saved["grid"].items()}
        marks = {**saved["marks"], "per_n": {int(n): r for n, r in saved["marks"]["per_n"].items()}}
    for m, v in [] if args.source else grid_points:
        t0 = time.monotonic()
        grid[(m, v)] = run_grid_point(m, v, rounds)
        print(f"M={m} V={v}: {rounds} rounds in {time.monotonic() - t0:.0f} s (with start-up)", flush=True)
    parts = summarize(grid)
    marks = marks or mark_checks([4, 16, 64], repeats=5 if args.quick else 9)
    proj = projection(parts, marks)
    if args.plot:
        plot(grid, args.plot)
    figures = {"command": " ".join(["python", *sys.argv]), "grid": {f"{m}x{v}": rows for (m, v), rows in grid.items()},
               "parts": parts, "marks": marks, "projection": proj}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(figures, indent=1))
    if args.json:
        print(json.dumps(figures))
        return
    print_report(parts, marks, proj)


if __name__ == "__main__":
    main()
