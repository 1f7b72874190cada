from __future__ import annotations

import pytest

from dlbc_ray.consensus import Event, Phase, next_phase
from dlbc_ray.errors import ConsensusError

HAPPY = [Event.START, Event.SUBMISSIONS_CLOSED, Event.REVEALS_CLOSED, Event.VOTES_CLOSED, Event.FUSION_CLOSED,
         Event.BLOCK_COMMITTED]


def test_happy_path_reaches_committed() -> None:
    phase = Phase.OPEN
    for event in HAPPY:
        phase = next_phase(phase, event)
    assert phase is Phase.COMMITTED and phase.is_terminal()


def test_a_refuted_pole_claim_reopens_collecting_and_the_round_can_still_commit() -> None:
    phase = Phase.OPEN
    for event in [Event.START, Event.SUBMISSIONS_CLOSED, Event.REVEALS_CLOSED, Event.CLAIMS_REFUTED, *HAPPY[1:]]:
        phase = next_phase(phase, event)
    assert phase is Phase.COMMITTED


@pytest.mark.parametrize("phase", [p for p in Phase if not p.is_terminal()])
def test_every_live_phase_can_fail(phase: Phase) -> None:
    assert next_phase(phase, Event.FAIL) is Phase.FAILED


@pytest.mark.parametrize(("phase", "event"), [(Phase.OPEN, Event.VOTES_CLOSED), (Phase.COMMITTED, Event.FAIL),
                                              (Phase.COLLECTING, Event.BLOCK_COMMITTED), (Phase.FAILED, Event.START),
                                              (Phase.FUSING, Event.CLAIMS_REFUTED)])
def test_illegal_transitions_are_errors(phase: Phase, event: Event) -> None:
    with pytest.raises(ConsensusError):
        next_phase(phase, event)
