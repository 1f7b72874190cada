"""How well the Uchida watermark binds a model to its miner, with the network's real settings.

    python benchmarks/watermark.py [--quick] [--json]      (or: python -m benchmarks.watermark)

On sklearn digits, for the registry nets with T = bits_for(M) bits and lambda 0.01, trained
the way miners train (``MinerConfig`` defaults through the real Lightning trainer):

(a) epochs until the embedded mark reads back at BER 0 (DLBC reports 3);
(b) test accuracy with and without the mark after the same epochs;
(c) removal: an attacker steals a miner's submission (task epochs, then settled, as
    ``Miner`` signs it) and fine-tunes it on the training set, (1) plainly or (2) while
    embedding its own mark with its own key. The owner's mark counts as lost when a model
    that never saw the owner's key would match its bits with chance >= ``foreign_p``, the
    point past which validators no longer call the model the owner's. The attacker gives up at ``budget_factor`` x the embedding epochs. Target
    (DLBC: 30 epochs to remove vs 3 to embed): removal takes at least 10x the embedding
    epochs, or costs more than ``ACCURACY_LOSS`` of test accuracy;
(d) BER after magnitude pruning of the host layer (Uchida: intact at 65%).

The Secure Mapping Layer is left out: it is a fixed map in front of the first layer and
never touches the host layer (see benchmarks/sml.py).
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import (
    PROTECTION,
    TASK,
    Scorer,
    Weights,
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
from dlbc_ray.models import watermark as wm
from dlbc_ray.models.protect import layer_distance
from dlbc_ray.models.data import DatasetBundle
from dlbc_ray.models.nets import build_net
from dlbc_ray.models.protect import watermark_key
from dlbc_ray.models.weights import load_into, to_numpy

ACCURACY_LOSS = 0.05  # an attack that costs more test accuracy than this "destroys" the model
TARGET_FACTOR = 10  # DLBC: removing takes 30 epochs, 10x the 3 it takes to embed
ATTACKS = {
    "fine-tune": "plain fine-tuning on the whole training set (miner settings: Adam, lr 1e-2, batch 64)",
    "fine-tune + own mark": "the same, while embedding the attacker's own mark (own key, same T and lambda)",
}


@dataclass(frozen=True)
class Plan:
    nets: tuple[str, ...]
    seeds: int
    max_epochs: int  # length of the embedding runs, with and without the mark
    task_epochs: int = TASK.epochs  # what a miner trains before it settles and signs: the stolen model
    budget_factor: int = 10  # the attacker gives up at this many times the embedding epochs
    prune: tuple[float, ...] = (0.25, 0.50, 0.65)


QUICK = Plan(nets=("mlp",), seeds=2, max_epochs=8)
FULL = Plan(nets=("mlp", "cnn"), seeds=5, max_epochs=10)


@dataclass
class EmbedRun:
    """One miner's training with and without its mark, and the submission it would sign."""

    seed: int
    key: wm.WatermarkKey
    ber: list[float]
    margin: list[float]
    acc_marked: list[float]
    acc_plain: list[float]
    stolen: Weights = field(repr=False)
    trained: Weights = field(repr=False)  # the marked run's last epoch: the mark embedded by training alone
    settle_steps: int
    acc_stolen: float

    @property
    def embed_epoch(self) -> int | None:
        """First epoch (from 1) at which the mark reads back at ``max_ber``."""
        return next((i + 1 for i, b in enumerate(self.ber) if b <= PROTECTION.max_ber), None)


def key_for(role: str, seed: int, net: Any, model: str) -> wm.WatermarkKey:
    who = identity(role, seed)
    return watermark_key(who.derive("watermark"), who.public_key, net, model, PROTECTION.watermark_bits)


def embed_run(model: str, seed: int, plan: Plan, bundle: DatasetBundle, score: Scorer) -> EmbedRun:
    net = build_net(model, {}, bundle.input_shape, bundle.n_classes, seed=seed)
    key = key_for("owner", seed, net, model)
    mark = wm.WatermarkRegularizer(key, PROTECTION.watermark_lambda)
    marked = train_tracked(net, bundle.train, settings(seed, plan.max_epochs), [mark])
    plain_net = build_net(model, {}, bundle.input_shape, bundle.n_classes, seed=seed)
    plain = train_tracked(plain_net, bundle.train, settings(seed, plan.max_epochs))
    submitted = load_into(build_net(model, {}, bundle.input_shape, bundle.n_classes), marked[plan.task_epochs - 1])
    steps = wm.settle(submitted, key, margin=PROTECTION.mark_margin)  # exactly what Miner does before signing
    stolen = to_numpy(submitted)
    return EmbedRun(seed, key, [wm.bit_error_rate(w, key) for w in marked],
                    [wm.projection_margin(w, key) for w in marked], [score(w) for w in marked],
                    [score(w) for w in plain], stolen, marked[-1], steps, score(stolen))


@dataclass
class AttackRun:
    seed: int
    owner_ber: list[float]
    thief_ber: list[float]
    acc: list[float]
    distance: list[float]  # median per-tensor relative L2 distance to the stolen weights (validators' copy rule)
    t: int

    @property
    def removed_at(self) -> int | None:
        """First epoch at which validators would no longer see the owner's mark."""
        return next((i + 1 for i, b in enumerate(self.owner_ber)
                     if wm.chance_of_matching(round(b * self.t), self.t) >= PROTECTION.foreign_p), None)


def attack(model: str, run: EmbedRun, kind: str, budget: int, bundle: DatasetBundle, score: Scorer) -> AttackRun:
    net = load_into(build_net(model, {}, bundle.input_shape, bundle.n_classes), run.stolen)
    thief = key_for("thief", run.seed, net, model)
    marks = [wm.WatermarkRegularizer(thief, PROTECTION.watermark_lambda)] if kind == "fine-tune + own mark" else []
    snaps = train_tracked(net, bundle.train, settings(10_000 + run.seed, budget), marks)
    return AttackRun(run.seed, [wm.bit_error_rate(w, run.key) for w in snaps],
                     [wm.bit_error_rate(w, thief) for w in snaps], [score(w) for w in snaps],
                     [layer_distance(w, run.stolen) for w in snaps], run.key.bits.size)


def pruned(weights: Weights, layer: str, fraction: float) -> Weights:
    """Magnitude pruning: the ``fraction`` of the host layer's weights smallest in |w| set to 0."""
    w = np.array(weights[layer], copy=True)
    w.flat[np.argsort(np.abs(w), axis=None, kind="stable")[: round(fraction * w.size)]] = 0.0
    return {**weights, layer: w}


chance_p = wm.chance_of_matching  # the validators' own rule


# ------------------------------------------------------------------------ figures


def embedding_figures(model: str, runs: list[EmbedRun], plan: Plan) -> dict[str, Any]:
    epochs = [r.embed_epoch for r in runs]
    reached = [e for e in epochs if e is not None]
    key = runs[0].key
    return {"net": model, "host": key.layer, "M": int(key.x.shape[0]), "T": int(key.x.shape[1]),
            "lambda": PROTECTION.watermark_lambda, "epochs_to_ber0": epochs,
            "mean": mean(reached) if len(reached) == len(epochs) else None,
            "std": float(np.std(reached)) if reached else None,
            "ber_by_epoch": [mean(r.ber[i] for r in runs) for i in range(plan.max_epochs)],
            "margin_by_epoch": [mean(r.margin[i] for r in runs) for i in range(plan.max_epochs)],
            "settle_steps_at_task_epochs": [r.settle_steps for r in runs]}


def accuracy_figures(model: str, runs: list[EmbedRun], epochs: int) -> dict[str, Any]:
    diffs = [r.acc_plain[epochs - 1] - r.acc_marked[epochs - 1] for r in runs]
    return {"net": model, "epochs": epochs, "plain": mean(r.acc_plain[epochs - 1] for r in runs),
            "marked": mean(r.acc_marked[epochs - 1] for r in runs), "cost": mean(diffs), "cost_sem": sem(diffs)}


def removal_figures(model: str, kind: str, runs: list[EmbedRun], attacks: list[AttackRun], embed_cost: int,
                    budget: int) -> dict[str, Any]:
    rows = []
    for run, a in zip(runs, attacks):
        at = a.removed_at
        i = (at or budget) - 1
        cheap = at is not None and at < TARGET_FACTOR * embed_cost and a.acc[i] >= run.acc_stolen - ACCURACY_LOSS
        rows.append({"seed": run.seed, "removed_at": at, "acc_stolen": run.acc_stolen, "acc_at": a.acc[i],
                     "owner_ber_at": a.owner_ber[i], "thief_ber_at": a.thief_ber[i], "distance_at": a.distance[i],
                     "chance_p_at": chance_p(round(a.owner_ber[i] * a.t), a.t), "owner_ber_end": a.owner_ber[-1],
                     "chance_p_end": chance_p(round(a.owner_ber[-1] * a.t), a.t), "cheap": cheap})
    return {"net": model, "attack": kind, "embed_cost": embed_cost, "budget": budget, "seeds": rows,
            "met": not any(r["cheap"] for r in rows)}


def pruning_figures(model: str, runs: list[EmbedRun], plan: Plan, score: Scorer) -> list[dict[str, Any]]:
    """For the settled submission and for the model trained to ``max_epochs`` (larger margins)."""
    out = []
    for which in ("submitted", "trained"):
        for fraction in (0.0, *plan.prune):
            cut = [pruned(getattr(r, "stolen" if which == "submitted" else "trained"), r.key.layer, fraction)
                   for r in runs]
            bers = [wm.bit_error_rate(w, r.key) for w, r in zip(cut, runs)]
            out.append({"net": model, "model": which, "pruned": fraction, "ber_mean": mean(bers), "ber_max": max(bers),
                        "margin": mean(wm.projection_margin(w, r.key) for w, r in zip(cut, runs)),
                        "acc": mean(score(w) for w in cut)})
    return out


def bench_net(model: str, plan: Plan, bundle: DatasetBundle) -> dict[str, Any]:
    score = Scorer(model, bundle)
    runs = [embed_run(model, seed, plan, bundle, score) for seed in range(plan.seeds)]
    embed_cost = math.ceil(mean(r.embed_epoch or plan.max_epochs for r in runs))
    budget = plan.budget_factor * embed_cost
    removal = [removal_figures(model, kind, runs, [attack(model, r, kind, budget, bundle, score) for r in runs],
                               embed_cost, budget) for kind in ATTACKS]
    return {"embedding": embedding_figures(model, runs, plan),
            "accuracy": [accuracy_figures(model, runs, e) for e in sorted({plan.task_epochs, plan.max_epochs})],
            "removal": removal, "pruning": pruning_figures(model, runs, plan, score)}


def targets(nets: list[dict[str, Any]], plan: Plan) -> list[dict[str, Any]]:
    """Pass/fail against the brief's targets; ``met`` is None for a comparison that is not a target."""
    out = []
    for n in nets:
        e = n["embedding"]
        mean_text = "not within the run for every seed" if e["mean"] is None else f"{e['mean']:.1f}"
        out.append({"target": f"{e['net']}: epochs to embed: {mean_text} (DLBC reports 3)", "met": None})
        for r in n["removal"]:
            out.append({"target": f"{r['net']}: {r['attack']}: removal takes >= {TARGET_FACTOR}x the embedding "
                                  f"epochs ({TARGET_FACTOR * r['embed_cost']}) or costs > {ACCURACY_LOSS:.0%} accuracy",
                        "met": r["met"]})
        for p in n["pruning"]:
            if abs(p["pruned"] - 0.65) < 1e-9:
                out.append({"target": f"{e['net']}: BER 0 after pruning 65% of the host layer, {p['model']} model "
                                      "(Uchida)", "met": p["ber_max"] == 0.0})
    return out


# ------------------------------------------------------------------------ report


def report(fig: dict[str, Any]) -> str:
    plan = fig["plan"]
    head = [f"Watermark benchmark (Uchida mark as DLBC uses it)  [{fig['seconds']:.0f} s]",
            f"command: {fig['command']}",
            f"data: sklearn digits, {fig['n_train']} train / {fig['n_test']} test; miner settings: Adam lr 1e-2, "
            f"batch 64, 10% val holdout, 1 thread; seeds: {plan['seeds']}",
            f"network: lambda {PROTECTION.watermark_lambda}, T = bits_for(M), owner needs BER <= {PROTECTION.max_ber}, "
            f"another's mark counts when its chance match is < {PROTECTION.foreign_p:.0e}; honest marks are settled to "
            f"a margin of {PROTECTION.mark_margin}"]
    parts = ["\n".join(head), _embedding_table(fig), _accuracy_table(fig), _removal_table(fig),
             _pruning_table(fig), _targets_table(fig)]
    return "\n".join(parts)


def _embedding_table(fig: dict[str, Any]) -> str:
    rows = []
    for n in fig["nets"]:
        e = n["embedding"]
        per = ", ".join("-" if x is None else str(x) for x in e["epochs_to_ber0"])
        avg = "not always" if e["mean"] is None else f"{e['mean']:.1f} +- {e['std']:.1f}"
        curve = " ".join(f"{b:.2f}" for b in e["ber_by_epoch"])
        steps = ", ".join(str(s) for s in e["settle_steps_at_task_epochs"])
        rows.append([e["net"], e["host"], e["M"], e["T"], avg, per, "3", curve, steps])
    task_epochs = fig["plan"]["task_epochs"]
    return section("(a) epochs until the mark reads back at BER 0 ('-' = not within the run); settle = SGD steps "
                   f"the miner's settle() needs after {task_epochs} epochs",
                   table(["net", "host", "M", "T", "mean epochs", "per seed", "DLBC", "mean BER by epoch",
                          "settle steps"], rows))


def _accuracy_table(fig: dict[str, Any]) -> str:
    rows = [[a["net"], a["epochs"], pct(a["plain"]), pct(a["marked"]),
             f"{100 * a['cost']:+.2f} +- {100 * a['cost_sem']:.2f}"] for n in fig["nets"] for a in n["accuracy"]]
    return section("(b) test accuracy % without and with the mark, same seeds and epochs (cost = plain - marked)",
                   table(["net", "epochs", "plain", "marked", "cost (points)"], rows))


def _removal_table(fig: dict[str, Any]) -> str:
    rows = []
    for n in fig["nets"]:
        for r in n["removal"]:
            s = r["seeds"]
            at = ", ".join(f">{r['budget']}" if x["removed_at"] is None else str(x["removed_at"]) for x in s)
            rows.append([r["net"], r["attack"], f"{sum(x['cheap'] for x in s)}/{len(s)}", at,
                         pct(mean(x["acc_stolen"] for x in s)), pct(mean(x["acc_at"] for x in s)),
                         f"{mean(x['thief_ber_at'] for x in s):.3f}", f"{max(x['chance_p_at'] for x in s):.1e}",
                         f"{min(x['distance_at'] for x in s):.3f}",
                         f"{mean(x['owner_ber_end'] for x in s):.3f}", f"{max(x['chance_p_end'] for x in s):.1e}",
                         "met" if r["met"] else "MISSED"])
    attacks = "\n".join(f"  {k}: {v}" for k, v in ATTACKS.items())
    note = (f"{attacks}\n  removed = owner's bits no better than chance at p {PROTECTION.foreign_p:.0e} (validators' "
            f"rule); the attacker gives up at the budget "
            f"({fig['plan']['budget_factor']}x the mean embedding epochs, rounded up); 'escaped' = removed in under "
            f"{TARGET_FACTOR}x at < {ACCURACY_LOSS:.0%} accuracy loss; 'then' = at removal (or at the budget); "
            f"p = chance an unmarked model shows that few bit errors (Binomial(T, 1/2)), worst seed; dist = median "
            f"per-tensor relative L2 distance to the stolen weights, smallest seed (copy rule: < {PROTECTION.copy_distance}); "
            "'end' = after the whole budget")
    headers = ["net", "attack", "escaped", "epochs to remove", "acc stolen", "acc then", "thief BER then",
               "p then", "dist then", "owner BER end", "p end", "target"]
    return section("(c) removal by an attacker who stole a settled submission", note + "\n" + table(headers, rows))


def _pruning_table(fig: dict[str, Any]) -> str:
    plan = fig["plan"]
    names = {"submitted": f"submitted: {plan['task_epochs']} epochs + settle",
             "trained": f"trained {plan['max_epochs']} epochs, no settle"}
    rows = [[p["net"], names[p["model"]], f"{p['pruned']:.0%}", f"{p['ber_mean']:.3f}", f"{p['ber_max']:.3f}",
             f"{p['margin']:.3f}", pct(p["acc"])] for n in fig["nets"] for p in n["pruning"]]
    return section("(d) magnitude pruning of the host layer (the smallest |w| set to 0); margin = mean sigmoid "
                   "agreement, 0.5 = none",
                   table(["net", "model", "pruned", "BER mean", "BER max", "margin", "test acc %"], rows))


def _targets_table(fig: dict[str, Any]) -> str:
    rows = [["info" if t["met"] is None else "met" if t["met"] else "MISSED", t["target"]] for t in fig["targets"]]
    return section("targets", table(["", "target"], rows))


def main() -> None:
    args = parse_flags("Watermark embedding, cost, removal and pruning figures.", more=lambda parser: parser.add_argument(
        "--budget-factor", type=int, help="the attacker's epochs, as a multiple of the embedding epochs (default 10)"))
    plan = QUICK if args.quick else FULL
    if args.budget_factor:
        plan = replace(plan, budget_factor=args.budget_factor)
    started = time.perf_counter()
    bundle = dataset()
    nets = [bench_net(model, plan, bundle) for model in plan.nets]
    fig = {"command": command_line(), "plan": plan.__dict__, "n_train": len(bundle.train), "n_test": len(bundle.test),
           "protection": PROTECTION.model_dump(), "attacks": ATTACKS, "accuracy_loss": ACCURACY_LOSS, "nets": nets,
           "targets": targets(nets, plan), "seconds": time.perf_counter() - started}
    emit(args.json, fig, lambda: report(fig))


if __name__ == "__main__":
    main()
