"""What ``scale.py`` measures without Ray: a validator's mark check against N registered miners, one ballot's
signature and size, and the memory of a network's actor processes."""

from __future__ import annotations

import math
import statistics
import time
from typing import Any

import numpy as np


def exponent(points: list[tuple[float, float]]) -> float:
    """k of cost ~ units^k by least squares on logs; nan with fewer than 2 distinct unit counts."""
    xs = [math.log(u) for u, c in points if c > 0]
    ys = [math.log(c) for u, c in points if c > 0]
    if len(set(xs)) < 2:
        return float("nan")
    return float(np.polyfit(xs, ys, 1)[0])


def mark_checks(registered: list[int], repeats: int, submitters: int = 4, earlier: int = 8) -> dict[str, Any]:
    """One submission's mark check with N registered miners: as one ring over every registered key (before), and
    over the owners the validator reads now (``consensus.marks``: every registered one up to the bound, beyond it
    a round of ``submitters`` with ``earlier`` owners of earlier models)."""
    from dlbc_ray.config import ProtectionConfig
    from dlbc_ray.consensus.marks import compute_mark_candidates
    from dlbc_ray.crypto import Identity
    from dlbc_ray.models.nets import build_net
    from dlbc_ray.models.protect import mark_secret, watermark_key
    from dlbc_ray.models.watermark import bit_errors, key_ring

    protection = ProtectionConfig()
    net = build_net("mlp", {}, (64,), 10)
    weights = {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}
    ids = [Identity.from_seed(f"miner-{i}", f"scale/{i}".encode()) for i in range(max(registered))]
    keys = {i.public_key: watermark_key(mark_secret(i), i.public_key, weights, "mlp", protection.watermark_bits)
            for i in ids}
    names = list(keys)
    rows = {}
    for n in registered:
        owners = compute_mark_candidates(names[:n], names[:submitters], names[n - earlier:n],
                                         all_up_to=protection.all_marks_up_to)
        every, narrowed = key_ring([keys[o] for o in names[:n]]), key_ring([keys[o] for o in owners])
        rows[n] = {"read": len(owners), "all_ms": _median_ms(lambda: bit_errors(weights, every), repeats),
                   "ring_ms": _median_ms(lambda: bit_errors(weights, narrowed), repeats)}
    m, t = keys[names[0]].x.shape
    return {"host_m": int(m), "bits_t": int(t), "bound": protection.all_marks_up_to, "submitters": submitters,
            "earlier": earlier, "per_n": rows, "all_exponent": exponent([(n, r["all_ms"]) for n, r in rows.items()]),
            "ring_exponent": exponent([(n, r["ring_ms"]) for n, r in rows.items()])}


def ballot_marks(sizes: list[int], repeats: int) -> dict[str, Any]:
    """A ballot's mark reads with S submitters (each reads every submitter's key): model by model, one pass over
    the ring each (before; the ring built once), and all S together, one product per key (``watermark.bit_errors_many``,
    now: no ring). One BLAS thread, as
    in a validator actor (Ray sets OMP_NUM_THREADS to its CPUs, at least 1); ms per submission."""
    from threadpoolctl import threadpool_limits

    from dlbc_ray.config import ProtectionConfig
    from dlbc_ray.crypto import Identity
    from dlbc_ray.models.nets import build_net
    from dlbc_ray.models.protect import mark_secret, watermark_key
    from dlbc_ray.models.watermark import bit_errors, bit_errors_many, key_ring

    protection, rows = ProtectionConfig(), {}
    models = [{k: v.detach().numpy().copy() for k, v in build_net("mlp", {}, (64,), 10, seed=i).state_dict().items()}
              for i in range(max(sizes))]
    ids = [Identity.from_seed(f"miner-{i}", f"scale/{i}".encode()) for i in range(max(sizes))]
    keys = [watermark_key(mark_secret(i), i.public_key, models[0], "mlp", protection.watermark_bits) for i in ids]
    with threadpool_limits(1):
        for s in sizes:
            ring, ballot = key_ring(keys[:s]), models[:s]
            one_by_one = _median_ms(lambda: [bit_errors(w, ring) for w in ballot], repeats) / s
            batched = _median_ms(lambda: bit_errors_many(ballot, keys[:s]), repeats) / s
            rows[s] = {"one_by_one_ms": one_by_one, "batched_ms": batched, "ring_mib": ring.x.nbytes / 2**20}
    return {"per_s": rows, "one_by_one_exponent": exponent([(s, r["one_by_one_ms"]) for s, r in rows.items()]),
            "batched_exponent": exponent([(s, r["batched_ms"]) for s, r in rows.items()])}


def pair_costs(repeats: int) -> dict[str, float]:
    """Provenance per reference on the digits mlp, one BLAS thread as in a validator actor: ms of CPU to compare a
    fingerprint with one more reference without its weight figures, and one weight matching (``alignment``). Two
    nets trained briefly here (a few seconds), so the matching has real, not random, weights to align."""
    from threadpoolctl import threadpool_limits

    from dlbc_ray.models.data import load_builtin
    from dlbc_ray.models.fingerprint import compare, fingerprint_model, null_fingerprints, probe_inputs, \
        weight_similarity
    from dlbc_ray.models.nets import build_net
    from dlbc_ray.models.training import TrainSettings, train
    from dlbc_ray.models.weights import to_numpy

    bundle = load_builtin("digits")
    net = lambda seed=0: build_net("mlp", {}, (64,), 10, seed=seed)  # noqa: E731
    probes, init = probe_inputs(bundle.test, "scale/pairs"), to_numpy(net())
    trained = []
    for seed in (1, 2):
        model = net()
        train(model, bundle.train, TrainSettings(epochs=1, seed=seed, num_threads=1))
        trained.append(fingerprint_model(net(), "mlp", (64,), to_numpy(model), None, probes, init))
    nulls = null_fingerprints(net, probes)
    with threadpool_limits(1):
        cheap = _median_ms(lambda: compare(trained[0], trained[1:] * 16, nulls, None, weights=False), repeats,
                           clock=time.process_time) / 16
        matching = _median_ms(lambda: weight_similarity(trained[0], trained[1]), repeats * 4, clock=time.process_time)
    return {"cheap_ms": cheap, "weights_ms": matching}


def ballot_costs(sizes: list[int], repeats: int) -> dict[int, dict[str, float]]:
    """One ballot of M votes, without Ray: its signature (a validator's), its check (the coordinator's, and the
    ledger's again at import) and its size on the wire, what a block holds V of."""
    from ray import cloudpickle  # how a ballot crosses to the coordinator

    from dlbc_ray import crypto
    from dlbc_ray.canonical import canonical_bytes
    from dlbc_ray.crypto import Identity
    from dlbc_ray.schema import Ballot, Verdict, Vote

    who = Identity.from_seed("scale-validator", b"scale/validator")
    h = lambda i: f"{i:064x}"  # noqa: E731
    out = {}
    for m in sizes:
        votes = tuple(Vote(commit=h(i + 1), verdict=Verdict.VALID, score=9000 + i % 999) for i in range(m))
        ballots = [Ballot(task_id=h(0), round_id=h(0), submissions_root=h(0), base_hash=h(0), close_ms=1 + i,
                          validator=who.public_key, votes=votes) for i in range(repeats)]
        signing, checking, signed = [], [], []
        for ballot in ballots:  # each one new: signature verdicts may be cached
            signing.append(_median_ms(lambda: signed.append(crypto.sign(who, ballot, h(0))), 1))
        for one in (cloudpickle.loads(cloudpickle.dumps(x)) for x in signed):  # as it arrives: no cached bytes
            checking.append(_median_ms(lambda: crypto.is_valid_signature(one), 1))
        out[m] = {"sign_ms": statistics.median(signing), "verify_ms": statistics.median(checking),
                  "bytes": len(canonical_bytes(signed[0]))}
    return out


def actor_memory() -> dict[str, dict[str, float]]:
    """Per actor class of this Ray cluster (the GCS's actor table: other clusters on the machine do not count),
    RSS and PSS in MiB of its live processes: median, max, the PSS total, and how many."""
    import psutil
    from ray._private import state  # the GCS's table gives each actor's pid without a dashboard

    kinds: dict[str, list[tuple[float, float]]] = {}
    for actor in state.actors().values():
        if actor["State"] != "ALIVE" or not actor["Pid"]:
            continue
        try:
            mem = psutil.Process(actor["Pid"]).memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        kinds.setdefault(actor["ActorClassName"], []).append((mem.rss / 2**20, getattr(mem, "pss", mem.rss) / 2**20))
    return {k: {"rss_mib": statistics.median(r for r, _ in v), "rss_max_mib": max(r for r, _ in v),
                "pss_mib": statistics.median(p for _, p in v), "pss_total_mib": sum(p for _, p in v), "n": len(v)}
            for k, v in sorted(kinds.items())}


def _median_ms(fn: Any, repeats: int, clock: Any = time.perf_counter) -> float:
    """The median of ``repeats`` calls of ``fn``, in ms of ``clock`` (wall by default; ``time.process_time``: CPU)."""
    samples = []
    for _ in range(repeats):
        t0 = clock()
        fn()
        samples.append((clock() - t0) * 1e3)
    return statistics.median(samples)
