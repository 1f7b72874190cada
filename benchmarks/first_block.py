"""Time to the first block: from `dlbc-ray demo` starting to its "block 1 committed" line, and its parts.

Runs the installed CLI, as a new user would, in a fresh home each time (installation aside;
the built-in dataset is fetched into each new home), and prints per run and as medians:

- first block: the process start to the "block 1 committed" line (target <= 15 s on 2 cores);
- imports: the process start to the network starting (CLI, Ray, keys; what the demo's own clock misses);
- Ray start, actor creation (every actor's process started and its imports done), data load
  (it runs beside actor creation), the first round: from the demo's ``--json`` ``startup`` figures;
- CPU: user + system seconds of the demo and every process it started (Ray's included).

    python benchmarks/first_block.py [--runs 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
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
PARTS = ("imports_s", "ray_start_s", "actors_s", "data_load_s", "first_round_s")


def cpu_seconds(root: int) -> dict[int, float]:
    """User + system seconds of ``root`` and its descendants alive now, by pid (Linux /proc)."""
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
    return {pid: stats[pid][1] for pid in family if pid in stats}


def one_run() -> dict[str, Any]:
    home = tempfile.mkdtemp(prefix="dlbc-first-block-")
    env = {**os.environ, "DLBC_HOME": home, "RAY_USAGE_STATS_ENABLED": "0"}
    started = time.perf_counter()
    out_file = Path(home) / "demo.json"
    with out_file.open("w") as stdout:
        proc = subprocess.Popen([str(CLI), "demo", "--blocks", "1", "--json", "--home", home], env=env,
                                stdout=stdout, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    seen: dict[str, float] = {}
    cpu: dict[int, float] = {}

    def watch_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "block 1 committed" in line and "first_block_s" not in seen:
                seen["first_block_s"] = time.perf_counter() - started
                cpu.update(cpu_seconds(proc.pid))

    def sample_cpu() -> None:  # Ray's processes exit with the demo: keep their last figures
        while proc.poll() is None and "first_block_s" not in seen:
            cpu.update(cpu_seconds(proc.pid))
            time.sleep(0.2)

    threads = [threading.Thread(target=watch_stderr, daemon=True), threading.Thread(target=sample_cpu, daemon=True)]
    for t in threads:
        t.start()
    proc.wait(timeout=900)
    for t in threads:
        t.join(timeout=5)
    out = out_file.read_text()
    if proc.returncode != 0 or "first_block_s" not in seen:
        raise SystemExit(f"dlbc-ray demo failed (exit {proc.returncode}); home kept at {home}")
    startup = json.loads(out)["startup"]
    row = {"first_block_s": seen["first_block_s"], "cpu_s": sum(cpu.values()),
           "imports_s": seen["first_block_s"] - startup["first_block_s"]}
    row.update({k: startup[k] for k in PARTS if k in startup})
    return row


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
    args = parser.parse_args()
    rows = []
    for i in range(args.runs):
        print(f"  run {i + 1}/{args.runs}...", file=sys.stderr, flush=True)
        rows.append(one_run())
    print(json.dumps({"rows": rows, "target_s": TARGET_S}) if args.json else report(rows))


if __name__ == "__main__":
    main()
