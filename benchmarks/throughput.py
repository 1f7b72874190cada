"""Tasks and blocks per hour of a long-lived network with 1, 2 and 4 miners, and where a round's time goes.

    python benchmarks/throughput.py [--quick] [--json] [--tasks 8] [--miners 1,2,4] [--repeats 3]

For each miner count, the real user path: ``dlbc-ray up --address local`` (a private Ray
head on loopback, long-lived actors, one miner per group so N miners mine N tasks at once),
then ``dlbc-ray submit`` of the same task file TASKS times with the scheduler paused, then
mining until every task's block is committed, then ``down``. Reported:

- tasks/hour: tasks committed / the mining window (scheduler start to the last commit);
- blocks/hour: every block the run appended (each submit's escrow block, then each task's
  block) / the whole run (first submit to the last commit);
- the ratio of both to one miner, measured in the same run;
- per round, the median share of its wall time spent outside training and evaluation;
- per task, the CPU seconds each kind of process spent in the mining window (miners, validators,
  coordinator, ledger, Ray's own daemons, this driver): where the cores went when N miners share them.

The machine's cores bound the speedup: miners share the node's CPUs equally (``num_cpus``
None), so past the core count more miners only split the same CPUs.
"""

from __future__ import annotations

import os

os.environ.setdefault("RAY_AUTH_MODE", "token")  # decided before Ray is imported, as the CLI does
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import argparse  # noqa: E402
import json  # noqa: E402
import secrets  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TASK_FILE = ROOT / "examples" / "tasks" / "digits-mlp.yaml"
SHARED_TOKEN = secrets.token_hex(32)


KINDS = ("Miner", "Validator", "Consensus", "Ledger")  # actor classes, as Ray titles their processes (ray::Miner...)


def process_kind(cmdline: str) -> str | None:
    """Which part of the network a process is, from its command line; None when it is none of ours."""
    if cmdline.startswith("ray::"):
        name = cmdline[5:].split(".", 1)[0].split(" ", 1)[0]
        return next((k.lower() for k in KINDS if name.endswith(k)), "ray_worker")
    words = cmdline.split()
    if words and any(daemon in words[0] for daemon in ("raylet", "gcs_server")):
        return "ray_daemons"
    if "ray" in cmdline and ("dashboard" in cmdline or "log_monitor" in cmdline or "runtime_env" in cmdline):
        return "ray_daemons"
    return None


def cpu_by_kind(marker: str, own: int | None = None) -> dict[str, float]:
    """CPU seconds so far (user + system, /proc) of the network's processes, summed by kind: those whose command
    line names ``marker`` (this network's Ray temp folder: raylet, GCS, daemons) and their children (the workers,
    retitled ``ray::<Actor>``), so other Ray clusters on the machine do not count; ``own`` counts as "driver"."""
    tick, procs = os.sysconf("SC_CLK_TCK"), {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # fields[1]: parent pid; [11], [12]: user, system ticks
        procs[int(entry.name)] = (cmdline, int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    ours = {pid for pid, (cmdline, _, _) in procs.items() if marker in cmdline}
    totals: dict[str, float] = {}
    for pid, (cmdline, parent, cpu) in procs.items():
        kind = "driver" if pid == own else process_kind(cmdline) if pid in ours or parent in ours else None
        if kind is not None:
            totals[kind] = totals.get(kind, 0.0) + cpu
    return totals


def run_network(miners: int, tasks: int, task_file: Path) -> dict[str, Any]:
    """One network of ``miners`` miners mining ``tasks`` copies of ``task_file``; the figures of the run."""
    import ray

    from dlbc_ray.runtime import client, service
    from dlbc_ray.actors.names import CONSENSUS_NAME, NAMESPACE
    from dlbc_ray.config import DEFAULT
    from dlbc_ray.runtime.home import open_home
    from dlbc_ray.ledger import Chain

    cfg = DEFAULT.model_copy(update={"miners": miners, "miners_per_task": 1})
    home = open_home(tempfile.mkdtemp(prefix="dlbc-throughput-"))
    # Ray caches one auth token per process, so every head this script starts shares one.
    home.ray_token.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    home.ray_token.write_text(SHARED_TOKEN)
    home.ray_token.chmod(0o600)
    record, _ = service.up(cfg, home, address="local")
    marker = record.head_temp_dir or str(home.root)  # in the command line of this network's raylet, GCS, daemons
    try:
        consensus = ray.get_actor(CONSENSUS_NAME, namespace=NAMESPACE)
        ray.get(consensus.stop.remote())
        height0 = Chain.open(home.ledger, create=False, verify=False).height
        t_submit = time.perf_counter()
        ids = [client.submit(home, task_file, requester="requester", address=None) for _ in range(tasks)]
        t_start, cpu0 = time.perf_counter(), cpu_by_kind(marker, os.getpid())
        ray.get(consensus.start.remote())
        views = [client.wait_for(home, task_id, address=None, timeout_s=3600) for task_id in ids]
        t_end, cpu1 = time.perf_counter(), cpu_by_kind(marker, os.getpid())
    finally:
        service.down(home)
    failed = [v for v in views if v["status"] != "done"]
    if failed:
        raise SystemExit(f"{len(failed)} task(s) not mined with {miners} miners: {failed[0]}")
    blocks = Chain.open(home.ledger, create=False, verify=False).height - height0
    reports = [v["report"] for v in views]
    outside = [1 - (r["timings"].get("train_s", 0.0) + r["timings"].get("eval_ms", 0.0) / 1e3) / r["round_seconds"]
               for r in reports]
    mining_s, total_s = t_end - t_start, t_end - t_submit
    return {"miners": miners, "tasks": tasks, "blocks": blocks, "mining_s": mining_s, "total_s": total_s,
            "tasks_per_hour": tasks / mining_s * 3600, "blocks_per_hour": blocks / total_s * 3600,
            "round_s_median": statistics.median(r["round_seconds"] for r in reports),
            "outside_train_eval_median": statistics.median(outside),
            "cpu_s_per_task": {k: (cpu1[k] - cpu0.get(k, 0.0)) / tasks for k in sorted(cpu1)}}


RATIO_TARGET = 2, 1.8  # 2 miners mine at least 1.8x the tasks/hour of 1 (on 2 cores), in every repeat


def run(miner_counts: list[int], tasks: int, task_file: Path, repeats: int) -> dict[str, Any]:
    """``repeats`` consecutive runs, each of every miner count; ratios are to the first count of the same run."""
    import os as _os

    runs = []
    for i in range(repeats):
        rows = []
        for n in miner_counts:
            print(f"  run {i + 1}/{repeats}, {n} miner(s): {tasks} tasks...", file=sys.stderr, flush=True)
            rows.append(run_network(n, tasks, task_file))
        base = rows[0]
        for row in rows:
            row["tasks_ratio"] = row["tasks_per_hour"] / base["tasks_per_hour"]
            row["blocks_ratio"] = row["blocks_per_hour"] / base["blocks_per_hour"]
        runs.append(rows)
    return {"task_file": str(task_file.relative_to(ROOT)), "cores": _os.cpu_count(), "runs": runs,
            "verdicts": verdicts(runs)}


def verdicts(runs: list[list[dict[str, Any]]]) -> dict[str, bool | None]:
    """Issue 14's two promises, each required of every run (None: that run had no such miner count)."""
    def ratio(rows: list[dict[str, Any]], n: int) -> float | None:
        return next((r["tasks_ratio"] for r in rows if r["miners"] == n), None)

    n, target = RATIO_TARGET
    pairs = [ratio(rows, n) for rows in runs]
    fours = [(ratio(rows, 4), ratio(rows, 2)) for rows in runs]
    return {"two_over_one": None if None in pairs else all(p >= target for p in pairs),  # type: ignore[operator]
            "four_not_below_two": None if any(None in f for f in fours) else all(a >= b for a, b in fours)}


def report(fig: dict[str, Any]) -> str:
    first = fig["runs"][0]
    lines = [f"throughput: {first[0]['tasks']} tasks of {fig['task_file']} per network, one miner per group, "
             f"{fig['cores']} cores, {len(fig['runs'])} consecutive run(s)",
             f"{'run':>3} {'miners':>6} {'tasks/h':>9} {'ratio':>6} {'blocks/h':>9} {'ratio':>6} {'round s':>8} "
             f"{'outside train+eval':>19}"]
    for i, rows in enumerate(fig["runs"], 1):
        for r in rows:
            lines.append(f"{i:>3} {r['miners']:>6} {r['tasks_per_hour']:>9.0f} {r['tasks_ratio']:>6.2f} "
                         f"{r['blocks_per_hour']:>9.0f} {r['blocks_ratio']:>6.2f} {r['round_s_median']:>8.2f} "
                         f"{r['outside_train_eval_median']:>18.0%}")
    for n in [r["miners"] for r in first[1:]]:
        xs = [r["tasks_ratio"] for rows in fig["runs"] for r in rows if r["miners"] == n]
        lines.append(f"{n} miners / {first[0]['miners']}: tasks/h ratio median {statistics.median(xs):.2f}, "
                     f"min {min(xs):.2f}, max {max(xs):.2f}")
    v, (n, target) = fig["verdicts"], RATIO_TARGET
    word = {True: "met in every run", False: "NOT met in every run", None: "not measured"}
    lines.append(f"target: {n} miners >= {target:g}x one miner's tasks/h: {word[v['two_over_one']]}; "
                 f"4 miners not below 2: {word[v['four_not_below_two']]}")
    for i, rows in enumerate(fig["runs"], 1):
        for r in rows:
            cpu = r.get("cpu_s_per_task", {})
            if cpu:
                lines.append(f"run {i}, {r['miners']} miner(s): CPU s per task {sum(cpu.values()):.2f} = "
                             + ", ".join(f"{k} {v:.2f}" for k, v in sorted(cpu.items(), key=lambda kv: -kv[1])))
    lines.append("tasks/h over the mining window; blocks/h over the whole run (escrow blocks included); "
                 "round s and the share outside training and evaluation are medians per round")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--miners", default="1,2,4", help="comma-separated miner counts; the first is the base")
    parser.add_argument("--task-file", type=Path, default=TASK_FILE)
    parser.add_argument("--repeats", type=int, default=3, help="consecutive runs; the target must hold in each")
    parser.add_argument("--quick", action="store_true", help="4 tasks per network")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    counts = [int(x) for x in args.miners.split(",")]
    fig = run(counts, 4 if args.quick else args.tasks, args.task_file.resolve(), args.repeats)
    print(json.dumps(fig) if args.json else report(fig))


if __name__ == "__main__":
    main()
