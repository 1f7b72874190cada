"""Provenance rule: when a submission's function says it was derived from an earlier or a rival model.

The figures come from ``models.fingerprint``: per hidden layer, how much better than chance
one model's units find a match among the other's (0 chance, 1 the same units), and the share
of probes on which both predict the same label. The thresholds sit between what
``benchmarks/provenance.py`` measures for independently trained honest models (unit excess
at most 0.73, agreement at most 0.8) and for disguised copies (0.87 and up).
"""

from __future__ import annotations

from collections.abc import Sequence

UNIT_THRESHOLD = 0.80
AGREEMENT_THRESHOLD = 0.98


def compute_derived_reason(units: Sequence[float], agreement: float, *, unit_threshold: float = UNIT_THRESHOLD,
                           agreement_threshold: float = AGREEMENT_THRESHOLD) -> str | None:
    """Why the pair is one model (the first figure past its threshold), or None."""
    best = max(range(len(units)), key=lambda k: units[k], default=None)
    if best is not None and units[best] >= unit_threshold:
        return f"hidden layer {best} matches {units[best]:.2f} above chance"
    if agreement >= agreement_threshold:
        return f"predicts the same label on {agreement:.1%} of the probes"
    return None
