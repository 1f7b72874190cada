"""benchmarks/transcript.py on a micro plan: it runs end to end, finds no false positive, and renders."""

from __future__ import annotations

import importlib
import json

import torch


def test_transcript_benchmark_runs_on_a_micro_plan() -> None:
    bench = importlib.import_module("benchmarks.transcript")
    threads = torch.get_num_threads()
    try:
        plan = bench.Plan(epochs=1, runs=1, trials=2, skipped=(0.5,))
        case = bench.bench_case("digits", "cnn", plan)
        assert case["honest_failures"] == 0 and case["storage_bytes"] > case["model_bytes"]
        skipped = bench.bench_skipped(plan)
        assert 0.0 <= skipped[0]["detected"] <= 1.0 and 0.0 < skipped[0]["computed"] < 1.0
        fig = {"command": "test", "plan": plan.__dict__, "cases": [case], "skipped": skipped,
               "false_positives": {"audits": 0, "false_positives": 0, "distance_other_threads": 0.0}, "seconds": 0.0}
        text = bench.report(fig)
    finally:
        torch.set_num_threads(threads)
    for heading in ("(a)+(b)", "(c)", "(d)", "(e)", "digits cnn"):
        assert heading in text
    json.loads(json.dumps(fig, allow_nan=False))
