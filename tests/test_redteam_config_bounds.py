"""Consensus parameters that would switch a defense off are refused where they are configured (issue 10).

A transcript audit passes a replay within ``AuditParams.tolerance`` of its checkpoint: an infinite or
NaN tolerance (or one past any relative distance worth the name) passed every replay, whatever the
miner trained.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from dlbc_ray.config import ProtectionConfig
from dlbc_ray.consensus.transcript import AuditParams


@pytest.mark.parametrize("tolerance", [float("inf"), float("nan"), -float("inf"), 1.5, 1e300, -1e-9])
def test_a_tolerance_that_passes_every_replay_is_refused(tolerance: float) -> None:
    with pytest.raises(ValidationError, match="tolerance"):
        AuditParams(tolerance=tolerance)
    with pytest.raises(ValidationError, match="tolerance"):
        ProtectionConfig.model_validate({"transcript": {"tolerance": tolerance}})


@given(st.floats(min_value=0.0, max_value=1.0, allow_nan=False))
def test_every_relative_tolerance_in_0_1_is_accepted(tolerance: float) -> None:
    assert AuditParams(tolerance=tolerance).tolerance == tolerance
