"""benchmarks/scale.py's arithmetic: growth exponents, the cost model per term and the projection (no Ray here)."""

from __future__ import annotations

import math

import pytest

from benchmarks.scale import PARTS, TERMS, exponent, fit, plot, projection, summarize

# ms per unit of each term, as a part's terms name them: what the synthetic rounds below cost
TRUE = {"1": 3.0, "M": 2.0, "M2": 0.25, "sig": 0.4, "vote": 0.01}
CORES = 2


def cost(part: str, m: int, v: int) -> float:
    _, payer, terms = PARTS[part]
    own = sum(TRUE[t] * TERMS[t](m, v) for t in terms)
    return own * max(1.0, v / CORES) if payer == "validator" else own  # validators share CORES here


def rows(m: int, v: int) -> list[dict[str, float]]:
    """Three rounds whose parts cost exactly what TRUE says, +-10%."""
    base = {p: cost(p, m, v) for p in PARTS}
    return [{p: c * f for p, c in base.items()} for f in (0.9, 1.0, 1.1)]


GRID = {(4, 4): rows(4, 4), (16, 4): rows(16, 4), (4, 16): rows(4, 16), (64, 16): rows(64, 16)}


def test_exponent_recovers_a_power_law() -> None:
    assert exponent([(u, 3.0 * u**1.5) for u in (16, 64, 256)]) == pytest.approx(1.5)
    assert exponent([(u, 7.0) for u in (16, 64)]) == pytest.approx(0.0, abs=1e-12)


def test_exponent_needs_two_distinct_sizes_and_ignores_zero_costs() -> None:
    assert math.isnan(exponent([(16, 1.0), (16, 2.0)]))
    assert math.isnan(exponent([(16, 1.0), (64, 0.0)]))


def test_fit_recovers_the_cost_of_each_term() -> None:
    costs = {(m, v): 0.4 * (m + v) + 0.01 * m * v for m, v in GRID}
    assert fit(costs, ("sig", "vote")) == pytest.approx({"sig": 0.4, "vote": 0.01})
    assert fit({(4, 4): 8.0, (16, 4): 32.0}, ("M",)) == pytest.approx({"M": 2.0})


def test_fit_never_gives_a_negative_cost_and_skips_empty_points() -> None:
    got = fit({(4, 4): 10.0, (16, 4): 10.0, (4, 16): 10.0, (8, 8): 0.0}, ("sig", "vote"))
    assert all(c >= 0 for c in got.values()) and got["sig"] > 0
    assert fit({(4, 4): 0.0}, ("sig", "vote")) == {"sig": 0.0, "vote": 0.0}


def test_summary_gives_medians_spread_exponents_and_the_fitted_terms() -> None:
    parts = summarize(GRID, CORES)
    checks, signatures = parts["checks"], parts["signature checks"]
    assert signatures["cells"]["16x4"] == {"median_ms": pytest.approx(cost("signature checks", 16, 4)),
                                           "min_ms": pytest.approx(0.9 * cost("signature checks", 16, 4)),
                                           "max_ms": pytest.approx(1.1 * cost("signature checks", 16, 4)), "n": 3}
    assert signatures["coef_ms"] == pytest.approx({"sig": 0.4, "vote": 0.01})
    assert checks["coef_ms"] == pytest.approx({"M": 2.0, "M2": 0.25})  # with the sharing of cores undone
    assert parts["ballot signing"]["coef_ms"] == pytest.approx({"1": 3.0, "M": 2.0})
    assert parts["transfer"]["payer"] == "validator" and signatures["payer"] == "coordinator"
    assert parts["transfer"]["exponent_v"] == pytest.approx(1.0)  # the shared cores: wall grows with V here


def test_projection_prices_signatures_per_ballot_and_votes_per_line() -> None:
    parts = summarize(GRID, CORES)
    marks = {"host_m": 8192, "bits_t": 256, "per_n": {4: {"all_ms": 4.0}, 64: {"all_ms": 64.0}}}
    ballots = {16: {"verify_ms": 0.1, "bytes": 1600}, 1000: {"verify_ms": 2.0, "bytes": 100_000}}
    p = projection(parts, marks, ballots, m=1000, v=100)
    for part in ("signature checks", "decision+block", "ledger import"):
        assert p["coordinator_s"][part] == pytest.approx((0.4 * 1100 + 0.01 * 100_000) / 1e3)
    assert p["coordinator_s"]["scheduling"] == pytest.approx(2.0)
    assert p["validator_s"]["checks"] == pytest.approx((2.0 * 1000 + 0.25 * 1000 * 999 / 2) / 1e3)
    assert p["validator_s"]["marks"] == pytest.approx(1000 * 1000 * 1.0 / 1e3)  # every submitter's key, 1 ms each
    assert p["coordinator_load"]["signatures_checked"] == 2 * 1100 and p["coordinator_load"]["vote_lines"] == 100_000
    assert p["coordinator_load"]["block_mib"] == pytest.approx(100 * 100_000 / 2**20)
    assert p["first_bottleneck"] == "validator: marks"


def test_plot_writes_a_png(tmp_path) -> None:
    path = plot(GRID, tmp_path / "scale.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_checks_report_prints_each_ballot_size_and_the_pair_costs(capsys) -> None:
    from benchmarks._scale_report import print_checks

    print_checks({"ballot_marks": {"per_s": {4: {"one_by_one_ms": 2.7, "batched_ms": 2.2, "ring_mib": 32.0},
                                             64: {"one_by_one_ms": 130.0, "batched_ms": 12.0, "ring_mib": 512.0}},
                                   "one_by_one_exponent": 1.4, "batched_exponent": 0.6},
                  "pairs": {"cheap_ms": 0.29, "weights_ms": 0.82}})
    out = capsys.readouterr().out
    assert "S= 64: before   130.00 ms   now    12.00 ms" in out and "weight matching 0.82 ms" in out


def test_a_ballots_mark_reads_are_measured_both_ways() -> None:
    from benchmarks._scale_units import ballot_marks

    got = ballot_marks([2, 4], repeats=1)
    assert set(got["per_s"]) == {2, 4} and all(r["batched_ms"] > 0 and r["one_by_one_ms"] > 0
                                               for r in got["per_s"].values())
    assert got["per_s"][4]["ring_mib"] == 2 * got["per_s"][2]["ring_mib"]


def test_projection_prices_marks_as_read_now_when_a_ballot_was_measured() -> None:
    parts = summarize(GRID, CORES)
    marks = {"host_m": 8192, "bits_t": 256, "per_n": {4: {"all_ms": 4.0}, 64: {"all_ms": 64.0}}}
    ballots = {16: {"verify_ms": 0.1, "bytes": 1600}, 1000: {"verify_ms": 2.0, "bytes": 100_000}}
    checks = {"ballot_marks": {"per_s": {"4": {"batched_ms": 1.0}, "64": {"batched_ms": 3.2}}}}  # as JSON keys them
    p = projection(parts, marks, ballots, m=1000, v=100, checks=checks)
    assert p["validator_s"]["marks"] == pytest.approx(1000 * 1000 * (3.2 / 64) / 1e3)  # 0.05 ms per key, not 1
