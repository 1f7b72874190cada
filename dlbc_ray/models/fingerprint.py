"""Function-level provenance: does a submission compute what an earlier model computes?

Weight bytes say nothing once a thief permutes and rescales hidden units (``disguise``);
what the network computes does. A validator runs each model, on raw inputs through its
submitter's own revealed mapping layer, over a fixed probe set and keeps, per hidden
layer, every unit's pre-activation pattern (a conv channel: its spatial mean), plus the
predicted labels. Two measures follow:

- **unit match** (Li et al., "Convergent learning", ICLR 2016): per layer, the mean over
  one model's units of the best Pearson correlation with any unit of the other. Invariant
  to permuting units and to scaling each by c > 0, and layer by layer, so a model of which
  only some layers were reset and retrained ("partial reuse") still shows the layers it kept.
  It is reported above chance: 0 is what a random net of the architecture, or the task's
  public shared init, already matches (whichever is more), 1 the same units.
- **agreement**: the share of probes on which the two predict the same label. Two thirds of
  the probes are off the data (mixes of two test inputs of different classes, near decision
  boundaries, and noise), where independently trained models part ways (the idea of IPGuard,
  Cao et al., AsiaCCS 2021, and ModelDiff, Li et al., ISSTA 2021, without their adversarial search).

The probes are the validator's held-out test inputs, chosen, mixed and noised by a public key
(the dataset's test hash): every validator draws the same ones, and no miner holds them. The
decision rule on these figures is ``consensus.provenance``; ``benchmarks/provenance.py``
measures honest pairs against disguises.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Container, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from dlbc_ray.models import sml
from dlbc_ray.models.alignment import Canon, canonical, layer_similarity
from dlbc_ray.models.data import Split
from dlbc_ray.models.disguise import layer_chain
from dlbc_ray.models.nets import net_info
from dlbc_ray.models.protect import mapping_layer
from dlbc_ray.models.weights import load_into, to_numpy

PROBES = 384  # a third natural test inputs, a third mixes, a third noise; the benchmark measures margins at this size
NULL_SEEDS = (1_000, 1_001)  # the public random nets that set each layer's chance level
PROBE_DOMAIN = b"dlbc/provenance-probes/v1|"


@dataclass(frozen=True)
class Fingerprint:
    """What one model computes on the probes: per hidden layer (P, U) centred, unit-norm unit columns
    (dead units dropped), and the predicted label of each probe."""

    units: tuple[np.ndarray, ...]
    labels: np.ndarray
    canon: Canon | None = None  # its weights, gauge-fixed, and the shared init in that gauge (``models.alignment``)

    @property
    def nbytes(self) -> int:
        return sum(u.nbytes for u in self.units) + self.labels.nbytes + (self.canon.nbytes if self.canon else 0)


@dataclass(frozen=True)
class Similarity:
    """How alike two fingerprints are: per hidden layer the unit match above chance (1: the same units,
    0: no more alike than a random net of that architecture), and the label agreement (0..1)."""

    units: tuple[float, ...]
    agreement: float
    weights: tuple[float, ...] = ()  # per layer, the kept share of its learned weights (``alignment.layer_similarity``)


def probe_inputs(test: Split, key: str, n: int = PROBES) -> np.ndarray:
    """``n`` probes from the held-out ``test`` split, drawn by ``key``: a third inputs as they are, a third
    mixes ``a x_i + (1 - a) x_j`` of two inputs of different classes (a in [0.35, 0.65]), and a third
    Gaussian noise with the split's mean and spread (where unrelated units decorrelate best)."""
    digest = hashlib.sha256(PROBE_DOMAIN + key.encode()).digest()
    rng = np.random.Generator(np.random.PCG64(int.from_bytes(digest, "big")))
    x, y = np.asarray(test.x, np.float32), np.asarray(test.y)
    k = n // 3
    natural = x[rng.choice(len(x), size=k, replace=len(x) < k)]
    i, j = rng.integers(len(x), size=(2, 8 * k + 8))
    pairs = np.flatnonzero(y[i] != y[j])[:k]
    pairs = pairs if len(pairs) == k else np.arange(k)  # a one-class split: plain mixes
    a = rng.uniform(0.35, 0.65, size=k).astype(np.float32).reshape(-1, *([1] * (x.ndim - 1)))
    mixed = a * x[i[pairs]] + (1 - a) * x[j[pairs]]
    noise = x.mean(0) + x.std() * rng.standard_normal((n - 2 * k, *x.shape[1:]))
    return np.ascontiguousarray(np.concatenate([natural, mixed, noise]), dtype=np.float32)


def fingerprint(net: nn.Module, weights: Mapping[str, np.ndarray], probes: np.ndarray) -> Fingerprint:
    """Run ``net`` carrying ``weights`` on ``probes`` (already through the submitter's mapping layer)."""
    chain = layer_chain(weights)
    modules = dict(net.named_modules())
    seen: list[torch.Tensor] = []
    hooks = [modules[name].register_forward_hook(lambda m, i, o: seen.append(o)) for name in chain[:-1]]
    try:
        load_into(net, weights).eval()
        with torch.inference_mode():
            logits = net(torch.from_numpy(probes))
    finally:
        for hook in hooks:
            hook.remove()
    units = tuple(_columns(o.flatten(2).mean(2) if o.ndim > 2 else o) for o in seen)
    # one output (a regression net): no label to predict, argmax would be 0 for every probe and every model
    labels = logits.argmax(1).numpy() if logits.ndim == 2 and logits.shape[1] > 1 else np.zeros(0)
    return Fingerprint(units=units, labels=labels.astype(np.int16))


def fingerprint_model(net: nn.Module, model: str, input_shape: tuple[int, ...], weights: Mapping[str, np.ndarray],
                      seed: bytes | None, probes: np.ndarray, init: Mapping[str, np.ndarray]) -> Fingerprint:
    """A submission as validators see it: what it computes on the raw ``probes`` through its submitter's own
    mapping layer (``seed``; None: no map), and its weights gauge-fixed beside the shared ``init``."""
    q, kind = mapping_layer(seed, net, model, input_shape) if seed is not None else (None, "dense")
    fp = fingerprint(net, weights, probes if q is None else sml.map_inputs(probes, q, kind))
    return replace(fp, canon=canonical(weights, init, net_info(model).first_layer, q, kind))


def null_fingerprints(build: Callable[[int], nn.Module], probes: np.ndarray) -> tuple[Fingerprint, ...]:
    """Fingerprints of the public random nets (``build(seed)``) on raw probes: each layer's chance level."""
    return tuple(fingerprint(build(seed), to_numpy(build(seed)), probes) for seed in NULL_SEEDS)


def _columns(acts: torch.Tensor) -> np.ndarray:
    """(P, U) activations centred per unit and scaled to unit norm; units that never vary are dropped."""
    a = acts.double().numpy()
    a = a - a.mean(0)
    norms = np.linalg.norm(a, axis=0)
    live = norms > 1e-6 * max(float(norms.max(initial=0.0)), 1e-30)
    return np.ascontiguousarray(a[:, live] / norms[live], dtype=np.float32)


def compare(fp: Fingerprint, refs: Sequence[Fingerprint], nulls: Sequence[Fingerprint],
            start: Fingerprint | None = None, *, weights: bool = True) -> list[Similarity]:
    """``fp`` against each reference, one matrix product per layer for all of them together.

    Each layer's match is rescaled by its chance level: ``fp``'s match with ``nulls`` (random nets
    of the same architecture; a layer of few weights per unit, a 3-tap first conv, matches anything
    well), or with ``start`` (the task's public shared init, seen through the submitter's own map)
    where that is higher: what every honest miner starts from is no evidence of copying. ``weights=False``
    leaves out the weight figures (``weight_similarity``, one weight matching per reference: the costly part).
    """
    if not refs:
        return []
    excess: list[list[float]] = []
    for k, a in enumerate(fp.units):
        raw = _unit_match(a, [r.units[k] if k < len(r.units) else None for r in refs])
        chance = float(np.mean(_unit_match(a, [n.units[k] if k < len(n.units) else None for n in nulls]) or [0.0]))
        if start is not None and k < len(start.units):
            chance = max(chance, _unit_match(a, [start.units[k]])[0])
        excess.append([(m - chance) / (1.0 - chance) if chance < 1.0 - 1e-6 else 0.0 for m in raw])
    return [Similarity(units=tuple(layer[r] for layer in excess),
                       agreement=float(np.mean(fp.labels == ref.labels))
                       if ref.labels.shape == fp.labels.shape and fp.labels.size else 0.0,
                       weights=weight_similarity(fp, ref) if weights else ())
            for r, ref in enumerate(refs)]


def weight_similarity(fp: Fingerprint, ref: Fingerprint) -> tuple[float, ...]:
    """Per layer, the share of ``ref``'s learned weights ``fp`` keeps (``alignment.layer_similarity``); () unless
    both carry their gauge-fixed weights."""
    return layer_similarity(ref.canon, fp.canon) if ref.canon and fp.canon else ()


def _unit_match(a: np.ndarray, refs: Sequence[np.ndarray | None]) -> list[float]:
    """Per reference, the mean over ``a``'s units of their best correlation with one of its units."""
    usable = [(r, b) for r, b in enumerate(refs) if b is not None and b.shape[0] == a.shape[0] and b.shape[1]]
    out = [0.0] * len(refs)
    if not usable or not a.shape[1]:
        return out
    corr = a.T @ np.concatenate([b for _, b in usable], axis=1)  # (U_a, sum U_b)
    start = 0
    for r, b in usable:
        out[r] = float(corr[:, start:start + b.shape[1]].max(1).mean())
        start += b.shape[1]
    return out


@dataclass(frozen=True)
class Reference:
    """An earlier valid model a validator judged: who sent it, in which round, and what it computes."""

    name: str  # how a verdict's detail names it
    miner: str
    round_id: str
    model_hash: str
    fingerprint: Fingerprint


class ReferenceSet:
    """The earlier valid models worth comparing against, per (dataset, architecture): bounded, so a
    validator's cost per submission does not grow with the chain or the miners.

    Two queues per key: the last ``winners`` models that went on to win (what a replay copies) and the
    last ``recent`` other valid models (a rival's revealed submission; the validator offers each round's
    best-scored first, so the round's winner is among them until the next round names it and it moves
    to the winners).
    """

    def __init__(self, winners: int = 8, recent: int = 8) -> None:
        self.winners, self.recent = winners, recent
        self._won: dict[str, dict[str, Reference]] = {}  # key -> model hash -> reference, oldest first
        self._recent: dict[str, dict[str, Reference]] = {}

    def earlier(self, key: str, *, round_id: str) -> list[Reference]:
        """The references from rounds other than ``round_id``."""
        refs = [*self._won.get(key, {}).values(), *self._recent.get(key, {}).values()]
        return [r for r in refs if r.round_id != round_id]

    def remember(self, key: str, ref: Reference, won: Container[str]) -> None:
        """Keep ``ref`` (after promoting the recent models that have since won)."""
        winners, recent = self._won.setdefault(key, {}), self._recent.setdefault(key, {})
        for h in [h for h in recent if h in won]:
            winners[h] = recent.pop(h)
        if ref.model_hash not in winners:
            recent.pop(ref.model_hash, None)
            recent[ref.model_hash] = ref
        for queue, bound in ((winners, self.winners), (recent, self.recent)):
            while len(queue) > bound:
                del queue[next(iter(queue))]

    def knows(self, key: str, model_hash: str) -> bool:
        return model_hash in self._won.get(key, {}) or model_hash in self._recent.get(key, {})

    def remember_winner(self, key: str, ref: Reference) -> None:
        """Keep ``ref`` among the winners (one read back from the chain: ``actors.winners``)."""
        winners = self._won.setdefault(key, {})
        self._recent.get(key, {}).pop(ref.model_hash, None)
        winners[ref.model_hash] = ref
        while len(winners) > self.winners:
            del winners[next(iter(winners))]

    def __len__(self) -> int:
        return sum(len(r) for r in self._won.values()) + sum(len(r) for r in self._recent.values())
