"""How steady PoLe keeps the block rate, against proof of work at the same mean interval.

    python benchmarks/block_rate.py [--quick] [--json] [--target-interval 2.5] [--blocks 40]

1. PoLe on a real local network: miners train the standing task until its accuracy
   target (the difficulty), which retunes every ``window`` blocks toward the target
   interval. The coefficient of variation (CV) of the intervals is measured after the
   first two windows (the controller's warm-up).
2. Proof of work on this machine: real SHA-256 hash puzzles calibrated to PoLe's measured
   mean interval, the same number of blocks (``benchmarks/_pow.py``); and its exact
   model, exponential intervals, whose CV is 1.
3. The same PoLe chain continued with twice the miners, then half again: blocks until a
   window's mean interval is back within 20% of the target. The first interval after
   each change spans the network restart (capped at 4 target intervals by the
   difficulty rule) and is shown, not counted as mining.

Target: PoLe's CV at most 0.2 (proof of work is about 1.0).
"""

from __future__ import annotations

import os

os.environ.setdefault("RAY_AUTH_MODE", "token")  # decided before Ray is imported, as the CLI does
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._pow import coefficient_of_variation, exponential_intervals, mine_at_interval  # noqa: E402

SETTLE_BAND = 0.2


def pole_phase(home: Any, cfg: Any, blocks: int) -> list[tuple[int, float, float]]:
    """Mine ``blocks`` standing blocks with a fresh network on ``home``; the chain's (height, interval, target)."""
    import ray

    from dlbc_ray.ledger import Chain
    from dlbc_ray.models.data import load_builtin
    from dlbc_ray.network import (
        TaskData,
        assemble,
        check_home,
        load_identities,
        run_round,
        standing_template,
        start_local_ray,
        teardown,
    )
    from dlbc_ray.plots import pole_points

    check_home(home, cfg, pole=True)
    start_local_ray(home, cfg)
    net = assemble(cfg, home, load_identities(home, cfg))
    bundle = load_builtin(cfg.task.dataset)
    data, template = TaskData(ray.put(bundle.train), ray.put(bundle.test)), standing_template(cfg, bundle)
    start = Chain.open(home.ledger, create=False, verify=False).height
    try:
        committed = 0
        while committed < blocks:
            report = run_round(net, None, data, timeout_s=600, standing=template)
            committed += report.committed
            print(f"  {cfg.miners} miners: block {committed}/{blocks} {'' if report.committed else report.failure}",
                  flush=True)
    finally:
        teardown(net)
        ray.shutdown()
    chain = Chain.open(home.ledger, create=False, verify=False)
    return [p for p in pole_points(chain) if p[0] > start]


def settle_blocks(intervals: list[float], target: float, window: int) -> int | None:
    """Blocks after a change until a whole window's mean interval is within the band of the target."""
    for end in range(window, len(intervals) + 1):
        if abs(statistics.mean(intervals[end - window:end]) - target) <= SETTLE_BAND * target:
            return end
    return None


def run(target: float, blocks: int, miners: int, change_blocks: int) -> dict[str, Any]:
    from dlbc_ray.config import DEFAULT, PoleConfig
    from dlbc_ray.home import open_home

    pole = PoleConfig(target_interval_s=target, window=4, initial=0.9, floor=0.6, ceiling=0.97, max_step=0.02)
    base = DEFAULT.model_copy(update={"pole": pole, "miners": miners})
    home = open_home(tempfile.mkdtemp(prefix="dlbc-blockrate-"))
    steady = pole_phase(home, base, blocks)
    doubled = pole_phase(home, base.model_copy(update={"miners": 2 * miners}), change_blocks)
    halved = pole_phase(home, base, change_blocks)
    warm = 2 * pole.window
    measured = [p[1] for p in steady[warm:]]
    mean = statistics.mean(measured)
    pow_run = mine_at_interval(len(measured), mean)
    return {
        "target_interval_s": target, "miners": miners, "window": pole.window,
        "pole": {"blocks": len(measured), "mean_s": mean, "cv": coefficient_of_variation(measured),
                 "intervals_s": [p[1] for p in steady], "difficulty": [p[2] for p in steady]},
        "pow": {"blocks": len(pow_run.intervals_s), "mean_s": statistics.mean(pow_run.intervals_s),
                "cv": coefficient_of_variation(pow_run.intervals_s), "bits": pow_run.bits},
        "exponential_model": {"cv": coefficient_of_variation(exponential_intervals(len(measured), mean))},
        "changes": [_change("doubled", 2 * miners, doubled, target, pole.window),
                    _change("halved", miners, halved, target, pole.window)],
    }


def _change(name: str, miners: int, points: list[tuple[int, float, float]], target: float,
            window: int) -> dict[str, Any]:
    intervals = [p[1] for p in points]
    mining = intervals[1:]  # the first interval spans the restart of the network
    return {"change": name, "miners": miners, "restart_interval_s": intervals[0] if intervals else None,
            "first_window_mean_s": statistics.mean(mining[:window]) if len(mining) >= window else None,
            "settle_blocks": settle_blocks(mining, target, window), "intervals_s": intervals,
            "difficulty": [p[2] for p in points]}


def report(fig: dict[str, Any]) -> str:
    p, w, e = fig["pole"], fig["pow"], fig["exponential_model"]
    lines = [f"block rate: target interval {fig['target_interval_s']} s, {fig['miners']} miners, retarget every "
             f"{fig['window']} blocks",
             f"{'chain':<34} {'blocks':>6} {'mean s':>8} {'CV':>6}",
             f"{'PoLe (after 2 windows of warm-up)':<34} {p['blocks']:>6} {p['mean_s']:>8.2f} {p['cv']:>6.3f}",
             f"{'proof of work, real SHA-256':<34} {w['blocks']:>6} {w['mean_s']:>8.2f} {w['cv']:>6.3f}",
             f"{'proof of work, exponential model':<34} {p['blocks']:>6} {p['mean_s']:>8.2f} {e['cv']:>6.3f}",
             "", f"{'after':<10} {'miners':>6} {'restart s':>10} {'1st window s':>13} {'settled after':>14}"]
    for c in fig["changes"]:
        settled = "not within the run" if c["settle_blocks"] is None else f"{c['settle_blocks']} blocks"
        first = "-" if c["first_window_mean_s"] is None else f"{c['first_window_mean_s']:.2f}"
        lines.append(f"{c['change']:<10} {c['miners']:>6} {c['restart_interval_s'] or 0:>10.1f} {first:>13} "
                     f"{settled:>14}")
    verdict = "met" if p["cv"] <= 0.2 else "MISSED"
    lines += ["", f"{verdict}: PoLe CV {p['cv']:.3f} (target <= 0.2; proof of work {w['cv']:.3f})",
              "intervals (PoLe): " + " ".join(f"{x:.1f}" for x in p["intervals_s"]),
              "difficulty:       " + " ".join(f"{x:.3f}" for x in p["difficulty"])]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target-interval", type=float, default=2.5)
    parser.add_argument("--blocks", type=int, default=40)
    parser.add_argument("--miners", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="20 blocks, 8 after each change")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    blocks, change = (20, 8) if args.quick else (args.blocks, 16)
    fig = run(args.target_interval, blocks, args.miners, change)
    print(json.dumps(fig) if args.json else report(fig))


if __name__ == "__main__":
    main()
