"""Weight-space provenance: do two models share a layer's learned weights, up to the moves a thief makes for free?

The activation fingerprint (``models.fingerprint``) compares what layers compute, so a copy whose
FIRST layer was reset and retrained looks new all the way up: every later layer reads new inputs.
The later layers' weights are still the stolen ones, though. This module compares weights layer by
layer, after undoing what costs a thief nothing:

- **rescaling** (a ReLU unit's incoming weights times c > 0, its outgoing ones / c): each model is put
  in a canonical gauge, every hidden unit's incoming row (bias included) of unit norm, layer after
  layer (``canonical``); two rescalings of one model have one canonical form;
- **permuting units** (conv channels included): the units of one model are matched to the other's by
  weight matching (Ainsworth et al., "Git Re-Basin", ICLR 2023): one linear assignment per hidden
  layer over its incoming and outgoing weights, swept until it settles. Both ends of the chain are
  fixed bases (raw inputs, through each model's own revealed mapping layer; the classes), so it anchors;
- **the shared start**: every honest miner starts from the task's public init, so the layers are
  compared as deltas from that init (seen in the reference's gauge and map), less the change every
  unit of the layer took alike (a watermark moves its host's mean filter): what honest models share
  by construction cancels.

Per layer the figure is the median over the reference's units of the cosine between the two deltas
of a unit's incoming weights. Medians, so that resetting, pruning or killing a minority of units
does not hide the majority kept; per layer, so that resetting and retraining one layer (any one)
leaves the others to speak. ``consensus.provenance`` holds the thresholds that
``benchmarks/provenance.py`` measures.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from dlbc_ray.models import sml
from dlbc_ray.models.disguise import layer_chain

SWEEPS = 2  # weight-matching passes: back from the classes, then forward again (more moved no figure in the benchmark)


@dataclass(frozen=True)
class Canon:
    """One model's layers in its canonical gauge, as (units, inputs, taps) blocks with the bias as one more
    input column, and the task's public init expressed in the same gauge (and the same mapping layer)."""

    layers: tuple[np.ndarray, ...]
    start: tuple[np.ndarray, ...]

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.layers) + sum(a.nbytes for a in self.start)


def blocks(weights: Mapping[str, np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each chain layer as (W as units x inputs x taps, bias); a Linear after a conv reads channels x positions."""
    chain = layer_chain(weights)
    out, width = [], None
    for name in chain:
        w, b = np.asarray(weights[f"{name}.weight"], np.float64), np.asarray(weights[f"{name}.bias"], np.float64)
        inputs = w.shape[1] if width is None or w.ndim > 2 else width
        out.append((w.reshape(w.shape[0], inputs, -1), b))
        width = w.shape[0]
    return out


def canonical(weights: Mapping[str, np.ndarray], init: Mapping[str, np.ndarray], first: str,
              q: np.ndarray | None = None, kind: sml.Kind = "dense") -> Canon:
    """``weights`` (trained behind the mapping ``q``, if any) and the shared ``init`` in ``weights``' gauge."""
    if q is not None:  # the first layer on raw inputs: every model's in one basis
        weights = sml.fold_into_first_layer(weights, first, q, kind)
        init = sml.fold_into_first_layer(init, first, q, kind)
    layers, start = [], []
    carry = None
    trained, shared = blocks(weights), blocks(init)
    for k, ((w, b), (w0, b0)) in enumerate(zip(trained, shared)):
        if carry is not None:
            w, w0 = w * carry[None, :, None], w0 * carry[None, :, None]
        row = np.concatenate([w.reshape(w.shape[0], -1), b[:, None]], axis=1)
        row0 = np.concatenate([w0.reshape(w0.shape[0], -1), b0[:, None]], axis=1)
        if k < len(trained) - 1:  # a hidden layer: unit-norm rows, the norm moves into the next layer's inputs
            carry = np.maximum(np.linalg.norm(row, axis=1), 1e-12)
            row, row0 = row / carry[:, None], row0 / carry[:, None]
        layers.append(_with_bias(row, w.shape))
        start.append(_with_bias(row0, w.shape))
    return Canon(tuple(a.astype(np.float32) for a in layers), tuple(a.astype(np.float32) for a in start))


def _with_bias(row: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """(units, inputs + 1, taps): the bias as one more input whose taps are (bias, 0, ...)."""
    units, inputs, taps = shape
    w = row[:, :-1].reshape(units, inputs, taps)
    bias = np.zeros((units, 1, taps))
    bias[:, 0, 0] = row[:, -1]
    return np.concatenate([w, bias], axis=1)


def match(ref: Canon, other: Canon, sweeps: int = SWEEPS) -> list[np.ndarray]:
    """Per hidden layer, which unit of ``other`` plays each unit of ``ref`` (weight matching)."""
    # scipy here, not at the top: every process that imports the validator module (the consensus actor too,
    # to deserialize validators' handles) would load scipy.optimize, 0.4 s of CPU, to match nothing
    from scipy.optimize import linear_sum_assignment

    a, b = ref.layers, other.layers
    perms = [np.arange(x.shape[0]) for x in a[:-1]]
    solved = None  # the layer assigned last: its neighbours have not moved since, so its assignment stands
    for sweep in range(sweeps):
        changed = False
        order = range(len(perms) - 1, -1, -1) if sweep % 2 == 0 else range(len(perms))
        for k in order:
            if k == solved:  # a sweep's first layer is the previous sweep's last: the same problem, the same answer
                continue
            cost = _incoming(a[k], b[k], perms[k - 1] if k else None) + _outgoing(a[k + 1], b[k + 1],
                                                                              perms[k + 1] if k + 1 < len(perms) else None)
            _, col = linear_sum_assignment(cost, maximize=True)
            changed |= not np.array_equal(col, perms[k])
            perms[k], solved = col, k
        if not changed and sweep:
            break
    return perms


def _incoming(a: np.ndarray, b: np.ndarray, prev: np.ndarray | None) -> np.ndarray:
    """Unit i of ``a`` against unit j of ``b`` by their incoming weights (``b``'s inputs put in ``a``'s order)."""
    if prev is not None:
        b = b[:, np.concatenate([prev, [b.shape[1] - 1]])]
    return a.reshape(a.shape[0], -1) @ b.reshape(b.shape[0], -1).T


def _outgoing(a: np.ndarray, b: np.ndarray, nxt: np.ndarray | None) -> np.ndarray:
    """The same by outgoing weights: the next layer's input slices (its units put in ``a``'s order)."""
    if nxt is not None:
        b = b[nxt]
    n = a.shape[1] - 1
    return np.tensordot(a[:, :n], b[:, :n], axes=([0, 2], [0, 2]))  # one BLAS product (einsum looped: 4x slower)


def aligned(other: Canon, perms: Sequence[np.ndarray]) -> list[np.ndarray]:
    """``other``'s layers with its units put in the reference's order."""
    out = []
    for k, w in enumerate(other.layers):
        if k < len(perms):
            w = w[perms[k]]
        if k:
            w = w[:, np.concatenate([perms[k - 1], [w.shape[1] - 1]])]
        out.append(w)
    return out


def layer_similarity(ref: Canon, other: Canon) -> tuple[float, ...]:
    """Per layer, the median over ``ref``'s units of the cosine between both models' deltas from the shared
    start (of each unit's incoming weights), after matching ``other``'s units to ``ref``'s."""
    if len(ref.layers) != len(other.layers) or any(x.shape != y.shape for x, y in zip(ref.layers, other.layers)):
        return ()
    out = []
    for w_ref, w_other, w0 in zip(ref.layers, aligned(other, match(ref, other)), ref.start):
        d_ref, d_other = _centred(w_ref - w0), _centred(w_other - w0)
        norms = np.linalg.norm(d_ref, axis=1) * np.linalg.norm(d_other, axis=1)
        cos = np.einsum("ij,ij->i", d_ref, d_other) / np.maximum(norms, 1e-12)
        out.append(float(np.median(cos)))
    return tuple(out)


def _centred(delta: np.ndarray) -> np.ndarray:
    """Each unit's delta less the mean over the layer's units: a change every unit took alike (a watermark
    regularizer moves the mean filter of its host) says nothing of which model a unit came from."""
    flat = delta.reshape(delta.shape[0], -1)
    return flat - flat.mean(0)
