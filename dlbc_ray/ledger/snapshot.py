"""State checkpoints: the ChainState after a height, encoded as JSON and named by its SHA-256.

A restart loads the newest checkpoint whose hash and head still match and replays only
the blocks after it; ``chain verify`` recomputes every checkpoint from genesis and
compares, so a checkpoint is never trusted by a full verification.
"""

from __future__ import annotations

import hashlib
from functools import cache

from pydantic import TypeAdapter, ValidationError

from dlbc_ray.consensus import ChainState
from dlbc_ray.errors import CorruptLedger
from dlbc_ray.ledger.store import Checkpoint, StoredBlock

CHECKPOINT_EVERY = 500  # blocks; a restart replays at most this many


@cache
def _adapter() -> TypeAdapter[ChainState]:
    return TypeAdapter(ChainState)


def is_checkpoint_height(height: int) -> bool:
    return height > 0 and height % CHECKPOINT_EVERY == 0


def make_checkpoint(state: ChainState) -> Checkpoint:
    data = _adapter().dump_json(state)
    return Checkpoint(state.height, state.head_hash, hashlib.sha256(data).hexdigest(), data)


def load_checkpoint(checkpoint: Checkpoint, row: StoredBlock | None) -> ChainState:
    """Decode a checkpoint after checking its hash, and that it names the stored block at its height."""
    h = checkpoint.height
    if hashlib.sha256(checkpoint.state).hexdigest() != checkpoint.state_hash:
        raise CorruptLedger(f"checkpoint {h}: stored state does not hash to its recorded hash",
                            reason="checkpoint", height=h)
    if row is None or row.hash != checkpoint.head_hash:
        raise CorruptLedger(f"checkpoint {h}: it is not the state after the stored block {h}",
                            reason="checkpoint", height=h)
    try:
        state = _adapter().validate_json(checkpoint.state)
    except (ValidationError, ValueError) as e:
        raise CorruptLedger(f"checkpoint {h}: stored state does not parse ({e})"[:300],
                            reason="checkpoint", height=h) from None
    if (state.height, state.head_hash) != (h, checkpoint.head_hash):
        raise CorruptLedger(f"checkpoint {h}: the state inside is for another height", reason="checkpoint", height=h)
    return state
