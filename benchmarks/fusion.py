"""BaaS fusion on non-IID shards: which rule gives the requester a better model, and which resists poison.

Each contributor holds a Dirichlet label-skewed shard, trains the task's mlp through
its own Secure Mapping Layer from the task's common initialization (``common_start``),
and submits; the weights are folded to raw inputs and fused (``dlbc_ray.models.fusion``).
A round is "local training then one fusion"; the protocol does one per block, so
round 1 is the realistic figure and more rounds show what several blocks would add.

    python -m benchmarks.fusion --quick          # digits, 1 seed, 3 rounds: about 30 s
    python -m benchmarks.fusion                  # digits and mnist1d, 3 seeds, 5 rounds, ablations:
                                                 # about 8 + 10 min (--dataset NAME runs one)
    python -m benchmarks.fusion --json > out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from dlbc_ray.consensus.contribution import compute_shares, leave_one_out_gains
from dlbc_ray.constants import SCORE_SCALE
from dlbc_ray.crypto import hash_weights
from dlbc_ray.models.data import DatasetBundle, Split, load_builtin, shard_indices
from dlbc_ray.models.evaluate import evaluate
from dlbc_ray.models.ensemble import evaluate_ensemble
from dlbc_ray.models.fusion import Contribution, common_start, fuse, fused_net, to_raw
from dlbc_ray.models.nets import build_net, net_info
from dlbc_ray.models.protect import mapping_layer, watermark_key
from dlbc_ray.models.sml import MappedNet, SecureMappingLayer, derive_seed
from dlbc_ray.models.training import TrainSettings, train
from dlbc_ray.models.watermark import WatermarkKey, WatermarkRegularizer, bit_error_rate
from dlbc_ray.models.weights import load_into, to_numpy

RULES = ("fedavg", "trimmed-mean", "median")
SCENARIOS = ("clean", "random", "flip")
SCENARIO_TITLES = {"clean": "clean", "random": "poison: random", "flip": "poison: label flip"}
MODEL = "mlp"
TASK_ID = "ab" * 32
REWARD = 1_000


@dataclass
class Setup:
    """One dataset cut into non-IID shards, with each contributor's SML."""

    name: str
    bundle: DatasetBundle
    shards: list[Split]
    maps: list[tuple[np.ndarray, str]]
    init: dict[str, np.ndarray]
    first_layer: str
    lr: float
    optimizer: str = "adam"
    use_sml: bool = True
    watermark: bool = False
    cache: dict[tuple[str, int, int, str, int], Contribution] = field(default_factory=dict)

    def net(self, seed: int = 0) -> torch.nn.Module:
        return build_net(MODEL, {}, self.bundle.input_shape, self.bundle.n_classes, seed=seed)

    def score(self, weights: dict[str, np.ndarray]) -> float:
        return evaluate(self.net(), weights, self.bundle.test)


def make_setup(name: str, n: int, alpha: float, seed: int, *, iid: bool = False) -> Setup:
    bundle = load_builtin(name, seed=seed)
    parts = shard_indices(bundle.train.y, n, iid=iid, seed=seed, alpha=alpha)
    shards = [bundle.train.take(p) for p in parts]
    init = to_numpy(build_net(MODEL, {}, bundle.input_shape, bundle.n_classes, seed=seed + 1))
    maps = [mapping_layer(derive_seed(bytes([i + 1]) * 32, TASK_ID), init, MODEL, bundle.input_shape)
            for i in range(n)]
    return Setup(name, bundle, shards, maps, init, net_info(MODEL).first_layer, lr=1e-2)


def mark_key(s: Setup, i: int) -> WatermarkKey:
    """Contributor ``i``'s Uchida key, as miners derive it (T = 256 capped at M/2)."""
    return watermark_key(bytes([0x80 + i]) * 32, f"{i + 1:064x}", s.init, MODEL, 256)


def local_train(s: Setup, start: dict[str, np.ndarray], i: int, epochs: int, seed: int, *,
                poison: str = "clean", undo_map: bool = True) -> Contribution:
    """Contributor ``i`` trains from the raw-space ``start`` through its SML and submits (mapped) weights."""
    key = (hash_weights(start), i, epochs, poison + ("" if undo_map else "-naive"), seed)
    if key in s.cache:
        return s.cache[key]
    q, kind = s.maps[i] if s.use_sml else (np.eye(s.maps[i][0].shape[0], dtype=np.float32), s.maps[i][1])
    data = s.shards[i]
    if poison == "random":
        rng = np.random.default_rng(seed * 1000 + i)
        weights = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in start.items()}
        contribution = Contribution(weights, q, kind, examples=len(data))  # type: ignore[arg-type]
    else:
        if poison == "flip":
            data = Split(data.x, (s.bundle.n_classes - 1) - data.y)
        begin = common_start(start, s.first_layer, q, kind) if undo_map else start  # type: ignore[arg-type]
        net = load_into(s.net(), begin)
        mapped = MappedNet(net, SecureMappingLayer(q, kind))  # type: ignore[arg-type]
        marks = [WatermarkRegularizer(mark_key(s, i), 0.01)] if s.watermark else []
        result = train(mapped, data, TrainSettings(epochs=epochs, lr=s.lr, seed=seed, num_threads=1,
                                                   optimizer=s.optimizer), regularizers=marks)
        contribution = Contribution(result.weights, q, kind, examples=result.examples)  # type: ignore[arg-type]
    s.cache[key] = contribution
    return contribution


def contributions(s: Setup, start: dict[str, np.ndarray], epochs: int, rnd: int, scenario: str,
                  **kw: bool) -> list[Contribution]:
    poison = lambda i: scenario if i == 0 else "clean"  # noqa: E731 - contributor 0 is the attacker
    return [local_train(s, start, i, epochs, seed=100 * rnd + i, poison=poison(i), **kw)
            for i in range(len(s.shards))]


def run_rounds(s: Setup, rule: str, rounds: int, epochs: int, scenario: str, **kw: bool) -> list[float]:
    """Accuracy of the fused model after each round of (local epochs, one fusion)."""
    model, curve = s.init, []
    for rnd in range(rounds):
        model = fuse(contributions(s, model, epochs, rnd, scenario, **kw), rule, first_layer=s.first_layer)
        curve.append(s.score(model))
    return curve


def loo_shares(s: Setup, scenario: str, epochs: int, rule: str) -> dict[str, object]:
    """One round from the common init: each contributor's leave-one-out gain and its share of REWARD."""
    members = contributions(s, s.init, epochs, 0, scenario)

    def score(group: list[Contribution]) -> int:
        net = fused_net(rule, s.net, len(group))
        return round(evaluate(net, fuse(group, rule, first_layer=s.first_layer), s.bundle.test) * SCORE_SCALE)

    full = score(members)
    without = {f"c{i}": score(members[:i] + members[i + 1:]) for i in range(len(members))}
    gains = leave_one_out_gains(full, without)
    return {"full": full, "gains": gains, "shares": compute_shares(REWARD, gains)}


@dataclass
class Study:
    """Figures of one dataset and one seed."""

    dataset: str
    seed: int
    info: dict[str, object]
    table: dict[str, dict[str, float]]  # row -> scenario -> test accuracy
    curves: dict[str, dict[str, list[float]]]  # rule -> scenario -> accuracy after each round
    loo: dict[str, dict[str, dict[str, object]]]  # rule -> scenario -> gains and shares
    ablations: dict[str, list[float]]


def study(name: str, n: int, alpha: float, rounds: int, epochs: int, seed: int, ablations: bool) -> Study:
    s = make_setup(name, n, alpha, seed)
    budget = rounds * epochs
    info: dict[str, object] = {
        "contributors": n, "alpha": alpha, "rounds": rounds, "local_epochs": epochs,
        "shard_sizes": [len(p) for p in s.shards], "n_test": len(s.bundle.test),
        "classes_per_shard": [int((np.bincount(p.y, minlength=s.bundle.n_classes) > 0).sum()) for p in s.shards],
    }
    table: dict[str, dict[str, float]] = {}
    solo = {sc: contributions(s, s.init, budget, 0, sc) for sc in SCENARIOS}  # each alone, same epoch budget
    for i in range(n):
        table[f"contributor {i} alone, {budget} ep"] = {sc: s.score(to_raw(solo[sc][i], s.first_layer))
                                                      for sc in SCENARIOS}
    central = load_into(s.net(), s.init)
    full_data = train(central, s.bundle.train, TrainSettings(epochs=budget, lr=s.lr, seed=seed, num_threads=1))
    table[f"one model on all data, {budget} ep"] = {"clean": s.score(full_data.weights)}
    curves = {rule: {sc: run_rounds(s, rule, rounds, epochs, sc) for sc in SCENARIOS} for rule in RULES}
    for rule in RULES:
        table[f"{rule}, 1 round x {epochs} ep"] = {sc: c[0] for sc, c in curves[rule].items()}
    table[f"ensemble, 1 round x {epochs} ep"] = {
        sc: evaluate_ensemble(s.net, [to_raw(c, s.first_layer) for c in contributions(s, s.init, epochs, 0, sc)],
                              s.bundle.test) for sc in SCENARIOS}
    if rounds > 1:
        for rule in RULES:
            table[f"{rule}, {rounds} rounds x {epochs} ep"] = {sc: c[-1] for sc, c in curves[rule].items()}
        table[f"ensemble, 1 round x {budget} ep"] = {
            sc: evaluate_ensemble(s.net, [to_raw(c, s.first_layer) for c in solo[sc]], s.bundle.test)
            for sc in SCENARIOS}
    loo = {rule: {sc: loo_shares(s, sc, epochs, rule) for sc in SCENARIOS} for rule in ("fedavg", "ensemble")}
    extra = run_ablations(s, name, n, alpha, rounds, epochs, seed) if ablations else {}
    return Study(name, seed, info, table, curves, loo, extra)


def run_ablations(s: Setup, name: str, n: int, alpha: float, rounds: int, epochs: int,
                  seed: int) -> dict[str, list[float]]:
    """Clean fedavg curves with one ingredient changed: what each one is worth."""
    result = {"as above (common init, SML undone)": run_rounds(s, "fedavg", rounds, epochs, "clean"),
              "SML not undone at the start": run_rounds(s, "fedavg", rounds, epochs, "clean", undo_map=False),
              "no SML at all": run_rounds(replace(s, use_sml=False, cache={}), "fedavg", rounds, epochs, "clean"),
              "SGD (momentum 0.9) lr 0.1": run_rounds(replace(s, optimizer="sgd", lr=0.1, cache={}), "fedavg",
                                                      rounds, epochs, "clean"),
              "IID shards instead of Dirichlet": run_rounds(make_setup(name, n, alpha, seed, iid=True), "fedavg",
                                                            rounds, epochs, "clean")}
    marked = replace(s, watermark=True, cache={})
    result["each contributor embeds its watermark"] = run_rounds(marked, "fedavg", rounds, epochs, "clean")
    own = [contributions(s, to_numpy(s.net(seed=1000 + i)), epochs, 0, "clean")[i] for i in range(n)]
    result["own random init per contributor"] = [s.score(fuse(own, "fedavg", first_layer=s.first_layer))]
    members = contributions(marked, s.init, epochs, 0, "clean")
    fused = fuse(members, "fedavg", first_layer=s.first_layer)
    result["BER: each contributor's own model"] = [bit_error_rate(to_raw(m, s.first_layer), mark_key(s, i))
                                                   for i, m in enumerate(members)]
    result["BER: fedavg model, each one's key"] = [bit_error_rate(fused, mark_key(s, i)) for i in range(n)]
    return result


# ------------------------------------------------------------------- printing


def _cell(values: list[float]) -> str:
    if not values:
        return ""
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{np.mean(values):.3f} +- {np.std(values):.3f}"


def _mean_curve(curves: list[list[float]]) -> str:
    return "".join(f"{a:>7.3f}" for a in np.mean(np.asarray(curves), axis=0))


def print_studies(studies: list[Study]) -> None:
    first = studies[0]
    info = first.info
    seeds = [st.seed for st in studies]
    print(f"\n== {first.dataset}: {info['contributors']} contributors, Dirichlet alpha {info['alpha']}, "
          f"mlp (128, 64), each through its own SML; {info['rounds']} round(s) x {info['local_epochs']} "
          f"local epochs; seeds {seeds}" + (" (mean +- sd over seeds)" if len(seeds) > 1 else ""))
    for st in studies:
        print(f"seed {st.seed}: shard sizes {st.info['shard_sizes']}, classes per shard "
              f"{st.info['classes_per_shard']}, test examples {st.info['n_test']}")
    print("contributor 0 is the attacker in the poison columns (random: N(0,1) weights; flip: labels 9 - y)")
    print(f"\n{'test accuracy':<36}" + "".join(f"{SCENARIO_TITLES[sc]:>20}" for sc in SCENARIOS))
    for row in first.table:
        cells = [_cell([st.table[row][sc] for st in studies if sc in st.table[row]]) for sc in SCENARIOS]
        print(f"{row:<36}" + "".join(f"{c:>20}" for c in cells))
    rounds = int(info["rounds"])  # type: ignore[call-overload]
    if rounds > 1:
        print(f"\n{'accuracy after round (mean)':<36}" + "".join(f"{k + 1:>7}" for k in range(rounds)))
        for rule in first.curves:
            for sc in SCENARIOS:
                print(f"{rule + ', ' + sc:<36}" + _mean_curve([st.curves[rule][sc] for st in studies]))
    for rule, by_scenario in first.loo.items():
        print(f"\n{rule}, 1 round, seed {first.seed}: leave-one-out gain (x1e-4) -> share of a {REWARD} reward")
        for sc, d in by_scenario.items():
            gains, shares = d["gains"], d["shares"]
            cells = "  ".join(f"{k}: {gains[k]:+5d} -> {shares[k]:4d}" for k in gains)  # type: ignore[index]
            print(f"{SCENARIO_TITLES[sc]:<20} fused {d['full']:5d} | {cells}")
    if first.ablations:
        print(f"\nablation (seed {first.seed}), clean fedavg, accuracy after each round")
        for row in first.ablations:
            if row.startswith("BER"):
                continue
            print(f"{row:<40}" + _mean_curve([first.ablations[row]]))
        print("\nwatermarks after 1 round (bit error rate per contributor 0..n-1; 0 = the owner's mark intact)")
        for row in (r for r in first.ablations if r.startswith("BER")):
            print(f"{row:<40}" + _mean_curve([first.ablations[row]]))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="digits, one seed, 3 rounds, no ablations")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--contributors", type=int, default=5)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 (default 1 quick, 3 full)")
    parser.add_argument("--dataset", choices=["digits", "mnist1d"], action="append",
                        help="only this dataset (repeatable; default: digits quick, both full)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    started = time.perf_counter()
    datasets, rounds, ablations = (["digits"], 3, False) if args.quick else (["digits", "mnist1d"], 5, True)
    seeds = range(args.seeds or (1 if args.quick else 3))
    results = [[study(name, args.contributors, args.alpha, rounds, 5, seed, ablations and seed == 0)
                for seed in seeds] for name in args.dataset or datasets]
    if args.json:
        print(json.dumps({"studies": [asdict(st) for group in results for st in group],
                          "seconds": time.perf_counter() - started}, indent=1))
    else:
        for group in results:
            print_studies(group)
        print(f"\n({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
