"""Time to the first block: from `dlbc-ray demo` starting to its "block 1 committed" line, and its parts.

Runs the installed CLI, as a new user would, in a fresh home each time (installation aside;
the built-in dataset is fetched into each new home), and prints per run and as medians:

- first block: the process start to the "block 1 committed" line (target <= 15 s on 2 cores);
- imports: the process start to the network starting (CLI, Ray, keys; what the demo's own clock misses);
- Ray start, actor creation (every actor's process started and its imports done), data load
  (it runs beside actor creation), the first round: from the demo's ``--json`` ``startup`` figures;
- CPU: user + system seconds of the demo and every process it started (Ray's included);
  with ``--by-process``, also split by kind of process (driver, each actor class, Ray's own).

    python benchmarks/first_block.py [--runs 3] [--json] [--by-process]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CLI = Path(sys.executable).parent / "dlbc-ray"
TARGET_S = 15.0
GENERIC = frozenset({"worker", "IDLE"})  # a Ray worker before (or between) being an actor
PARTS = ("imports_s", "ray_start_s", "actors_s", "data_load_s", "first_round_s")


def cpu_seconds(root: int) -> dict[int, float]:
    """User + system seconds of ``root`` and its descendants alive now, by pid (Linux /proc)."""
    return {pid: cpu for pid, (cpu, _) in family_stats(root).items()}


def process_kind(cmdline: str) -> str:
    """What a process of the demo is, from its command line: an actor's class (Ray titles its workers
    ``ray::Class.method``), a worker not yet an actor, or one of Ray's own processes."""
    if "ray::" in cmdline:
        return cmdline.split("ray::", 1)[1].split(".", 1)[0].split()[0] or "worker"
    for marker, kind in (("gcs_server", "gcs_server"), ("raylet", "raylet"), ("dashboard/agent.py", "dashboard_agent"),
                         ("runtime_env/agent", "runtime_env_agent"), ("log_monitor.py", "log_monitor"),
                         ("monitor.py", "monitor"), ("dashboard.py", "dashboard"), ("default_worker.py", "worker"),
                         ("dlbc-ray", "driver")):
        if marker in cmdline:
            return kind
    return cmdline.split(" ", 1)[0].rsplit("/", 1)[-1] or "?"


def family_stats(root: int) -> dict[int, tuple[float, str]]:
    """(CPU seconds, kind) of ``root`` and its descendants alive now, by pid."""
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            text = Path(f"/proc/{name}/stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()
        stats[int(name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    family, grew = {root}, True
    while grew:
        more = {pid for pid, (ppid, _) in stats.items() if ppid in family} - family
        family |= more
        grew = bool(more)
    return {pid: (stats[pid][1], process_kind(_cmdline(pid))) for pid in family if pid in stats}


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def one_run() -> dict[str, Any]:
    home = tempfile.mkdtemp(prefix="dlbc-first-block-")
    env = {**os.environ, "DLBC_HOME": home, "RAY_USAGE_STATS_ENABLED": "0"}
    started = time.perf_counter()
    out_file = Path(home) / "demo.json"
    with out_file.open("w") as stdout:
        proc = subprocess.Popen([str(CLI), "demo", "--blocks", "1", "--json", "--home", home], env=env,
                                stdout=stdout, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    seen: dict[str, float] = {}
    procs: dict[int, tuple[float, str]] = {}

    def sample() -> None:
        for pid, (cpu, kind) in family_stats(proc.pid).items():
            if kind in GENERIC and pid in procs:  # an actor's worker keeps its class's name once it had one
                kind = procs[pid][1]
            procs[pid] = (cpu, kind)

    tail: list[str] = []  # the demo's last stderr lines, shown if it fails

    def watch_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            tail[:] = [*tail[-9:], line.rstrip()]
            if "block 1 committed" in line and "first_block_s" not in seen:
                seen["first_block_s"] = time.perf_counter() - started
                sample()

    def sample_cpu() -> None:  # Ray's processes exit with the demo: keep their last figures
        while proc.poll() is None and "first_block_s" not in seen:
            sample()
            time.sleep(0.2)

    threads = [threading.Thread(target=watch_stderr, daemon=True), threading.Thread(target=sample_cpu, daemon=True)]
    for t in threads:
        t.start()
    proc.wait(timeout=900)
    for t in threads:
        t.join(timeout=5)
    out = out_file.read_text()
    if proc.returncode != 0 or "first_block_s" not in seen:
        last = "\n".join(f"  | {line[:300]}" for line in tail if line.strip())
        raise SystemExit(f"dlbc-ray demo failed (exit {proc.returncode}); home kept at {home}; its stderr ended:\n{last}")
    shutil.rmtree(home, ignore_errors=True)  # a run that failed keeps its home (above), one that passed leaves nothing
    startup = json.loads(out)["startup"]
    row = {"first_block_s": seen["first_block_s"], "cpu_s": sum(cpu for cpu, _ in procs.values()),
           "imports_s": seen["first_block_s"] - startup["first_block_s"]}
    row.update({k: startup[k] for k in PARTS if k in startup})
    by_kind: dict[str, list[float]] = {}
    for cpu, kind in procs.values():
        n, total = by_kind.get(kind, [0, 0.0])
        by_kind[kind] = [n + 1, total + cpu]
    row["by_kind"] = by_kind
    return row


def by_process(rows: list[dict[str, Any]]) -> str:
    """CPU seconds to the first block by kind of process: processes, median CPU in all, and per process."""
    kinds = sorted({k for r in rows for k in r["by_kind"]},
                   key=lambda k: -statistics.median(r["by_kind"].get(k, [0, 0.0])[1] for r in rows))
    lines = [f"{'process':<20}{'n':>4}{'CPU s':>9}{'per proc':>10}{'spread':>8}"]
    for k in kinds:
        n = statistics.median(r["by_kind"].get(k, [0, 0.0])[0] for r in rows)
        cpu = [r["by_kind"].get(k, [0, 0.0])[1] for r in rows]
        lines.append(f"{k:<20}{n:>4g}{statistics.median(cpu):>9.2f}{statistics.median(cpu) / max(n, 1):>10.2f}"
                     f"{max(cpu) - min(cpu):>8.2f}")
    return "\n".join(lines)


def report(rows: list[dict[str, Any]]) -> str:
    names = ["first_block_s", *PARTS, "cpu_s"]
    lines = [f"time to the first block of `dlbc-ray demo` (s; {os.cpu_count()} cores; data load runs beside actors)",
             "run  " + " ".join(f"{n.removesuffix('_s'):>12}" for n in names)]
    lines += [f"{i:>3}  " + " ".join(f"{r.get(n, float('nan')):>12.2f}" for n in names) for i, r in enumerate(rows, 1)]
    med = {n: statistics.median(r[n] for r in rows) for n in names}
    spread = {n: max(r[n] for r in rows) - min(r[n] for r in rows) for n in names}
    lines.append("med  " + " ".join(f"{med[n]:>12.2f}" for n in names))
    lines.append("+-   " + " ".join(f"{spread[n]:>12.2f}" for n in names) + "   (max - min)")
    verdict = "meets" if med["first_block_s"] <= TARGET_S else "misses"
    lines.append(f"first block: {med['first_block_s']:.1f} s median (target <= {TARGET_S:g} s on 2 cores): {verdict}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--by-process", action="store_true", help="also split the CPU by kind of process")
    args = parser.parse_args()
    rows = []
    for i in range(args.runs):
        print(f"  run {i + 1}/{args.runs}...", file=sys.stderr, flush=True)
        rows.append(one_run())
    if args.json:
        print(json.dumps({"rows": rows, "target_s": TARGET_S}))
        return
    print(report(rows))
    if args.by_process:
        print(by_process(rows))


if __name__ == "__main__":
    main()
