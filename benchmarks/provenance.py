"""Function-level provenance: honest independent models against disguised copies, per built-in net.

    python benchmarks/provenance.py [--quick] [--json]

For each net (mlp and cnn on digits, cnn1d on mnist1d) it trains honest miners the way a
miner does (the task's shared init, each behind its own Secure Mapping Layer, its own
watermark, the task's epochs, the mark settled) and, from one of them, the disguises a
thief can make after the reveal (``dlbc_ray.models.disguise``), each starting with every hidden
unit permuted and rescaled and the model re-mapped to the thief's own layer: "permuted" (the
thief's mark written with the least change), "permuted+noise" (1% noise first), "pruned" (30% of
each layer's weights), "dead-units" (a quarter of the units given random inputs and no outputs),
"permuted+fine-tune" (one epoch with its mark), "reset <layer>" for every layer (re-initialised,
then the task's epochs of training: "reset" of the mark's host is the partial-reuse attack) and
"distilled" (the shared init trained one epoch on the victim's labels). Every model is
fingerprinted as a validator does (activations on the raw probes through its own mapping layer,
and its gauge-fixed weights, ``models.alignment``), and every honest pair and every (victim,
disguise) pair is compared. Printed: per pair the figures the rule reads and its lead (the
strongest figure past its threshold of ``consensus.provenance``; < 0: judged independent), and per
net the most alike honest pair against each disguise. Exit status 1 if an honest pair is judged
derived or a claimed disguise is not. ``--honest 10 --epochs 2|5|10`` is how the thresholds were set.
"""

from __future__ import annotations

import hashlib
import itertools
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import PROTECTION, command_line, emit, identity, parse_flags, section, settings, table
from dlbc_ray.consensus.provenance import UNIT_THRESHOLD, WEIGHT_THRESHOLD, compute_derived_reason, get_thresholds
from dlbc_ray.crypto import Identity
from dlbc_ray.models import sml, watermark
from dlbc_ray.models.data import DatasetBundle, Split, load_builtin
from dlbc_ray.models.disguise import (add_noise, embed_mark, host_prefix, kill_units, layer_chain, permute_and_rescale,
                                     prune, remap, reset_layer)
from dlbc_ray.models.evaluate import evaluate
from dlbc_ray.models.fingerprint import (Fingerprint, Similarity, compare, fingerprint, fingerprint_model,
                                         null_fingerprints, probe_inputs)
from dlbc_ray.models.nets import build_net
from dlbc_ray.models.protect import mapping_layer, mark_secret, watermark_key
from dlbc_ray.models.training import train
from dlbc_ray.models.weights import load_into, to_numpy

Weights = dict[str, np.ndarray]
NETS = {"mlp": "digits", "cnn": "digits", "cnn1d": "mnist1d"}
FREE = ("permuted", "permuted+noise", "pruned", "dead-units")  # no training: the victim's function, or most of it
THIEF_MARGIN = 0.05  # validators ask for the bits, not a margin: a thief settles just past 0, changing little
EPOCHS = 2  # MINIMAL's task epochs: the least-trained honest models are the most alike (shared init)


@dataclass(frozen=True)
class Specimen:
    """A model as validators see it: weights trained behind ``seed``'s mapping layer, by ``who``."""

    name: str
    weights: Weights = field(repr=False)
    seed: bytes
    who: Identity


class Lab:
    """Honest miners and thieves for one net on one dataset (deterministic: same run, same models)."""

    def __init__(self, model: str, bundle: DatasetBundle, *, epochs: int = EPOCHS) -> None:
        self.model, self.bundle, self.epochs = model, bundle, epochs
        self.probes = probe_inputs(bundle.test, f"bench/{bundle.name}")
        self.nulls = null_fingerprints(self.net, self.probes)
        self.init = to_numpy(self.net())  # the task's shared init: every honest miner starts from it

    def net(self, seed: int = 0):  # type: ignore[no-untyped-def]
        return build_net(self.model, {}, self.bundle.input_shape, self.bundle.n_classes, seed=seed)

    def seed_of(self, who: Identity) -> bytes:
        return hashlib.sha256(b"bench-sml|" + who.derive("sml") + self.model.encode()).digest()

    def mapped(self, net, seed: bytes):  # type: ignore[no-untyped-def]
        q, kind = mapping_layer(seed, net, self.model, self.bundle.input_shape)
        return sml.MappedNet(net, sml.SecureMappingLayer(q, kind))

    def key(self, who: Identity, net) -> watermark.WatermarkKey:  # type: ignore[no-untyped-def]
        return watermark_key(mark_secret(who), who.public_key, net, self.model, PROTECTION.watermark_bits)

    def trained(self, who: Identity, weights: Weights, seed: bytes, epochs: int, name: str,
                margin: float = PROTECTION.mark_margin, teacher: Specimen | None = None) -> Specimen:
        """``weights`` trained ``epochs`` behind ``seed``'s layer with ``who``'s mark, settled like a miner
        (no epochs: the thief's mark written with the least change, ``embed_mark``)."""
        net = load_into(self.net(), weights)
        key = self.key(who, net)
        if epochs:
            train_seed = int.from_bytes(hashlib.sha256(who.derive("train") + name.encode()).digest()[:4], "big")
            train(self.mapped(net, seed), self.labels(teacher) if teacher else self.bundle.train, settings(train_seed, epochs),
                  regularizers=[watermark.WatermarkRegularizer(key, PROTECTION.watermark_lambda)])
        watermark.settle(net, key, margin=margin, max_steps=5_000)
        return Specimen(name, to_numpy(net), seed, who)

    def honest(self, index: int) -> Specimen:
        who = identity("miner", index)
        return self.trained(who, to_numpy(self.net()), self.seed_of(who), self.epochs, f"honest-{index}")

    def kinds(self) -> tuple[str, ...]:
        """Every disguise tried on this net: the function-keeping ones, then one reset per layer (``reset fc.0``;
        the mark's host is the ``partial-reuse`` attack), fine-tuning and a brief distillation."""
        chain = layer_chain(to_numpy(self.net()))
        return (*FREE, "permuted+fine-tune", *(f"reset {layer}" for layer in chain), "distilled")

    def disguise(self, kind: str, victim: Specimen, thief: Identity) -> Specimen:
        rng = np.random.default_rng(int.from_bytes(thief.derive(kind)[:4], "big"))
        own, shape = self.seed_of(thief), self.bundle.input_shape
        if kind == "distilled":  # the shared init trained for one epoch on the victim's labels: its function only
            return self.trained(thief, to_numpy(self.net()), own, 1, kind, THIEF_MARGIN, teacher=victim)
        weights = permute_and_rescale(victim.weights, rng)
        if kind == "permuted+noise":
            weights = add_noise(weights, rng, 0.01)
        if kind == "pruned":
            weights = prune(weights, 0.3)
        if kind == "dead-units":
            weights = kill_units(weights, rng, 0.25)
        weights = remap(weights, self.model, shape, victim.seed, own)
        key = self.key(thief, self.net())
        layer = {"partial-reuse": host_prefix(self.model), "reset-first": layer_chain(weights)[0]}.get(
            kind, kind.removeprefix("reset ") if kind.startswith("reset ") else None)
        if layer is not None:  # one layer re-initialised, then the task's epochs of training
            start = reset_layer(weights, self.model, {}, shape, self.bundle.n_classes, layer, seed=7)
            return self.trained(thief, start, own, self.epochs, kind, THIEF_MARGIN)
        weights = embed_mark(weights, key, THIEF_MARGIN)  # the thief's mark, written with the least change
        return self.trained(thief, weights, own, int(kind == "permuted+fine-tune"), kind, THIEF_MARGIN / 2)

    def labels(self, s: Specimen) -> Split:
        """The training inputs labelled by what ``s`` predicts (through its own map): a distiller's data."""
        q, kind = mapping_layer(s.seed, s.weights, self.model, self.bundle.input_shape)
        net = load_into(self.net(), s.weights).eval()
        with torch.inference_mode():
            y = net(torch.from_numpy(sml.map_inputs(self.bundle.train.x, q, kind))).argmax(1).numpy()
        return Split(x=self.bundle.train.x, y=y.astype(self.bundle.train.y.dtype))

    def fingerprint(self, s: Specimen, weights: Weights | None = None) -> Fingerprint:
        """As a validator: the raw probes through the submitter's own map (``weights``: other weights behind it)."""
        if weights is None:
            return fingerprint_model(self.net(), self.model, self.bundle.input_shape, s.weights, s.seed, self.probes,
                                     self.init)
        q, kind = mapping_layer(s.seed, s.weights, self.model, self.bundle.input_shape)
        return fingerprint(self.net(), weights, sml.map_inputs(self.probes, q, kind))

    def similarity(self, a: Specimen, b: Fingerprint) -> Similarity:
        """``a`` against ``b`` as a validator compares them (chance: random nets, or ``a``'s own start)."""
        return compare(self.fingerprint(a), [b], self.nulls, self.fingerprint(a, to_numpy(self.net())))[0]

    def accuracy(self, s: Specimen) -> float:
        q, kind = mapping_layer(s.seed, s.weights, self.model, self.bundle.input_shape)
        test = self.bundle.test
        return evaluate(self.net(), s.weights, type(test)(x=sml.map_inputs(test.x, q, kind), y=test.y))


@dataclass(frozen=True)
class Row:
    net: str
    pair: str
    units: tuple[float, ...]
    agreement: float
    weights: tuple[float, ...]
    accuracy: float
    derived: bool


def measure(model: str, honest: int, epochs: int = EPOCHS) -> tuple[list[Row], float]:
    lab = Lab(model, load_builtin(NETS[model]), epochs=epochs)
    models = [lab.honest(i) for i in range(honest)]
    thief = identity("thief", 0)
    t0 = time.perf_counter()
    fps = [lab.fingerprint(m) for m in models]
    fp_ms = (time.perf_counter() - t0) * 1e3 / len(models)
    rows = [_row(model, f"honest {i}~{j}", lab.similarity(models[j], fps[i]), lab.accuracy(models[j]))
            for i, j in itertools.combinations(range(honest), 2)]
    for kind in lab.kinds():
        fake = lab.disguise(kind, models[0], thief)
        rows.append(_row(model, kind, lab.similarity(fake, fps[0]), lab.accuracy(fake)))
    return rows, fp_ms


def _row(model: str, pair: str, sim: Similarity, accuracy: float) -> Row:
    return Row(model, pair, sim.units, sim.agreement, sim.weights, accuracy,
               compute_derived_reason(sim.units, sim.agreement, sim.weights, model=model) is not None)


def claimed(row: Row) -> bool:
    """The disguises the detector is claimed to catch: all but a brief distillation (a new model trained on the
    victim's labels: the function alone is taken), and on the conv nets a reset of a fully connected layer (the
    conv layers kept, retrained with the rest, then share no more than honest models do). Those are measured."""
    return row.pair != "distilled" and not (row.net != "mlp" and row.pair.startswith("reset fc."))


def passed(rows: list[Row]) -> bool:
    return all(r.derived == (not r.pair.startswith("honest")) for r in rows
               if r.pair.startswith("honest") or claimed(r))


def lead(row: Row) -> tuple[float, str]:
    """How far the pair's strongest figure is past its threshold (< 0: below every threshold), and which."""
    t = get_thresholds(row.net)
    figures = [(u - th, f"U{k}") for k, (u, th) in enumerate(zip(row.units, t.units or (UNIT_THRESHOLD,) * 9))]
    figures += [(w - th, f"W{k}") for k, (w, th) in enumerate(zip(row.weights, t.weights or (WEIGHT_THRESHOLD,) * 9))]
    return max([*figures, (row.agreement - t.agreement, "agreement")])


def report(rows: list[Row], fp_ms: dict[str, float]) -> str:
    body = table(["net", "pair", "units (U)", "weights (W)", "agreement", "acc", "lead", "derived", "claimed"],
                 [[r.net, r.pair, " ".join(f"{u:.2f}" for u in r.units), " ".join(f"{w:.2f}" for w in r.weights),
                   f"{r.agreement:.2f}", f"{r.accuracy:.3f}", "{:+.2f} {}".format(*lead(r)),
                   "yes" if r.derived else "no", "" if r.pair.startswith("honest") else "yes" if claimed(r) else "no"]
                  for r in rows])
    margins = []
    for net in dict.fromkeys(r.net for r in rows):
        t = get_thresholds(net)
        honest = [r for r in rows if r.net == net and r.pair.startswith("honest")]
        worst = max(honest, key=lambda r: lead(r)[0])
        margins.append([net, "honest (max)", len(honest), " ".join(f"{max(r.units[k] for r in honest):.2f}"
                                                                    for k in range(len(worst.units))),
                        " ".join(f"{max(r.weights[k] for r in honest):.2f}" for k in range(len(worst.weights))),
                        "{:+.2f} {}".format(*lead(worst)), ""])
        for r in rows:
            if r.net == net and not r.pair.startswith("honest"):
                margins.append([net, r.pair, "", " ".join(f"{u:.2f}" for u in r.units),
                                " ".join(f"{w:.2f}" for w in r.weights), "{:+.2f} {}".format(*lead(r)),
                                "yes" if claimed(r) else "no"])
        margins.append([net, "thresholds", "", " ".join(f"{x:.2f}" for x in t.units),
                        " ".join(f"{x:.2f}" for x in t.weights), f"fingerprint {fp_ms[net]:.1f} ms", ""])
    summary = table(["net", "pair", "pairs", "units (U)", "weights (W)", "lead", "claimed"], margins)
    return "\n".join([f"$ {command_line()}", section("Pairs (lead: the strongest figure past its threshold)", body),
                      section("Honest max against each disguise (lead < 0: judged independent)", summary),
                      f"\nevery honest pair below every threshold, every claimed disguise past one: "
                      f"{'yes' if passed(rows) else 'NO'} (timings provisional, 2 shared cores)"])


def main(argv: list[str] | None = None) -> int:
    args = parse_flags(__doc__.splitlines()[0], argv, lambda p: (
        p.add_argument("--epochs", type=int, default=EPOCHS, help="task epochs of honest miners and partial reuse"),
        p.add_argument("--nets", default=",".join(NETS), help="comma-separated nets"),
        p.add_argument("--honest", type=int, default=0, help="honest models per net (default 4 quick, else 6)")))
    nets, honest = tuple(args.nets.split(",")), args.honest or (4 if args.quick else 6)
    rows: list[Row] = []
    fp_ms: dict[str, float] = {}
    for net in nets:
        got, fp_ms[net] = measure(net, honest, args.epochs)
        rows += got
    figures = {"rows": [r.__dict__ for r in rows], "fingerprint_ms": fp_ms,
               "thresholds": {net: get_thresholds(net).__dict__ for net in nets}}
    emit(args.json, figures, lambda: report(rows, fp_ms))
    return 0 if passed(rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
