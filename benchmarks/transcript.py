"""What a training transcript costs and what its audit catches (issue 11).

    python benchmarks/transcript.py [--quick] [--json]      (or: python -m benchmarks.transcript)

For the digits cnn and the mnist1d cnn1d, trained the way miners train (``MinerConfig``
defaults through the real Lightning trainer, one thread) with ``TranscriptRecorder``:

(a) audit cost as a fraction of training: one validator's audit with the default
    ``AuditParams`` (Q sampled segments plus the last), wall time and replayed steps.
    Target: at most 5%. A figure is the median of the runs, with min-max beside it;
    the machine is shared (2 cores, several agents), so times are provisional.
(b) storage per submission: the kept checkpoints (weights plus Adam moments), and what
    recording costs the miner (training time with the recorder over the same run without).
(c) skipped training: a transcript with ``s`` of its segments not trained (the end
    checkpoint copied from the start). Detection over audits with independent seeds,
    beside the computed 1 - C(n-1-f, Q) / C(n-1, Q), f = s + 1 segments that do not replay
    (the last segment is always replayed, so the gaps are put elsewhere), and the same for
    4 validators drawing independent segments.
(d) false positives: honest transcripts trained on 2 threads audited on 1 thread in this
    process and in a fresh process. Target: 0.
(e) the tolerance a cross-device replay would need, calibrated here as the distance of
    a replay on another thread count than the recorded one (what ``threads`` in the header
    removes). Where no GPU is available the CPU/GPU figure is not measured.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import MINER, command_line, emit, identity, parse_flags, section, table
from dlbc_ray import crypto
from dlbc_ray.consensus.transcript import AuditParams, Expected, compute_training_seed, escape_probability
from dlbc_ray.models.data import Split, holdout, load_builtin
from dlbc_ray.models.nets import build_net
from dlbc_ray.models.system import ClassifierSystem
from dlbc_ray.models.training import TrainSettings, train
from dlbc_ray.models.replay import Derived, audit, committed, relative_distance, replay
from dlbc_ray.models.transcript import (
    Checkpoint,
    CheckpointStore,
    DerivedOrder,
    Transcript,
    finish,
    plan,
    recorder_for,
)
from dlbc_ray.models.weights import to_numpy

HYPER = {"batch_size": MINER.batch_size, "lr": MINER.lr, "optimizer": MINER.optimizer, "weight_decay": 0.0,
         "val_fraction": MINER.val_fraction}
CASES = (("digits", "cnn"), ("mnist1d", "cnn1d"))
PARAMS = AuditParams()


@dataclass(frozen=True)
class Plan:
    epochs: int = 5
    runs: int = 3
    trials: int = 20
    skipped: tuple[float, ...] = (0.05, 0.2, 0.5)


QUICK = Plan(epochs=2, runs=3, trials=10)


@dataclass(frozen=True)
class Case:
    dataset: str
    model: str
    epochs: int
    task_id: str
    miner: str
    round_id: str

    @property
    def seed(self) -> int:
        return compute_training_seed(self.task_id, self.miner, self.round_id)


def _data(case: Case) -> Split:
    return load_builtin(case.dataset).train


def _net(case: Case, data: Split) -> torch.nn.Module:
    return build_net(case.model, {}, tuple(data.x.shape[1:]), int(data.y.max()) + 1, seed=0)


def plain(case: Case) -> float:
    """Seconds of the same training without a recorder (the recording overhead's baseline)."""
    data = _data(case)
    settings = TrainSettings(epochs=case.epochs, batch_size=MINER.batch_size, lr=MINER.lr, optimizer=MINER.optimizer,
                             seed=case.seed, val_fraction=MINER.val_fraction, num_threads=1)
    return train(_net(case, data), data, settings, order=DerivedOrder).seconds


def record(case: Case, threads: int = 1) -> tuple[Transcript, dict[str, np.ndarray], float]:
    data = _data(case)
    fit, _ = holdout(data, MINER.val_fraction, case.seed)
    header = plan(case.task_id, case.miner, case.round_id, examples=len(fit), max_epochs=case.epochs, hyper=HYPER,
                  threads=threads, device="cpu", params=PARAMS)
    recorder = recorder_for(header, PARAMS)
    settings = TrainSettings(epochs=case.epochs, batch_size=MINER.batch_size, lr=MINER.lr, optimizer=MINER.optimizer,
                             seed=case.seed, val_fraction=MINER.val_fraction, num_threads=threads)
    result = train(_net(case, data), data, settings, callbacks=[recorder], order=DerivedOrder)
    return finish(header, recorder), result.weights, result.seconds


def derived(case: Case, model_hash: str) -> Derived:
    data = _data(case)
    fit, _ = holdout(data, MINER.val_fraction, case.seed)
    expected = Expected(task_id=case.task_id, miner=case.miner, round_id=case.round_id, examples=len(fit),
                        max_epochs=case.epochs, epochs=case.epochs, hyperparameters=HYPER)
    return Derived(make_system=lambda: ClassifierSystem(_net(case, data), lr=MINER.lr, optimizer=MINER.optimizer),
                   fit=fit, initial=to_numpy(_net(case, data)), finish=lambda w: w, model_hash=model_hash,
                   expected=expected)


def audit_once(case: Case, transcript: Transcript, model_hash: str, seed: bytes) -> tuple[bool, str, float, int]:
    """One validator's audit (module level, so a fresh process can run it)."""
    torch.set_num_threads(1)
    outcome, cost = audit(committed(transcript), derived(case, model_hash), PARAMS, seed)
    return outcome.passed, outcome.reason.value if outcome.reason else "", cost.seconds, cost.replayed_steps


def _case(dataset: str, model: str, epochs: int, run: int) -> Case:
    miner = identity("miner", run).public_key
    return Case(dataset, model, epochs, crypto.sha256_hex(f"task/{dataset}/{model}".encode()), miner,
                crypto.sha256_hex(f"round/{run}".encode()))


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def bench_case(dataset: str, model: str, plan_: Plan) -> dict[str, Any]:
    fractions, step_fractions, trains, audits, overheads, failures = [], [], [], [], [], 0
    transcript = weights = None
    for run in range(plan_.runs):
        case = _case(dataset, model, plan_.epochs, run)
        transcript, weights, train_s = record(case)
        overheads.append(train_s / plain(case) - 1)
        passed, _, audit_s, steps = audit_once(case, transcript, crypto.hash_weights(weights), bytes([run]) * 32)
        failures += not passed
        trains.append(train_s)
        audits.append(audit_s)
        fractions.append(audit_s / train_s)
        step_fractions.append(steps / transcript.header.steps)
    assert transcript is not None and weights is not None
    return {"dataset": dataset, "model": model, "steps": transcript.header.steps,
            "checkpoints": len(transcript.leaves), "interval": transcript.header.interval,
            "train_s": _spread(trains), "audit_s": _spread(audits), "fraction": _spread(fractions),
            "step_fraction": _spread(step_fractions), "recording_overhead": _spread(overheads), "storage_bytes": transcript.store.nbytes(),
            "model_bytes": sum(a.nbytes for a in weights.values()), "honest_failures": failures}


def bench_skipped(plan_: Plan) -> list[dict[str, Any]]:
    case = _case("digits", "cnn", plan_.epochs, 100)
    transcript, weights, _ = record(case)
    n = len(transcript.leaves) - 1
    rows = []
    for fraction in plan_.skipped:
        skipped = max(1, round(fraction * (n - 1)))
        fake = _skip(transcript, range(1, 1 + skipped))  # the last segment stays honest: the hardest case
        caught = sum(not audit_once(case, fake, crypto.hash_weights(weights), bytes([7, t]) * 16)[0]
                     for t in range(plan_.trials))
        # s copied checkpoints leave s + 1 segments that do not replay: the one after the gap starts from
        # a state training never reached (a cheater who retrains from the copy leaves s)
        escape = escape_probability(skipped + 1, n - 1, PARAMS.segments)
        rows.append({"skipped_segments": skipped, "segments": n, "trials": plan_.trials, "detected": caught / plan_.trials,
                     "computed": 1 - escape, "computed_4_validators": 1 - escape**4})
    return rows


def _skip(transcript: Transcript, segments: range) -> Transcript:
    checkpoints = [transcript.checkpoint(i) for i in range(len(transcript.leaves))]
    for s in segments:  # segment s not trained: checkpoint s+1 is checkpoint s again
        checkpoints[s + 1] = Checkpoint(transcript.leaves[s + 1].step, checkpoints[s].weights, checkpoints[s].optimizer)
    store = CheckpointStore()
    for checkpoint in checkpoints:
        store.put(checkpoint)
    return Transcript(transcript.header, [c.leaf(i) for i, c in enumerate(checkpoints)], store)


def bench_false_positives(plan_: Plan) -> dict[str, Any]:
    case = _case("digits", "cnn", 1, 200)
    transcript, weights, _ = record(case, threads=2)
    model_hash = crypto.hash_weights(weights)
    here = [audit_once(case, transcript, model_hash, bytes([t]) * 32)[0] for t in range(plan_.runs)]
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        there = list(pool.map(audit_once, *zip(*[(case, transcript, model_hash, bytes([9, t]) * 16)
                                                  for t in range(plan_.runs)])))
    # calibration: the same segment replayed on 1 thread though it was trained on 2
    start, end = transcript.checkpoint(0), transcript.checkpoint(1)
    header = transcript.header.model_copy(update={"threads": 1})
    off = replay(derived(case, model_hash).make_system, derived(case, model_hash).fit, header, start, end.step)
    return {"audits": 2 * plan_.runs, "false_positives": here.count(False) + [t[0] for t in there].count(False),
            "distance_other_threads": relative_distance(off.weights, end.weights)}


def report(fig: dict[str, Any]) -> str:
    rows = [(f"{c['dataset']} {c['model']}", c["steps"], f"{c['checkpoints']} (k={c['interval']})",
             f"{c['train_s']['median']:.2f}", f"{c['audit_s']['median']:.3f}",
             f"{100 * c['fraction']['median']:.1f} ({100 * c['fraction']['min']:.1f}-{100 * c['fraction']['max']:.1f})",
             f"{100 * c['step_fraction']['median']:.1f}",
             f"{100 * c['recording_overhead']['median']:+.0f} ({100 * c['recording_overhead']['min']:+.0f}..{100 * c['recording_overhead']['max']:+.0f})",
             f"{c['storage_bytes'] / 2**20:.2f} MiB",
             f"{c['storage_bytes'] / max(1, c['model_bytes']):.0f}x", c["honest_failures"]) for c in fig["cases"]]
    cost = table(("case", "steps", "checkpoints", "train s", "audit s", "audit % of training (min-max)",
                  "steps %", "recording % (min..max)", "storage", "x model", "honest fails"), rows)
    skip = table(("skipped", "of segments", "trials", "detected", "computed", "computed, 4 validators"),
                 [(r["skipped_segments"], r["segments"], r["trials"], f"{100 * r['detected']:.0f}%",
                   f"{100 * r['computed']:.0f}%", f"{100 * r['computed_4_validators']:.0f}%") for r in fig["skipped"]])
    fp = fig["false_positives"]
    return "\n".join([
        f"{fig['command']}   (Q={PARAMS.segments} sampled + the last segment, max {PARAMS.max_checkpoints} checkpoints; "
        f"median of {fig['plan']['runs']} runs; shared 2-core machine: times provisional)",
        section("(a)+(b) audit cost and storage   target: audit <= 5% of training", cost),
        section("(c) skipped training caught by one validator's audit", skip),
        section("(d) false positives   target: 0",
                f"{fp['false_positives']} of {fp['audits']} honest audits (trained on 2 threads; audited on 1, "
                f"in this process and in a fresh one)"),
        section("(e) tolerance calibration",
                f"replay on 1 thread of a 2-thread run lands {fp['distance_other_threads']:.2e} away (relative L2); "
                f"at the recorded thread count it is bitwise (tolerance 0). CPU/GPU: not measured here (no GPU)."),
        f"\n{fig['seconds']:.0f} s",
    ])


def main(argv: list[str] | None = None) -> None:
    args = parse_flags(__doc__.splitlines()[0], argv)
    plan_ = QUICK if args.quick else Plan()
    started = time.perf_counter()
    fig = {"command": command_line(), "plan": plan_.__dict__,
           "cases": [bench_case(d, m, plan_) for d, m in CASES], "skipped": bench_skipped(plan_),
           "false_positives": bench_false_positives(plan_)}
    fig["seconds"] = time.perf_counter() - started
    emit(args.json, fig, lambda: report(fig))


if __name__ == "__main__":
    main()
