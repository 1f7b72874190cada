"""The ledger actor: owns the chain on disk; validates every block before it persists it.

Named and detached on a cluster, ``max_restarts=-1``: a restart reruns ``__init__``,
which loads the newest state checkpoint and replays the blocks after it, so no
committed block is ever lost and a restart takes about as long at 10,000 blocks as at
100. Full re-validation from genesis is ``dlbc-ray chain verify``.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from dlbc_ray.consensus import ChainState, compute_block_hash
from dlbc_ray.errors import ConfigError, DLBCError, InvalidBlock, InvalidMessage
from dlbc_ray.ledger import ArtifactStore, BlockImportResult, Chain
from dlbc_ray.schema import Block, ChainParams
from dlbc_ray.schema.base import revalidated


class Ledger:
    """A thin shell over ``Chain``: every method unpacks, calls, returns data."""

    def __init__(self, path: str, *, genesis: Block | None = None) -> None:
        self.chain = Chain.open(path, verify=False)
        if self.chain.is_empty:  # no file yet (created whole with genesis), or one whose creation was cut short
            if genesis is None:
                raise ConfigError(f"ledger {path} is empty and no genesis block was given", reason="no_genesis")
            self.chain.import_block(genesis)
        self.artifacts = ArtifactStore(Path(path).parent / "artifacts")

    def head(self) -> dict[str, Any]:
        header = self.chain.head
        return {"height": header.height, "hash": compute_block_hash(header), "timestamp_ms": header.timestamp_ms,
                "chain_id": header.chain_id}

    def params(self) -> ChainParams:
        return self.chain.state.params

    def snapshot(self) -> ChainState:
        return self.chain.state

    def import_block(self, block: Block, delivered: Any = None,
                     metadata: dict[str, str] | None = None) -> BlockImportResult:
        """Idempotent: re-importing the head (a retried call) returns its result again.

        ``delivered``: the weights of the model the block delivers (a caller passes their object ref; Ray hands
        over the value), kept in the artifact store under the block's model hash once the block validated and
        before it is persisted: the store holds nothing a refused block named (persist only after validation).
        """
        try:
            block = revalidated(block)
        except InvalidMessage as e:
            raise InvalidBlock(f"block {block.header.height}: {e}", reason="malformed",
                               height=block.header.height) from None
        keep = None if delivered is None else partial(keep_delivered, self.artifacts, block, delivered, metadata)
        if block.height == self.chain.height and compute_block_hash(block.header) == self.head()["hash"]:
            if keep is not None:  # the retry of an import whose reply was lost: the same model, kept (no-op)
                keep()
            return BlockImportResult(block.height, self.head()["hash"], block.header.prev_hash,
                                     block.header.winner, 0.0, 0.0)
        return self.chain.import_block(block, before_persist=keep)

    def blocks(self, start: int = 0, stop: int | None = None) -> list[Block]:
        return self.chain.blocks(start, stop)

    def artifact(self, model_hash: str) -> tuple[dict[str, Any], dict[str, str]] | None:
        """A delivered model's weights and metadata by hash (validators read earlier winners back), or None
        when it is not kept or damaged; the caller checks the hash again (``actors.winners.checked``)."""
        if not isinstance(model_hash, str) or len(model_hash) != 64 or not set(model_hash) <= set("0123456789abcdef"):
            return None  # a name, never a path
        try:
            return (self.artifacts.get(model_hash), self.artifacts.metadata(model_hash)) \
                if self.artifacts.has(model_hash) else None
        except (DLBCError, OSError, ValueError):  # altered or truncated on disk: no reference
            return None


def keep_delivered(store: ArtifactStore, block: Block, weights: Any, metadata: Any) -> None:
    """The model ``block`` delivers into ``store``, named by the block's model hash (weights that hash otherwise
    are refused, ``hash_mismatch``); a module function, so no caller reaches the store through Ray."""
    if block.header.model_hash is None or not isinstance(weights, dict) or not all(
            isinstance(k, str) and isinstance(v, np.ndarray) for k, v in weights.items()):
        raise InvalidBlock(f"block {block.height}: a delivered model for a block that delivers none, or not "
                           "named weights", reason="artifact", height=block.height)
    if not isinstance(metadata, dict | None) or any(not isinstance(k, str) or not isinstance(v, str) or len(k) > 64
                                                     or len(v) > 4096 for k, v in (metadata or {}).items()):
        raise InvalidBlock(f"block {block.height}: the delivered model's metadata is not short text by name",
                           reason="artifact", height=block.height)
    store.put(weights, block.header.model_hash, metadata=dict(metadata or {}))
