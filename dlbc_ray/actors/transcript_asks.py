"""What a round hands its validators to audit training transcripts, without torch in the coordinator.

``RoundAudits`` is ``models.replay.TranscriptAudits`` as the coordinator sends it (the
training split still an object ref); ``TranscriptAsk`` is one commit's way to ask its
miner for a transcript opening, run in the validator through the one Ray boundary.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dlbc_ray.actors._ray import get_retrying
from dlbc_ray.schema import Signed
from dlbc_ray.schema.round_messages import WindowClose


@dataclass(frozen=True)
class RoundAudits:
    """models.replay.TranscriptAudits as the coordinator sends it: the training split still a ref (the
    validator resolves it) and nothing that imports torch or Lightning in the coordinator."""

    train: Any
    policy: Mapping[str, object]
    openers: Mapping[str, tuple[str, Any]]


@dataclass(frozen=True)
class TranscriptAsk:
    """``ask(index)`` for one commit's audit, run in the validator: the miner's ``transcript_opening``
    against the proposer's close, through the one Ray boundary."""

    handle: Any
    name: str
    close: Signed[WindowClose]
    commit: str
    timeout_s: float

    def __call__(self, index: int) -> Any:
        """An opening is a read, safe to repeat: a reply lost once is asked again (within the timeout) before
        an honest miner could be voted ``bad_transcript`` for it."""
        return get_retrying(lambda: self.handle.transcript_opening.remote(self.close, self.commit, index),
                            timeout=self.timeout_s, what=f"miner {self.name}'s transcript", patience_s=self.timeout_s)
