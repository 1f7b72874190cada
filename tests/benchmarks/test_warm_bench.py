"""Issue 14's benchmarks judge their targets honestly: every run must meet a ratio target (one bad run
fails it), reports show the target beside the figure, and the plain-Lightning baseline really trains."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest


def load(name: str) -> ModuleType:
    return importlib.import_module(f"benchmarks.{name}")


def _row(miners: int, ratio: float) -> dict:
    return {"miners": miners, "tasks": 4, "tasks_per_hour": 100 * ratio, "tasks_ratio": ratio, "blocks_per_hour": 1.0,
            "blocks_ratio": 1.0, "round_s_median": 1.0, "outside_train_eval_median": 0.1}


@pytest.mark.parametrize(("two", "four", "expect"), [
    ((1.9, 1.85, 1.81), (1.9, 1.9, 1.9), (True, True)),
    ((1.9, 1.79, 1.95), (1.9, 1.9, 1.95), (False, True)),  # one run below 1.8x fails the promise
    ((1.9, 1.9, 1.9), (1.9, 1.89, 1.95), (True, False)),  # 4 miners below 2 in one run
])
def test_throughput_target_must_hold_in_every_run(two: tuple, four: tuple, expect: tuple) -> None:
    bench = load("throughput")
    runs = [[_row(1, 1.0), _row(2, a), _row(4, b)] for a, b in zip(two, four)]
    v = bench.verdicts(runs)
    assert (v["two_over_one"], v["four_not_below_two"]) == expect
    text = bench.report({"task_file": "x.yaml", "cores": 2, "runs": runs, "verdicts": v})
    assert ">= 1.8x" in text and f"min {min(two):.2f}" in text


def test_throughput_without_two_or_four_miners_is_not_judged() -> None:
    v = load("throughput").verdicts([[_row(1, 1.0), _row(3, 2.5)]])
    assert v == {"two_over_one": None, "four_not_below_two": None}


def test_first_block_report_judges_the_median_against_15_s() -> None:
    bench = load("first_block")
    rows = [{"first_block_s": s, "imports_s": 1.0, "ray_start_s": 2.0, "actors_s": 5.0, "data_load_s": 0.5,
             "first_round_s": 3.0, "cpu_s": 20.0} for s in (14.0, 16.0, 15.5)]
    assert "misses" in bench.report(rows) and "target <= 15" in bench.report(rows)
    assert "meets" in bench.report(rows[:1])


def test_cpu_seconds_counts_this_process() -> None:
    assert os.getpid() in load("first_block").cpu_seconds(os.getpid())


def test_plain_lightning_baseline_trains_the_miners_model() -> None:
    import time

    from dlbc_ray import crypto
    from dlbc_ray.config import MINIMAL
    from dlbc_ray.models.data import load_builtin
    from dlbc_ray.runtime.network import make_task
    from dlbc_ray.schema.round_messages import RoundContext

    bench, bundle = load("round_overhead"), load_builtin("digits")
    identity = crypto.Identity.from_seed("miner", b"miner")
    task = make_task(identity, MINIMAL.task, bundle, nonce=1, created_ms=int(time.time() * 1e3), chain_id="11" * 32)
    ctx = RoundContext(chain_id="11" * 32, round_id="22" * 32, task_id=crypto.message_hash(task.message),
                       base_height=0, base_hash="00" * 32, eval_seed=0, submit_deadline_ms=task.message.deadline_ms)
    assert bench.plain_lightning_fit(identity, MINIMAL, bundle, task, ctx) > 0


def test_round_overhead_reports_the_fit_and_the_whole_mine_call_apart(capsys: pytest.CaptureFixture[str]) -> None:
    """The miner's fit (train_s) and its whole mine() call are two rows, never one figure under one name."""
    baseline = {"threads": 1, "plain_s": [0.45, 0.44, 0.46], "miner_s": [0.5, 0.52, 0.51], "call_s": [0.71, 0.7, 0.72],
                "plain_cpu_s": [0.4] * 3, "miner_cpu_s": [0.6] * 3, "cpu_ratio": 0.4 / 0.6}
    load("round_overhead").print_baseline(baseline)
    out = capsys.readouterr().out
    fit = next(line for line in out.splitlines() if line.strip().startswith("miner fit"))
    call = next(line for line in out.splitlines() if line.strip().startswith("mine() call"))
    assert "0.510" in fit and "0.710" in call


@pytest.mark.parametrize(("cmdline", "kind"), [
    ("ray::Miner.mine()", "miner"), ("ray::AdversaryMiner", "miner"), ("ray::Validator.validate()", "validator"),
    ("ray::Consensus", "consensus"), ("ray::Ledger.import_block()", "ledger"), ("ray::IDLE", "ray_worker"),
    ("/v/lib/python3.11/site-packages/ray/core/src/ray/raylet/raylet --node_ip_address=127.0.0.1", "ray_daemons"),
    ("/v/bin/python /v/ray/dashboard/dashboard.py --temp-dir=/tmp/x", "ray_daemons"),
    ("python -m pytest tests", None), ("", None),
])
def test_throughput_names_each_process_of_the_network(cmdline: str, kind: str | None) -> None:
    assert load("throughput").process_kind(cmdline) == kind


def test_throughput_cpu_counts_this_network_only() -> None:
    """No process names the marker: only the driver counts (another cluster's workers never do)."""
    totals = load("throughput").cpu_by_kind("/tmp/no-such-network-7f3a", os.getpid())
    assert set(totals) == {"driver"} and totals["driver"] > 0
