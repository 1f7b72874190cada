"""The benchmark scripts on a micro plan: they run end to end, render their report and write JSON."""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator
from types import ModuleType

import pytest
import torch


def load(name: str) -> ModuleType:
    """A benchmark script as a module (the repository root is on sys.path under pytest)."""
    return importlib.import_module(f"benchmarks.{name}")


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_watermark_benchmark_runs_on_a_micro_plan() -> None:
    bench = load("watermark")
    plan = bench.Plan(nets=("mlp",), seeds=1, max_epochs=2, task_epochs=1, budget_factor=1, prune=(0.65,))
    bundle = bench.dataset()
    nets = [bench.bench_net("mlp", plan, bundle)]
    fig = {"command": "test", "plan": plan.__dict__, "n_train": len(bundle.train), "n_test": len(bundle.test),
           "nets": nets, "targets": bench.targets(nets, plan), "seconds": 0.0}
    text = bench.report(fig)
    for heading in ("(a)", "(b)", "(c)", "(d)", "targets", "fine-tune + own mark"):
        assert heading in text
    removal = nets[0]["removal"]
    assert [r["attack"] for r in removal] == list(bench.ATTACKS)
    assert all(len(r["seeds"]) == 1 for r in removal)
    json.loads(json.dumps(fig, allow_nan=False))


def test_sml_benchmark_runs_on_a_micro_plan() -> None:
    bench = load("sml")
    plan = bench.Plan(nets=("mlp",), seeds=1, epochs=(1,))
    bundle = bench.dataset()
    rows = [bench.bench("mlp", 1, plan, bundle)]
    fig = {"command": "test", "plan": plan.__dict__, "n_train": len(bundle.train), "n_test": len(bundle.test),
           "rows": rows, "targets": bench.targets(rows), "seconds": 0.0}
    assert "through map" in bench.report(fig)
    assert rows[0]["folded_equal"] and rows[0]["kind"] == "dense"
    json.loads(json.dumps(fig, allow_nan=False))


def test_pruning_zeroes_the_smallest_weights() -> None:
    bench = load("watermark")
    w = {"h": torch.arange(1.0, 9.0).reshape(2, 4).numpy() * [[1, -1, 1, -1], [1, -1, 1, -1]]}
    cut = bench.pruned(w, "h", 0.5)["h"]
    assert (cut == 0).sum() == 4 and (cut.flat[:4] == 0).all() and w["h"].min() == -8.0


def test_chance_p_is_the_binomial_tail() -> None:
    bench = load("watermark")
    assert bench.chance_p(0, 4) == 1 / 16 and bench.chance_p(4, 4) == 1.0 and bench.chance_p(1, 2) == 0.75
