"""What the Secure Mapping Layer (PoLe) costs an honest miner and what it does to a thief.

    python benchmarks/sml.py [--quick] [--json]      (or: python -m benchmarks.sml)

On sklearn digits, per seed and net, with the miner's training settings and no watermark
(so the map is measured alone):

- accuracy trained plainly vs trained through the miner's map (same seed, same epochs),
  the latter scored as validators score it, on mapped test inputs. Target: the map costs at
  most ``MAX_COST`` (0.5 points);
- the folded model (the map folded into the first layer, as the requester receives it) on
  raw inputs: predictions must equal the mapped model's;
- a thief submitting those weights under its own map: validators score them through the
  thief's map, which should fall to chance (1 / classes);
- the documented limit: a delivered (folded) model re-mapped to the thief's map by
  ``W Q_thief^T`` works for the thief. The map protects the submission window only.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import (
    TASK,
    Scorer,
    command_line,
    dataset,
    emit,
    identity,
    mean,
    parse_flags,
    pct,
    section,
    sem,
    settings,
    table,
    train_tracked,
)
from dlbc_ray.models import sml
from dlbc_ray.models.data import DatasetBundle, Split
from dlbc_ray.models.evaluate import predict
from dlbc_ray.models.nets import build_net, net_info
from dlbc_ray.models.protect import mapping_layer

MAX_COST = 0.005  # 0.5 accuracy points
TASK_ID = "bench-sml-task"


@dataclass(frozen=True)
class Plan:
    nets: tuple[str, ...]
    seeds: int
    epochs: tuple[int, ...]


QUICK = Plan(nets=("mlp",), seeds=3, epochs=(TASK.epochs,))
FULL = Plan(nets=("mlp", "cnn"), seeds=8, epochs=(TASK.epochs, 2 * TASK.epochs))


def miner_map(role: str, seed: int, net: Any, model: str, bundle: DatasetBundle) -> tuple[np.ndarray, sml.Kind]:
    """The map a miner derives for this task, exactly as ``Miner`` does."""
    who = identity(role, seed)
    return mapping_layer(sml.derive_seed(who.derive("sml"), TASK_ID), net, model, bundle.input_shape)


def mapped_split(split: Split, q: np.ndarray, kind: sml.Kind) -> Split:
    return Split(sml.map_inputs(split.x, q, kind), split.y)


def one_seed(model: str, seed: int, epochs: int, bundle: DatasetBundle, score: Scorer) -> dict[str, Any]:
    def build() -> Any:
        return build_net(model, {}, bundle.input_shape, bundle.n_classes, seed=seed)

    plain = train_tracked(build(), bundle.train, settings(seed, epochs))[-1]
    net = build()
    q, kind = miner_map("miner", seed, net, model, bundle)
    through = sml.MappedNet(net, sml.SecureMappingLayer(q, kind))  # the miner's own training path
    mapped = train_tracked(through, bundle.train, settings(seed, epochs))[-1]
    first = net_info(model).first_layer
    folded = sml.fold_into_first_layer(mapped, first, q, kind)
    q_thief, _ = miner_map("thief", seed, net, model, bundle)
    remapped = sml.fold_into_first_layer(folded, first, np.ascontiguousarray(q_thief.T), kind)
    on_map = mapped_split(bundle.test, q, kind)
    same = predict(score.net, mapped, on_map.x) == predict(score.net, folded, bundle.test.x)
    return {"seed": seed, "side": int(q.shape[0]), "kind": kind, "plain": score(plain), "mapped": score(mapped, on_map),
            "folded": score(folded), "folded_agree": float(same.mean()),
            "thief": score(mapped, mapped_split(bundle.test, q_thief, kind)),
            "thief_remapped_folded": score(remapped, mapped_split(bundle.test, q_thief, kind))}


def bench(model: str, epochs: int, plan: Plan, bundle: DatasetBundle) -> dict[str, Any]:
    score = Scorer(model, bundle)
    seeds = [one_seed(model, s, epochs, bundle, score) for s in range(plan.seeds)]
    costs = [s["plain"] - s["mapped"] for s in seeds]
    agg = {k: mean(s[k] for s in seeds) for k in ("plain", "mapped", "folded", "folded_agree", "thief",
                                                  "thief_remapped_folded")}
    return {"net": model, "epochs": epochs, "kind": seeds[0]["kind"], "side": seeds[0]["side"], **agg,
            "cost": mean(costs), "cost_sem": sem(costs), "chance": 1.0 / bundle.n_classes,
            "folded_equal": all(s["folded_agree"] == 1.0 and s["folded"] == s["mapped"] for s in seeds),
            "seeds": seeds}


def targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        where = f"{r['net']} @ {r['epochs']} epochs"
        out.append({"target": f"{where}: SML costs <= {100 * MAX_COST:.1f} points (measured {100 * r['cost']:+.2f})",
                    "met": r["cost"] <= MAX_COST})
        out.append({"target": f"{where}: folded model on raw inputs == mapped model", "met": r["folded_equal"]})
        thief_ok = r["thief"] <= r["chance"] + 0.1
        out.append({"target": f"{where}: stolen weights through the thief's map near chance "
                              f"({pct(r['thief'])}% vs {pct(r['chance'])}%)", "met": thief_ok})
    return out


def report(fig: dict[str, Any]) -> str:
    plan = fig["plan"]
    head = [f"Secure Mapping Layer benchmark (PoLe)  [{fig['seconds']:.0f} s]", f"command: {fig['command']}",
            f"data: sklearn digits, {fig['n_train']} train / {fig['n_test']} test; miner settings: Adam lr 1e-2, "
            f"batch 64, 10% val holdout, 1 thread, no watermark; seeds: {plan['seeds']} (paired: same init and "
            "data order with and without the map)"]
    rows = [[r["net"], r["epochs"], f"{r['kind']} {r['side']}x{r['side']}", pct(r["plain"]), pct(r["mapped"]),
             f"{100 * r['cost']:+.2f} +- {100 * r['cost_sem']:.2f}", pct(r["folded"]),
             "yes" if r["folded_equal"] else "NO", pct(r["thief"]), pct(r["chance"]), pct(r["thief_remapped_folded"])]
            for r in fig["rows"]]
    headers = ["net", "epochs", "map", "plain", "through map", "cost (points)", "folded raw", "folded == mapped",
               "thief's map", "chance", "re-mapped folded"]
    note = ("test accuracy %, mean over seeds; cost = plain - through map (+- standard error); 'thief's map' = the "
            "miner's weights scored through another miner's map; 're-mapped folded' = the delivered folded model "
            "re-mapped to the thief's map (W Q_thief^T), the known limit")
    seeds = [[r["net"], r["epochs"], s["seed"], pct(s["plain"]), pct(s["mapped"]), pct(s["thief"])]
             for r in fig["rows"] for s in r["seeds"]]
    verdicts = [["met" if t["met"] else "MISSED", t["target"]] for t in fig["targets"]]
    per_seed = table(["net", "epochs", "seed", "plain", "through map", "thief's map"], seeds)
    return "\n".join(["\n".join(head), section("accuracy with and without the map", note + "\n" + table(headers, rows)),
                      section("per seed", per_seed), section("targets", table(["", "target"], verdicts))])


def main() -> None:
    args = parse_flags("Secure Mapping Layer cost, fold-in and theft figures.")
    plan = QUICK if args.quick else FULL
    started = time.perf_counter()
    bundle = dataset()
    rows = [bench(model, epochs, plan, bundle) for model in plan.nets for epochs in plan.epochs]
    fig = {"command": command_line(), "plan": plan.__dict__, "n_train": len(bundle.train), "n_test": len(bundle.test),
           "max_cost": MAX_COST, "rows": rows, "targets": targets(rows), "seconds": time.perf_counter() - started}
    emit(args.json, fig, lambda: report(fig))


if __name__ == "__main__":
    main()
