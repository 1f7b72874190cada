"""Where a validator finds the models that won earlier blocks, so its provenance references survive a restart.

A validator remembers the valid models it judged (``fingerprint.ReferenceSet``), in memory. One that
restarts, or joins later, would forget every earlier winner; a thief could then sell a disguised copy
of one. The winners are on chain, though: each block names its winner's model hash, and the delivered
weights are kept in the ledger's artifact store under that hash, with the winner's revealed mapping
seed. A ``WinnerSource`` reads them back by hash. The validator asks only for hashes the chain says
won (``won_models``) and checks the weights hash to that name, so nobody can plant a reference.

Two sources: ``StoreWinners`` reads an artifact folder this process can see (a one-node network, the
CLI), ``LedgerWinners`` asks the ledger actor (any node).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from dlbc_ray.crypto import hash_weights
from dlbc_ray.errors import DLBCError

Winner = tuple[dict[str, np.ndarray], dict[str, str]]  # weights as submitted, the artifact's metadata


class WinnerSource(Protocol):
    def __call__(self, model_hash: str) -> Winner | None:
        """The weights stored under ``model_hash`` and their metadata, or None where there are none;
        a ``DLBCError`` when the store cannot be asked now (asked again next round)."""


@dataclass(frozen=True)
class StoreWinners:
    """An artifact folder (``<home>/artifacts``) read in place."""

    root: str

    def __call__(self, model_hash: str) -> Winner | None:
        from dlbc_ray.ledger.artifacts import ArtifactStore

        store = ArtifactStore(Path(self.root))
        if not store.has(model_hash):
            return None
        try:
            return store.get(model_hash), store.metadata(model_hash)
        except DLBCError:  # a damaged or altered file is no reference
            return None


@dataclass(frozen=True)
class LedgerWinners:
    """The ledger actor's artifact store, through its ``artifact(model_hash)`` method."""

    ledger: Any
    timeout_s: float = 30.0

    def __call__(self, model_hash: str) -> Winner | None:
        from dlbc_ray.actors._ray import get

        found = get(self.ledger.artifact.remote(model_hash), timeout=self.timeout_s, what="winner artifact")
        return found if isinstance(found, tuple) and len(found) == 2 else None


def checked(found: Winner | None, model_hash: str) -> Winner | None:
    """``found`` only when its weights hash to ``model_hash`` (a source is trusted for nothing)."""
    if found is None or not isinstance(found[0], dict):
        return None
    try:
        return found if hash_weights(found[0]) == model_hash else None
    except (DLBCError, TypeError, ValueError):
        return None
