"""What a thief does to a model it took: function-preserving disguises of a registry net's weights.

Every registry net is a chain of Linear/Conv layers with ReLU (and 2x max-pools, which
commute with both moves) between them, so for every hidden unit (a row of one layer
and the matching input slice of the next) two moves leave the function unchanged:
permuting the units, and scaling a unit's incoming weights and bias by c > 0 while its
outgoing weights take 1/c (ReLU is positively homogeneous). Together they scramble
every weight-space fingerprint (hashes, layer distances, Uchida marks) at no cost.

Used by the adversary (``actors/adversary.py``) and by the provenance detector's tests
and benchmark, so that what the detector is measured against is what the attack sends.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from dlbc_ray.models import sml, watermark
from dlbc_ray.models.data import Split
from dlbc_ray.models.nets import build_net, net_info
from dlbc_ray.models.protect import mapping_layer
from dlbc_ray.models.weights import to_numpy

Weights = dict[str, np.ndarray]
_LAYER = re.compile(r"^(conv|fc)\.(\d+)\.weight$")


def layer_chain(weights: Mapping[str, np.ndarray]) -> list[str]:
    """The layers of a registry net in forward order ("conv.0", ..., "fc.0", ...), read from its keys."""
    found = [(m.group(1) != "conv", int(m.group(2)), f"{m.group(1)}.{m.group(2)}")
             for m in (_LAYER.match(k) for k in weights) if m]
    return [name for *_, name in sorted(found)]


def permute_and_rescale(weights: Mapping[str, np.ndarray], rng: np.random.Generator, *,
                        spread: float = 4.0) -> Weights:
    """Every hidden unit permuted and rescaled by a log-uniform c in [1/spread, spread]; same function."""
    out = {k: np.array(v, copy=True) for k, v in weights.items()}
    chain = layer_chain(out)
    for layer, after in zip(chain, chain[1:]):
        w, b, nxt = out[f"{layer}.weight"], out[f"{layer}.bias"], out[f"{after}.weight"]
        n = w.shape[0]
        order = rng.permutation(n)
        c = np.exp(rng.uniform(-np.log(spread), np.log(spread), n)).astype(np.float32)
        scale_in = c.reshape(-1, *([1] * (w.ndim - 1)))
        out[f"{layer}.weight"], out[f"{layer}.bias"] = w[order] * scale_in, b[order] * c
        # the next layer reads these units along its axis 1 (a Linear after a conv: blocks of positions)
        grouped = nxt.reshape(nxt.shape[0], n, -1)[:, order] / c[None, :, None]
        out[f"{after}.weight"] = grouped.reshape(nxt.shape).astype(nxt.dtype)
    return out


def add_noise(weights: Mapping[str, np.ndarray], rng: np.random.Generator, relative: float = 0.01) -> Weights:
    """Gaussian noise of ``relative`` times each tensor's standard deviation."""
    return {k: (v + rng.standard_normal(v.shape).astype(v.dtype) * np.float32(relative * float(v.std())))
            if np.issubdtype(v.dtype, np.floating) else v for k, v in weights.items()}


def reset_layer(weights: Mapping[str, np.ndarray], model: str, params: Mapping[str, object],
                input_shape: tuple[int, ...], n_classes: int, layer: str, seed: int) -> Weights:
    """``layer`` (a state_dict prefix such as "fc.1") re-initialised from a fresh net of ``seed``."""
    fresh = to_numpy(build_net(model, params, input_shape, n_classes, seed=seed))
    return {**weights, **{k: fresh[k] for k in fresh if k.startswith(f"{layer}.")}}


def host_prefix(model: str) -> str:
    """The layer that hosts ``model``'s watermark ("fc.1", "conv.1"): what a partial reuse resets."""
    return net_info(model).watermark_layer.rsplit(".", 1)[0]


def remap(weights: Mapping[str, np.ndarray], model: str, input_shape: tuple[int, ...], old_seed: bytes,
          new_seed: bytes) -> Weights:
    """Weights trained behind ``old_seed``'s mapping layer, re-expressed behind ``new_seed``'s (W Q_old Q_new^T):
    what anyone can do once a seed is revealed or a model delivered."""
    first = net_info(model).first_layer
    q_old, kind = mapping_layer(old_seed, weights, model, input_shape)
    q_new, _ = mapping_layer(new_seed, weights, model, input_shape)
    raw = sml.fold_into_first_layer(weights, first, q_old, kind)
    return sml.fold_into_first_layer(raw, first, np.ascontiguousarray(q_new.T), kind)


def embed_mark(weights: Mapping[str, np.ndarray], key: watermark.WatermarkKey, margin: float) -> Weights:
    """``key``'s bits written into the host with the least change (every bit ``margin`` past 0): the
    smallest move, so the function barely changes. Linear algebra, no training: w' X = t exactly."""
    host = np.asarray(weights[key.layer], dtype=np.float64)
    w = np.asarray(watermark.filter_mean(host), dtype=np.float64)
    signs = np.where(key.bits == 1, 1.0, -1.0)
    proj = w @ key.x
    target = signs * np.maximum(signs * proj, margin)
    x = key.x.astype(np.float64)
    delta = x @ np.linalg.solve(x.T @ x, target - proj)  # least-norm delta with delta X = target - w X (T <= M/2)
    return {**weights, key.layer: (host + _spread(delta, host.shape)).astype(np.float32)}


def _spread(delta: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A change of the filter mean as a change of the host: each averaged filter (or row block) moves by it."""
    out = np.zeros(shape)
    if len(shape) > 2 or watermark.host_size(shape) != int(np.prod(shape)):  # conv, or a Linear of row blocks
        inner = int(np.prod(shape[1:]))
        groups = delta.size // inner
        rows = shape[0] // groups * groups
        block = out[:rows].reshape(groups, rows // groups, inner)
        block += delta.reshape(groups, 1, inner)
        out[:rows] = block.reshape(rows, *shape[1:])
        return out
    return delta.reshape(shape)


def prune(weights: Mapping[str, np.ndarray], fraction: float) -> Weights:
    """Magnitude pruning: the smallest ``fraction`` of each layer's weights set to 0 (biases kept)."""
    out = dict(weights)
    for layer in layer_chain(weights):
        w = np.asarray(weights[f"{layer}.weight"])
        cut = np.quantile(np.abs(w), fraction)
        out[f"{layer}.weight"] = np.where(np.abs(w) < cut, 0.0, w).astype(w.dtype)
    return out


def kill_units(weights: Mapping[str, np.ndarray], rng: np.random.Generator, fraction: float) -> Weights:
    """A ``fraction`` of every hidden layer's units turned into dead ones: fresh random incoming weights (so they
    look alive to a weight comparison) and no outgoing weight (so the function loses only what they carried).
    What "widening with dead units" becomes when the task fixes the architecture."""
    out = {k: np.array(v, copy=True) for k, v in weights.items()}
    chain = layer_chain(out)
    for layer, after in zip(chain, chain[1:]):
        w, nxt = out[f"{layer}.weight"], out[f"{after}.weight"]
        n = w.shape[0]
        dead = rng.choice(n, size=int(round(fraction * n)), replace=False)
        w[dead] = rng.standard_normal(w[dead].shape).astype(w.dtype) * np.float32(w.std())
        grouped = nxt.reshape(nxt.shape[0], n, -1)
        grouped[:, dead] = 0.0
        out[f"{after}.weight"] = grouped.reshape(nxt.shape)
    return out


def teacher_labels(net: Any, weights: Mapping[str, np.ndarray], seed: bytes | None, model: str,
                   input_shape: tuple[int, ...], data: Split) -> Split:
    """``data``'s inputs labelled by what ``weights`` (in ``net``) predict through their own mapping layer
    (``seed``): a distiller's training data, which keeps the inputs, so the task's data order still applies,
    but not the labels."""
    from dlbc_ray.models.evaluate import predict

    x = data.x
    if seed is not None:
        q, kind = mapping_layer(seed, weights, model, input_shape)
        x = sml.map_inputs(x, q, kind)
    return Split(x=data.x, y=predict(net, weights, x).astype(data.y.dtype))
