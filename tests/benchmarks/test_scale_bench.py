"""benchmarks/scale.py's arithmetic: growth exponents, per-unit costs and the projection (no Ray here)."""

from __future__ import annotations

import math

import pytest

from benchmarks.scale import PARTS, exponent, plot, projection, summarize


def rows(m: int, v: int, per_mv: float = 0.5, per_m: float = 2.0) -> list[dict[str, float]]:
    """Three rounds whose parts cost exactly per_m * M or per_mv * M * V ms (unit as PARTS says), +-10%."""
    base = {p: (per_m * m if unit == "M" else per_mv * m * v) for p, (_, unit) in PARTS.items()}
    return [{p: c * f for p, c in base.items()} for f in (0.9, 1.0, 1.1)]


def test_exponent_recovers_a_power_law() -> None:
    assert exponent([(u, 3.0 * u**1.5) for u in (16, 64, 256)]) == pytest.approx(1.5)
    assert exponent([(u, 7.0) for u in (16, 64)]) == pytest.approx(0.0, abs=1e-12)


def test_exponent_needs_two_distinct_sizes_and_ignores_zero_costs() -> None:
    assert math.isnan(exponent([(16, 1.0), (16, 2.0)]))
    assert math.isnan(exponent([(16, 1.0), (64, 0.0)]))


def test_summary_gives_medians_spread_exponents_and_per_unit_costs() -> None:
    grid = {(4, 4): rows(4, 4), (16, 4): rows(16, 4), (4, 16): rows(4, 16)}
    parts = summarize(grid)
    votes, transfer = parts["votes"], parts["transfer"]
    assert votes["cells"]["16x4"] == {"median_ms": 32.0, "min_ms": pytest.approx(28.8), "max_ms": pytest.approx(35.2),
                                      "n": 3}
    assert votes["exponent_mv"] == pytest.approx(1.0) and votes["per_unit_ms"] == pytest.approx(0.5)
    assert transfer["per_unit_ms"] == pytest.approx(2.0)
    assert transfer["exponent_m"] == pytest.approx(1.0) and transfer["exponent_v"] == pytest.approx(0.0, abs=1e-12)
    assert votes["exponent_m"] == pytest.approx(1.0) and votes["exponent_v"] == pytest.approx(1.0)
    # per-M parts at equal M x V (16x4 and 4x16) differ: the fit against M x V sees it as spread, not growth > 1
    assert transfer["exponent_mv"] < 1.0


def test_projection_scales_per_unit_costs_linearly() -> None:
    parts = summarize({(4, 4): rows(4, 4), (16, 4): rows(16, 4)})
    marks = {"per_n": {4: {"loop_ms": 40.0, "ring_ms": 8.0}, 64: {"loop_ms": 640.0, "ring_ms": 64.0}}}
    p = projection(parts, marks, m=1000, v=100, candidates=16)
    per_m = sum(parts[k]["per_unit_ms"] for k in ("transfer", "checks"))
    assert p["validator_s"] == pytest.approx(1000 * per_m / 1e3)
    assert p["coordinator_s"] == pytest.approx(1000 * 100 * 3 * 0.5 / 1e3)  # votes, decision+block, ledger
    assert p["validator_marks_all_registered_s"] == pytest.approx(1000 * 1000 * 10.0 / 1e3)
    assert p["validator_marks_ring_candidates_s"] == pytest.approx(1000 * 16 * 1.0 / 1e3)


def test_plot_writes_a_png(tmp_path) -> None:
    grid = {(4, 4): rows(4, 4), (16, 4): rows(16, 4), (4, 16): rows(4, 16)}
    path = plot(grid, tmp_path / "scale.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
