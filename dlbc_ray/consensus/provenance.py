"""Provenance rule: when a submission's function or weights say it was derived from an earlier or a rival model.

Three figures per pair come from ``models.fingerprint`` and ``models.alignment``:

- per hidden layer, how much better than chance one model's units find a match among the other's
  (activations on the probes; 0 chance, 1 the same units);
- the share of probes on which both predict the same label;
- per layer, the median over units of how much of their learned weights (the change from the task's
  shared init, after undoing permutations and rescaling) the two share.

A pair is one model when ANY figure passes its threshold: a thief can reset and retrain one layer,
but then the others keep what it took. Thresholds are per net and layer, set above everything
``benchmarks/provenance.py`` measures for independently trained honest models (every miner starts
from the same public init; 10 miners, 2, 5 and 10 epochs) and below the disguises it is claimed to
catch; a net, or a width, that was not measured gets cautious defaults.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from dlbc_ray.schema import Verdict

UNIT_THRESHOLD = 0.80  # activations, the default per hidden layer
AGREEMENT_THRESHOLD = 0.98
WEIGHT_THRESHOLD = 0.90  # weights, the default per layer (a 3-tap first conv of honest models shares up to 0.94)


@dataclass(frozen=True)
class Thresholds:
    """Per hidden layer (activations) and per layer (weights), in forward order; () where not measured."""

    units: tuple[float, ...] = ()
    weights: tuple[float, ...] = ()
    agreement: float = AGREEMENT_THRESHOLD


# Built-in nets at their default parameters, from benchmarks/provenance.py (10 honest miners: 135 pairs over
# 2, 5 and 10 epochs). Honest maxima, weights: mlp .55 .28 .66; cnn .85 .51 .52 .66; cnn1d .93 .52 .36 .73;
# units: mlp .37 .64; cnn .58 .42 .64; cnn1d .85 .55 .72. A first conv of a few taps on one input channel is
# learned alike by every honest miner (same init, same data): never judged by its weights (NEVER).
NEVER = 1.01
MEASURED: Mapping[str, Thresholds] = MappingProxyType({
    "mlp": Thresholds(units=(0.80, 0.80), weights=(0.75, 0.55, 0.76)),
    "cnn": Thresholds(units=(0.80, 0.80, 0.80), weights=(NEVER, 0.62, 0.62, 0.78)),
    "cnn1d": Thresholds(units=(0.95, 0.80, 0.85), weights=(NEVER, 0.65, 0.50, 0.85)),
})


def get_thresholds(model: str) -> Thresholds:
    """``model``'s measured thresholds ("" or an unmeasured net: the defaults)."""
    return MEASURED.get(model, Thresholds())


def compute_derived_reason(units: Sequence[float], agreement: float, weights: Sequence[float] = (), *,
                           model: str = "", unit_threshold: float | None = None,
                           agreement_threshold: float | None = None) -> str | None:
    """Why the pair is one model (the first figure past its threshold), or None."""
    t = get_thresholds(model)
    unit_ts = _per_layer(t.units, len(units), UNIT_THRESHOLD if unit_threshold is None else unit_threshold,
                         override=unit_threshold is not None)
    for k, (u, threshold) in enumerate(zip(units, unit_ts)):
        if u >= threshold:
            return f"hidden layer {k} matches {u:.2f} above chance"
    if agreement >= (t.agreement if agreement_threshold is None else agreement_threshold):
        return f"predicts the same label on {agreement:.1%} of the probes"
    for k, (share, threshold) in enumerate(zip(weights, _per_layer(t.weights, len(weights), WEIGHT_THRESHOLD))):
        if share >= threshold:
            return f"layer {k} keeps its learned weights ({share:.2f} shared, honest models below {threshold:.2f})"
    return None


def _per_layer(measured: tuple[float, ...], layers: int, default: float, *, override: bool = False) -> tuple[float, ...]:
    """The measured thresholds when they are for this many layers, else ``default`` for each."""
    return measured if len(measured) == layers and not override else (default,) * layers


def check_derived(matches: Iterable[tuple[str, Sequence[float], float, Sequence[float]]], *,
                  model: str = "") -> tuple[Verdict, str] | None:
    """``derived`` when the submission computes what one of the named models computes, or keeps a layer of it.

    ``matches``: per earlier model (a name for the detail line), the unit match above chance per hidden
    layer, the label agreement on the probes, and the weight sharing per layer; ``model``: the net whose
    measured thresholds apply ("" for the defaults). Read in order, up to the first with a reason (so a lazy
    iterable computes no more than that: ``actors.lineage.lazily``).
    """
    for name, units, agreement, weights in matches:
        reason = compute_derived_reason(units, agreement, weights, model=model)
        if reason is not None:
            return Verdict.DERIVED, f"derived from {name}: {reason}"
    return None
