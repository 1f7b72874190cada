"""1 device vs W data-parallel workers (Ray Train, Lightning's RayDDPStrategy), and the replay of W workers' run.

For each run: the miner's single-device fit (``models.training.train`` with its transcript recorder, in this
process) and the same task on W Ray Train workers (``actors.data_parallel``, gloo on CPU, NCCL with --gpu),
each worker with --threads torch threads. Prints per figure the median of the runs [min-max] with its target:

  fit seconds          inside the workers, Trainer set-up included (what the round waits for, less start-up)
  speed-up             1-device fit / W-worker fit        target >= 0.9 x W (W = 2: >= 1.8x)
  start-up seconds     the W-worker call's wall less its fit: Ray Train's controller and worker processes
  replay               every segment of the W-worker transcript replayed on CPU, shard by shard: bitwise
                       segments and the largest relative L2 distance (W = 2 on CPU: all bitwise; with
                       --gpu this is the GPU-vs-CPU figure AuditParams.tolerance must cover)

  python benchmarks/data_parallel.py                       # cnn on digits, 3 epochs, 2 workers, 3 runs
  python benchmarks/data_parallel.py --gpu --workers 2     # on a machine with 2 GPUs (benchmarks/gpu_check.sh)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def _inputs(model: str, epochs: int, threads: int) -> dict[str, Any]:
    from dlbc_ray import crypto
    from dlbc_ray.actors.miner import mapped_net, own_marks
    from dlbc_ray.config import MINIMAL
    from dlbc_ray.consensus.transcript import compute_hyperparameters, compute_training_seed
    from dlbc_ray.crypto import Identity
    from dlbc_ray.models.data import load_builtin
    from dlbc_ray.models.nets import build_net
    from dlbc_ray.runtime.network import make_task

    miner, requester = Identity.from_seed("miner", b"miner"), Identity.from_seed("requester", b"requester")
    bundle = load_builtin("digits")
    spec = make_task(requester, MINIMAL.task.model_copy(update={"model": model, "epochs": epochs}), bundle, nonce=1,
                     created_ms=1, chain_id="0" * 64).message
    task_id, round_id = crypto.message_hash(spec), "1" * 64
    net = build_net(spec.model.name, spec.model.params, spec.dataset.input_shape, spec.dataset.n_classes, seed=0)
    mapped, sml_seed = mapped_net(miner, MINIMAL.protection, net, spec, task_id, round_id)
    cfg = MINIMAL.miner
    return {"miner": miner, "bundle": bundle, "spec": spec, "task_id": task_id, "round_id": round_id, "net": mapped,
            "sml_seed": sml_seed, "marks": own_marks(miner, MINIMAL.protection, net, spec), "protection": MINIMAL.protection,
            "hyper": compute_hyperparameters(cfg.batch_size, cfg.lr, cfg.optimizer, cfg.val_fraction),
            "seed": compute_training_seed(task_id, miner.public_key, round_id), "threads": threads, "cfg": cfg}


def _settings(i: dict[str, Any], accelerator: str) -> Any:
    from dlbc_ray.models.training import TrainSettings

    cfg = i["cfg"]
    return TrainSettings(epochs=i["spec"].max_epochs, batch_size=cfg.batch_size, lr=cfg.lr, optimizer=cfg.optimizer,
                         seed=i["seed"], accelerator=accelerator, val_fraction=cfg.val_fraction,
                         num_threads=i["threads"], objective=i["spec"].metric)


def _header(i: dict[str, Any], device: str, workers: int) -> Any:
    from dlbc_ray.models import transcript

    header, recorder = transcript.start(i["task_id"], i["miner"].public_key, i["round_id"], i["bundle"].train,
                                        max_epochs=i["spec"].max_epochs, threads=i["threads"], hyper=i["hyper"],
                                        device=device, params=i["protection"].transcript)
    return header.model_copy(update={"workers": workers}), recorder


def one_device(model: str, epochs: int, threads: int) -> float:
    from dlbc_ray.models import transcript
    from dlbc_ray.models.training import train

    i = _inputs(model, epochs, threads)
    _, recorder = _header(i, "cpu", 1)
    result = train(i["net"], i["bundle"].train, _settings(i, "cpu"), regularizers=i["marks"], callbacks=[recorder],
                   order=transcript.DerivedOrder)
    return result.seconds


def workers_run(model: str, epochs: int, threads: int, workers: int, gpu: bool) -> dict[str, Any]:
    from dlbc_ray.actors import data_parallel as dp
    from dlbc_ray.config import MinerConfig

    i = _inputs(model, epochs, threads)
    header, _ = _header(i, "gpu" if gpu else "cpu", workers)
    job = dp.Job(net=i["net"], data=i["bundle"].train, settings=_settings(i, "gpu" if gpu else "cpu"),
                 regularizers=tuple(i["marks"]), header=header, audit=i["protection"].transcript, workers=workers)
    t0 = time.perf_counter()
    result, kept = dp.train(job, dp.open_channel(), dp.Placement(use_gpu=gpu, cpus_per_worker=float(threads),
                                                                 timeout_s=MinerConfig().train_call_timeout_s))
    wall = time.perf_counter() - t0
    return {"fit_s": result.seconds, "startup_s": wall - result.seconds, **replay_check(i, kept)}


def replay_check(i: dict[str, Any], kept: Any) -> dict[str, Any]:
    """Every segment of ``kept`` replayed on CPU as a validator replays it."""
    import numpy as np

    from dlbc_ray.models.protect import mark_secret
    from dlbc_ray.models.replay import Secrets, derive_for, relative_distance, replay

    sub = type("Sub", (), {"miner": i["miner"].public_key, "epochs": i["spec"].max_epochs, "model_hash": ""})()
    derived = derive_for(i["spec"], i["task_id"], i["round_id"], i["bundle"].train, sub,
                         Secrets(i["sml_seed"], mark_secret(i["miner"]), i["protection"]), i["hyper"])
    exact, worst = 0, 0.0
    for k in range(len(kept.leaves) - 1):
        start, end = kept.checkpoint(k), kept.checkpoint(k + 1)
        got = replay(derived.make_system, derived.fit, kept.header, start, end.step)
        exact += all(np.array_equal(got.weights[n], end.weights[n]) for n in end.weights)
        worst = max(worst, relative_distance(got.weights, end.weights))
    return {"segments": len(kept.leaves) - 1, "bitwise": exact, "worst_distance": worst}


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} [{min(values):.2f}-{max(values):.2f}]"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker and for the 1-device fit")
    parser.add_argument("--gpu", action="store_true", help="workers on one GPU each (NCCL); the 1-device fit stays CPU")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    import ray

    ray.init(num_cpus=args.workers * args.threads + 1, include_dashboard=False, log_to_driver=False,
             logging_level="ERROR")
    try:
        rows = [(one_device(args.model, args.epochs, args.threads),
                 workers_run(args.model, args.epochs, args.threads, args.workers, args.gpu)) for _ in range(args.runs)]
    finally:
        ray.shutdown()
    single, many = [r[0] for r in rows], [r[1] for r in rows]
    speedup = [s / m["fit_s"] for s, m in zip(single, many)]
    figures = {"workers": args.workers, "model": args.model, "epochs": args.epochs, "gpu": args.gpu,
               "one_device_fit_s": single, "workers_fit_s": [m["fit_s"] for m in many],
               "startup_s": [m["startup_s"] for m in many], "speedup": speedup,
               "replay": [{k: m[k] for k in ("segments", "bitwise", "worst_distance")} for m in many]}
    if args.json:
        print(json.dumps(figures))
        return figures
    w = args.workers
    print(f"{args.model} on digits, {args.epochs} epochs, {args.runs} runs, {args.threads} thread(s) per worker")
    print(f"  1-device fit s          {spread(single)}")
    print(f"  {w}-worker fit s          {spread(figures['workers_fit_s'])}")
    print(f"  speed-up                {spread(speedup)}x   target >= {0.9 * w:.1f}x")
    print(f"  {w}-worker start-up s     {spread(figures['startup_s'])}   (Ray Train controller + worker processes)")
    for r in figures["replay"]:
        print(f"  replay on CPU           {r['bitwise']}/{r['segments']} segments bitwise, worst rel L2 "
              f"{r['worst_distance']:.2e}   target: all bitwise for {w} <= 2 workers on CPU")
    return figures


if __name__ == "__main__":
    main()
