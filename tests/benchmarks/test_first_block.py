"""benchmarks/first_block.py names each process of a demo by what it is, and its by-process table adds up."""

from __future__ import annotations

import importlib

import pytest

bench = importlib.import_module("benchmarks.first_block")


@pytest.mark.parametrize(("cmdline", "kind"), [
    ("ray::Miner.mine", "Miner"),
    ("ray::Validator", "Validator"),
    ("ray::Consensus.status", "Consensus"),
    ("ray::IDLE", "IDLE"),
    ("/venv/bin/python /venv/lib/python3.11/site-packages/ray/_private/workers/default_worker.py --node-ip-address=127.0.0.1",
     "worker"),
    ("/venv/lib/python3.11/site-packages/ray/core/src/ray/gcs/gcs_server --log_dir=/tmp/x", "gcs_server"),
    ("/venv/lib/python3.11/site-packages/ray/core/src/ray/raylet/raylet --raylet_socket_name=/tmp/x", "raylet"),
    ("/venv/bin/python -u /venv/lib/python3.11/site-packages/ray/dashboard/agent.py --node-ip-address=x",
     "dashboard_agent"),
    ("/venv/bin/python -u /venv/lib/python3.11/site-packages/ray/_private/log_monitor.py --x", "log_monitor"),
    ("/venv/bin/python -u /venv/lib/python3.11/site-packages/ray/autoscaler/_private/monitor.py --x", "monitor"),
    ("/venv/bin/python /venv/bin/dlbc-ray demo --blocks 1 --json", "driver"),
    ("", "?"),
])
def test_each_process_of_a_demo_is_named_by_what_it_is(cmdline: str, kind: str) -> None:
    assert bench.process_kind(cmdline) == kind


def test_the_by_process_table_gives_medians_per_kind_and_per_process() -> None:
    rows = [{"by_kind": {"Validator": [4, 20.0], "Miner": [3, 24.0], "driver": [1, 4.0]}},
            {"by_kind": {"Validator": [4, 24.0], "Miner": [3, 27.0]}},
            {"by_kind": {"Validator": [4, 22.0], "Miner": [3, 21.0], "driver": [1, 5.0]}}]
    lines = bench.by_process(rows).splitlines()
    assert [line.split()[0] for line in lines[1:]] == ["Miner", "Validator", "driver"]  # most CPU first
    miner = lines[1].split()
    assert miner[1:] == ["3", "24.00", "8.00", "6.00"]  # n, median CPU, per process, max - min
    assert lines[3].split()[2] == "4.00"  # a run without the kind counts 0 s: median of 4, 0, 5


def test_cpu_is_kept_by_pid_with_its_kind() -> None:
    import os

    stats = bench.family_stats(os.getpid())
    cpu, kind = stats[os.getpid()]
    assert cpu > 0 and isinstance(kind, str)
