"""``scale.py``'s output: the log-log plot and the printed report (figures with their targets beside them)."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

TARGET_EXPONENT = 1.0


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
        for part in grid[cells[0]][0]:  # the parts, as the rounds name them
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


def print_report(parts: dict[str, Any], marks: dict[str, Any], ballots: dict[int, dict[str, float]],
                 proj: dict[str, Any], checks: dict[str, Any] | None = None) -> None:
    cells = list(next(iter(parts.values()))["cells"])
    print("\nper part of a round: median ms [min-max] per grid point MxV; growth exponent k of cost ~ x^k for x = "
          f"M x V, M, V (target k <= {TARGET_EXPONENT:g});\nfitted ms per term (1, M, M2 = pairs, sig = M + V, "
          "vote = M x V)")
    print(f"{'part':>16} " + " ".join(f"{c:>20}" for c in cells) + f" {'k(MxV)':>7} {'k(M)':>6} {'k(V)':>6}"
          f" {'target':>7}  fit")
    for part, info in parts.items():
        row = " ".join(f"{c['median_ms']:>8.1f} [{c['min_ms']:.0f}-{c['max_ms']:.0f}]".rjust(20)
                       for c in info["cells"].values())
        worst = max((info[k] for k in ("exponent_mv", "exponent_m", "exponent_v") if not math.isnan(info[k])),
                    default=float("nan"))
        ok = "ok" if not worst > TARGET_EXPONENT else "OVER"
        terms = " + ".join(f"{c:.3g}/{t}" for t, c in info["coef_ms"].items())
        print(f"{part:>16} {row} {info['exponent_mv']:>7.2f} {info['exponent_m']:>6.2f} {info['exponent_v']:>6.2f}"
              f" {ok:>7}  {terms} ({info['payer']})")
    print("  (validators share this machine's cores, so their parts grow with V here; on a cluster each has its own")
    print("   node: they are fitted on wall / max(1, V / cores). Figures from a contended 2-core machine are "
          "provisional.)")
    print("\none ballot of M votes, without Ray (each validator signs one a round; the coordinator checks V of them, "
          "the ledger again at import):")
    for m, r in ballots.items():
        print(f"  M={m:>5}: sign {r['sign_ms']:7.3f} ms   check {r['verify_ms']:7.3f} ms   "
              f"{r['bytes'] / 1024:8.1f} KiB")
    print(f"\nmark check of one submission (host M={marks['host_m']}, T={marks['bits_t']}) with N registered miners: "
          f"every registered key (before) vs the owners read now (all up to {marks['bound']}; beyond, a round of "
          f"{marks['submitters']} submitters + {marks['earlier']} earlier owners)")
    for n, r in marks["per_n"].items():
        print(f"  N={n:>3}: all {r['all_ms']:8.2f} ms   now {r['ring_ms']:8.2f} ms ({r['read']} keys read)")
    print(f"  exponent in N: all {marks['all_exponent']:.2f}, now {marks['ring_exponent']:.2f} (target: flat in N)")
    if checks:
        print_checks(checks)
    p = proj
    print(f"\nprojection at {p['miners']} miners (all submitting), {p['validators']} validators, seconds per block:")
    print("  each validator (in parallel): " + ", ".join(f"{k} {c:.1f}" for k, c in p["validator_s"].items())
          + f" = {p['sides_s']['validator']:.1f} s; marks read per submission {p['marks_read']}, "
          f"keys held {p['ring_gib']:.1f} GiB")
    print("  coordinator (one actor): " + ", ".join(f"{k} {c:.1f}" for k, c in p["coordinator_s"].items())
          + f" = {p['sides_s']['coordinator']:.1f} s")
    load = p["coordinator_load"]
    print(f"  coordinator load: {load['signatures_checked']} signatures checked (M + V, again at import), "
          f"{load['vote_lines']} vote lines ({load['ballot_verify_ms']:.1f} ms to check one ballot of M votes), block "
          f"{load['block_mib']:.1f} MiB of ballots")
    print(f"  first bottleneck: {p['first_bottleneck']} ({p['first_bottleneck_s']:.0f} s)")


def print_checks(checks: dict[str, Any]) -> None:
    """A validator's per-pair work, without Ray, on one BLAS thread as in its actor (CPU ms, provisional)."""
    bm = checks["ballot_marks"]
    print("\nmark reads of a ballot with S submitters (each submission read for every submitter's key), ms per "
          "submission: one pass over the ring per submission (before) vs all together, one product per key (now)")
    for s, r in bm["per_s"].items():
        print(f"  S={s:>3}: before {r['one_by_one_ms']:8.2f} ms   now {r['batched_ms']:8.2f} ms   "
              f"(ring {r['ring_mib']:.0f} MiB)")
    print(f"  exponent in S: before {bm['one_by_one_exponent']:.2f}, now {bm['batched_exponent']:.2f} (target: flat; "
          "the product's work still grows with S, its memory traffic does not)")
    pc = checks["pairs"]
    print(f"provenance per reference (digits mlp): activations and agreement {pc['cheap_ms']:.2f} ms, weight matching "
          f"{pc['weights_ms']:.2f} ms CPU (matched only when the rule reads it: every reference in an honest round)")
