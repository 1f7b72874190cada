"""Where a round's time goes: training and evaluation against the protocol's own work.

Runs several real rounds on a local Ray network and prints, per round and as medians:
training, evaluation, weight hashing, signing, signature verification, object-store
transfer, model checks (architecture, watermarks, copies), vote aggregation, ledger
append; then the share of the round that is protocol work and the share that is not
training or evaluation. Also times hash + sign + verify of a 100 MB model.

    python benchmarks/round_overhead.py                 # demo task, 5 rounds
    python benchmarks/round_overhead.py --task long     # a round dominated by training
    python benchmarks/round_overhead.py --quick --json
"""

from __future__ import annotations

import os

os.environ.setdefault("RAY_AUTH_MODE", "token")  # decided before Ray is imported, as the CLI does
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

TASKS: dict[str, dict[str, Any]] = {
    "demo": {"dataset": "digits", "model": "mlp", "epochs": 5, "target": 0.85},
    "long": {"dataset": "digits", "model": "cnn", "epochs": 40, "target": 0.9},
}
NOT_TRAIN_EVAL_TARGET_PCT = 10.0  # of a demo round: everything outside training and evaluation
SPEED_TARGET = 0.97  # a miner's training speed over plain Lightning's, same model and threads
BENCH_CHAIN = "00" * 32  # the hash/sign/verify micro-benchmark signs for a chain of its own

# column -> (how to read it from a round's timings in ms, whether it is protocol work)
COLUMNS: dict[str, tuple[Any, bool]] = {
    "wall": (lambda t, r: r * 1e3, False),
    "train": (lambda t, r: t["train_s"] * 1e3, False),
    "eval": (lambda t, r: t.get("eval_ms", 0.0), False),
    "hash": (lambda t, r: t.get("miner_hash_ms", 0.0) + t.get("hash_ms", 0.0), True),
    "sign": (lambda t, r: t.get("miner_sign_ms", 0.0) + t.get("sign_ms", 0.0), True),
    "verify": (lambda t, r: t.get("verify_ms", 0.0) + t.get("consensus_verify_ms", 0.0), True),
    "transfer": (lambda t, r: t.get("fetch_ms", 0.0), False),
    "checks": (lambda t, r: t.get("checks_ms", 0.0), True),
    "aggregate": (lambda t, r: t.get("aggregate_ms", 0.0), True),
    "ledger": (lambda t, r: t.get("ledger_validate_ms", 0.0) + t.get("ledger_persist_ms", 0.0)
               + t.get("artifact_ms", 0.0), True),
}


def round_row(timings: dict[str, float], seconds: float) -> dict[str, float]:
    row = {name: read(timings, seconds) for name, (read, _) in COLUMNS.items()}
    row["protocol_pct"] = 100 * sum(row[n] for n, (_, p) in COLUMNS.items() if p) / row["wall"]
    row["not_train_eval_pct"] = 100 * (row["wall"] - row["train"] - row["eval"]) / row["wall"]
    return row


def run_rounds(task: str, rounds: int, miners: int, validators: int) -> list[dict[str, float]]:
    import ray

    from dlbc_ray.actors.coordinator import TaskData, now_ms
    from dlbc_ray.config import DEFAULT, TaskDefaults
    from dlbc_ray.runtime.home import open_home
    from dlbc_ray.models.data import load_builtin
    from dlbc_ray.runtime.network import assemble, load_identities, make_task, run_round, start_local_ray, teardown

    cfg = DEFAULT.model_copy(update={"miners": miners, "validators": validators,
                                     "task": TaskDefaults(**TASKS[task])})
    home = open_home(tempfile.mkdtemp(prefix="dlbc-bench-"))
    start_local_ray(home, cfg)
    net = assemble(cfg, home, load_identities(home, cfg))
    bundle = load_builtin(cfg.task.dataset, cache_dir=home.datasets)
    data = TaskData(train=ray.put(bundle.train), test=ray.put(bundle.test))
    rows = []
    try:
        for i in range(rounds + 1):  # round 0 warms up imports and caches; not reported
            task = make_task(net.identities.requester, cfg.task, bundle, nonce=time.time_ns(), created_ms=now_ms(),
                             chain_id=net.chain_id)
            report = run_round(net, task, data, timeout_s=3600)
            if not report.committed:
                raise SystemExit(f"round failed: {report.failure}")
            if i:
                rows.append(round_row(report.timings, report.round_seconds))
        baseline = miner_vs_plain(net, cfg, bundle, data, repeats=max(3, rounds))
    finally:
        teardown(net)
        ray.shutdown()
    return rows, baseline


def miner_vs_plain(net: Any, cfg: Any, bundle: Any, data: Any, repeats: int) -> dict[str, Any]:
    """One miner trains alone (the others idle) against plain Lightning in this process, taking turns.

    Same model (the miner's own net behind its mapping layer, with its watermark term), data,
    holdout, batches, optimizer, epochs and torch threads. Two miner figures: its ``train_s`` (Trainer
    built and fit inside the actor, as timed here: what is left is the actor, our training wrapper and
    the training transcript's recorder, which plain Lightning does not keep), and the whole ``mine()``
    call as this driver waits for it (adding the Ray call, the mapping layer, the transcript's leaves
    and root, the mark's settle, hashing, signing and the object-store return).
    """
    import torch

    from dlbc_ray import crypto
    from dlbc_ray.actors._ray import get
    from dlbc_ray.actors.coordinator import now_ms
    from dlbc_ray.runtime.network import make_task
    from dlbc_ray.schema.round_messages import RoundContext

    miner, identity = net.miners[0], net.identities.miners[0]
    info = get(miner.handle.info.remote(), timeout=60, what="miner info")
    threads = info["threads"]
    plain_s, miner_s, call_s, plain_cpu, miner_cpu = [], [], [], [], []
    saved = torch.get_num_threads()
    try:
        for _ in range(repeats):
            task = make_task(net.identities.requester, cfg.task, bundle, nonce=time.time_ns(), created_ms=now_ms(),
                             chain_id=net.chain_id)
            task_id = crypto.message_hash(task.message)
            ctx = RoundContext(chain_id=net.chain_id, round_id=crypto.sha256_hex(os.urandom(32)), task_id=task_id,
                               base_height=0, base_hash="00" * 32, eval_seed=0,
                               submit_deadline_ms=now_ms() + 3_600_000)
            cpu0 = process_cpu_s(info["pid"])
            signed = crypto.sign(net.identities.consensus, ctx, net.chain_id)  # miners train for the proposer's rounds
            called = time.perf_counter()
            mined_ref, _ = miner.handle.mine.remote(task, data.train, signed, None)
            miner_s.append(get(mined_ref, timeout=600, what="solo miner").stats.train_s)
            call_s.append(time.perf_counter() - called)
            miner_cpu.append(process_cpu_s(info["pid"]) - cpu0)
            torch.set_num_threads(threads)
            cpu0 = time.process_time()
            plain_s.append(plain_lightning_fit(identity, cfg, bundle, task, ctx))
            plain_cpu.append(time.process_time() - cpu0)
    finally:
        torch.set_num_threads(saved)
    med = statistics.median
    return {"threads": threads, "plain_s": plain_s, "miner_s": miner_s, "call_s": call_s, "plain_cpu_s": plain_cpu,
            "miner_cpu_s": miner_cpu, "speed_ratio": med(plain_s) / med(miner_s),
            "call_ratio": med(plain_s) / med(call_s), "cpu_ratio": med(plain_cpu) / med(miner_cpu)}


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux /proc), all its threads."""
    text = open(f"/proc/{pid}/stat").read()
    fields = text[text.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def plain_lightning_fit(identity: Any, cfg: Any, bundle: Any, task: Any, ctx: Any) -> float:
    """Seconds for ``pl.Trainer(...)`` + ``fit`` of the miner's model, written as a Lightning user would."""
    import pytorch_lightning as pl
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from dlbc_ray.actors.miner import mapped_net, own_marks
    from dlbc_ray.consensus.transcript import compute_training_seed
    from dlbc_ray.models.data import holdout
    from dlbc_ray.models.nets import build_net
    from dlbc_ray.models.system import ClassifierSystem

    spec, task_id, m = task.message, ctx.task_id, cfg.miner
    net = build_net(spec.model.name, spec.model.params, spec.dataset.input_shape, spec.dataset.n_classes)
    mapped, _ = mapped_net(identity, cfg.protection, net, spec, task_id, ctx.round_id)
    seed = compute_training_seed(task_id, identity.public_key, ctx.round_id)  # the miner's public seed
    fit, val = holdout(bundle.train, m.val_fraction, seed)
    torch.manual_seed(seed)
    system = ClassifierSystem(mapped, lr=m.lr, optimizer=m.optimizer, objective=spec.metric,
                              regularizers=own_marks(identity, cfg.protection, net, spec))
    as_set = lambda split: TensorDataset(torch.tensor(split.x), torch.tensor(split.y))  # noqa: E731
    train_loader = DataLoader(as_set(fit), batch_size=m.batch_size, shuffle=True,
                              generator=torch.Generator().manual_seed(seed))
    val_loader = DataLoader(as_set(val), batch_size=max(m.batch_size, 256))
    started = time.perf_counter()
    trainer = pl.Trainer(max_epochs=spec.max_epochs, accelerator="cpu", devices=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0)
    trainer.fit(system, train_loader, val_loader)
    return time.perf_counter() - started


def hash_sign_verify(megabytes: int, repeats: int = 5) -> dict[str, float]:
    """One miner-side hash + sign and one validator-side verify of a ``megabytes`` model."""
    from dlbc_ray import crypto
    from dlbc_ray.schema import Submission

    tensors = max(1, megabytes // 4)
    rng = np.random.default_rng(0)
    weights = {f"layer{i}.weight": rng.standard_normal(megabytes * 2**18 // tensors, dtype=np.float32)
               for i in range(tensors)}
    identity = crypto.Identity.generate("bench")
    samples: list[tuple[float, float, float]] = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model_hash = crypto.hash_weights(weights)
        t1 = time.perf_counter()
        sub = Submission(task_id=model_hash, miner=identity.public_key, model_hash=model_hash,
                         commit=crypto.compute_commit(model_hash, identity.public_key, model_hash), num_params=1,
                         claimed_score=0, epochs=1, train_ms=1, examples=1)
        signed = crypto.sign(identity, sub, BENCH_CHAIN)
        t2 = time.perf_counter()
        crypto.clear_signature_cache()
        crypto.verify(signed, chain_id=BENCH_CHAIN, expected_signer=identity.public_key)
        t3 = time.perf_counter()
        samples.append(((t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3))
    h, s, v = (statistics.median(x) for x in zip(*samples))
    return {"megabytes": megabytes, "hash_ms": h, "sign_ms": s, "verify_ms": v, "total_ms": h + s + v}


def print_table(rows: list[dict[str, float]], task: str) -> None:
    names = [*COLUMNS, "protocol_pct", "not_train_eval_pct"]
    print(f"\nrounds on task '{task}' (ms; % of the round's wall time)")
    print("round " + " ".join(f"{n[:9]:>9}" for n in names))
    for i, row in enumerate(rows, 1):
        print(f"{i:>5} " + " ".join(f"{row[n]:>9.1f}" for n in names))
    print("  med " + " ".join(f"{statistics.median(r[n] for r in rows):>9.1f}" for n in names))
    print("   +- " + " ".join(f"{max(r[n] for r in rows) - min(r[n] for r in rows):>9.1f}" for n in names)
          + "   (spread: max - min)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(TASKS), default="demo")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--miners", type=int, default=3)
    parser.add_argument("--validators", type=int, default=4)
    parser.add_argument("--model-mb", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="3 rounds, 20 MB model")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rounds, mb = (3, 20) if args.quick else (args.rounds, args.model_mb)  # every figure: a median of >= 3
    rows, baseline = run_rounds(args.task, rounds, args.miners, args.validators)
    crypto_figures = hash_sign_verify(mb)
    medians = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    if args.json:
        print(json.dumps({"task": args.task, "rounds": rows, "median": medians, "hash_sign_verify": crypto_figures,
                          "baseline": baseline}))
        return
    print_table(rows, args.task)
    print_baseline(baseline)
    c = crypto_figures
    print(f"\n{c['megabytes']} MB model: hash {c['hash_ms']:.1f} ms + sign {c['sign_ms']:.2f} ms + verify "
          f"{c['verify_ms']:.2f} ms = {c['total_ms']:.1f} ms (target < 50 ms for 100 MB)")
    spread = {k: max(r[k] for r in rows) - min(r[k] for r in rows) for k in rows[0]}
    print(f"protocol work: {medians['protocol_pct']:.2f}% of the round (target < 1%); everything but training "
          f"and evaluation: {medians['not_train_eval_pct']:.1f}% (spread {spread['not_train_eval_pct']:.1f}; "
          f"target <= {NOT_TRAIN_EVAL_TARGET_PCT:g}%), median of {len(rows)} rounds")
    print(f"training in a miner actor (its fit, train_s): {baseline['speed_ratio']:.3f}x the speed of plain Lightning "
          f"(target >= {SPEED_TARGET:g}x); the whole mine() call: {baseline['call_ratio']:.3f}x; medians of "
          f"{len(baseline['plain_s'])} fits each, taking turns")


def print_baseline(b: dict[str, Any]) -> None:
    print(f"\ntraining alone, same model, data and {b['threads']} torch thread(s) (s; median of {len(b['plain_s'])}, "
          "taking turns)")
    for name, key in (("plain Lightning", "plain_s"), ("miner fit", "miner_s"), ("mine() call", "call_s"),
                      ("plain CPU", "plain_cpu_s"), ("miner CPU", "miner_cpu_s")):
        xs = b[key]
        print(f"  {name:<16} {statistics.median(xs):>8.3f}  spread {max(xs) - min(xs):.3f}  "
              + " ".join(f"{x:.3f}" for x in xs))
    print("  (miner fit: Trainer built and fit inside the actor, as plain's is timed; mine() call: as this driver "
          "waits for it, the Ray call and the submission's making included)")
    print(f"  (CPU: the fit's in this process; the miner process's whole mine() call. CPU ratio {b['cpu_ratio']:.3f}: "
          "on a busy machine wall times measure the scheduler's shares, CPU seconds do not)")


if __name__ == "__main__":
    main()
