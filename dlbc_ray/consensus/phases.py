"""A round's phases as data: one pure transition function, no scattered flags (Psyche)."""

from __future__ import annotations

from enum import Enum

from dlbc_ray.errors import ConsensusError


class Phase(str, Enum):
    OPEN = "open"
    COLLECTING = "collecting"  # miners train and submit signed commitments
    REVEALING = "revealing"  # submission window closed; miners reveal their mapping seeds
    VALIDATING = "validating"  # validators verify, score and sign votes
    FUSING = "fusing"  # BaaS: validators fuse the accepted models and score the fusion
    DECIDING = "deciding"  # quorum, median scores, winner, block proposal
    COMMITTED = "committed"
    FAILED = "failed"

    def is_terminal(self) -> bool:
        return self in (Phase.COMMITTED, Phase.FAILED)


class Event(str, Enum):
    START = "start"
    SUBMISSIONS_CLOSED = "submissions_closed"
    REVEALS_CLOSED = "reveals_closed"
    VOTES_CLOSED = "votes_closed"
    FUSION_CLOSED = "fusion_closed"
    CLAIMS_REFUTED = "claims_refuted"  # PoLe: no claim of the target was confirmed; the window reopens
    BLOCK_COMMITTED = "block_committed"
    FAIL = "fail"


_TRANSITIONS: dict[tuple[Phase, Event], Phase] = {
    (Phase.OPEN, Event.START): Phase.COLLECTING,
    (Phase.COLLECTING, Event.SUBMISSIONS_CLOSED): Phase.REVEALING,
    (Phase.REVEALING, Event.REVEALS_CLOSED): Phase.VALIDATING,
    (Phase.VALIDATING, Event.VOTES_CLOSED): Phase.FUSING,
    (Phase.VALIDATING, Event.CLAIMS_REFUTED): Phase.COLLECTING,
    (Phase.FUSING, Event.FUSION_CLOSED): Phase.DECIDING,
    (Phase.DECIDING, Event.BLOCK_COMMITTED): Phase.COMMITTED,
}


def next_phase(phase: Phase, event: Event) -> Phase:
    """The phase after ``event``; any live phase may fail; anything else is a bug in the caller."""
    if event is Event.FAIL and not phase.is_terminal():
        return Phase.FAILED
    try:
        return _TRANSITIONS[(phase, event)]
    except KeyError:
        raise ConsensusError(f"event {event.value} is not allowed in phase {phase.value}", reason="phase") from None
