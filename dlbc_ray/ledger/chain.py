"""The chain: import a block (validate, then persist atomically), replay from disk, verify.

Opening a chain replays every stored block through the same rules that admitted
it, so a ledger whose bytes were altered fails at the altered height, by name.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from dlbc_ray.consensus import ChainState, compute_block_hash, process_block, validate_block
from dlbc_ray.errors import CorruptLedger, InvalidBlock
from dlbc_ray.ledger.store import LedgerStore, StoredBlock
from dlbc_ray.schema import Block, BlockHeader


@dataclass(frozen=True)
class BlockImportResult:
    height: int
    hash: str
    prev_hash: str
    winner: str | None
    validate_ms: float
    persist_ms: float


def encode_block(block: Block) -> bytes:
    return block.model_dump_json().encode()


def decode_block(row: StoredBlock) -> Block:
    """Parse a stored row and check it is what its row says it is."""
    try:
        block = Block.model_validate_json(row.body)
    except ValidationError as e:
        raise CorruptLedger(f"block {row.height}: stored bytes do not parse ({e.errors()[0]['msg']})",
                            reason="unreadable", height=row.height) from None
    actual = compute_block_hash(block.header)
    if block.header.height != row.height or actual != row.hash or block.header.prev_hash != row.prev_hash:
        raise CorruptLedger(f"block {row.height}: stored bytes do not hash to the recorded {row.hash[:12]}",
                            reason="block_hash", height=row.height)
    return block


class Chain:
    """A validated, persisted chain and the state it implies. Thread-safe."""

    def __init__(self, store: LedgerStore, *, verify: bool = True) -> None:
        self._store = store
        self._lock = threading.RLock()
        self._state: ChainState | None = None
        self._headers: list[BlockHeader] = []
        for block in self._replay(verify=verify):
            self._headers.append(block.header)

    @classmethod
    def open(cls, path: Path | str, *, create: bool = True, verify: bool = True) -> Chain:
        return cls(LedgerStore(path, create=create), verify=verify)

    def _replay(self, *, verify: bool) -> Iterator[Block]:
        for row in self._store.rows():
            block = decode_block(row)
            if verify:
                validate_block(block, self._state)
            self._state = process_block(self._state, block, row.hash)
            yield block

    # ------------------------------------------------------------------ reads

    @property
    def state(self) -> ChainState:
        if self._state is None:
            raise CorruptLedger(f"ledger {self._store.path} has no genesis block", reason="empty")
        return self._state

    @property
    def is_empty(self) -> bool:
        return self._state is None

    @property
    def height(self) -> int:
        return self.state.height

    @property
    def head(self) -> BlockHeader:
        return self._headers[-1]

    def headers(self) -> list[BlockHeader]:
        return list(self._headers)

    def block(self, height: int) -> Block:
        row = self._store.get(height)
        if row is None:
            raise InvalidBlock(f"no block at height {height}", reason="missing", height=height)
        return decode_block(row)

    def blocks(self, start: int = 0, stop: int | None = None) -> list[Block]:
        return [decode_block(row) for row in self._store.rows(start, stop)]

    # ----------------------------------------------------------------- writes

    def import_block(self, block: Block) -> BlockImportResult:
        """Validate against the head, then persist in one transaction; raises InvalidBlock."""
        with self._lock:
            t0 = time.perf_counter()
            validate_block(block, self._state)
            block_hash = compute_block_hash(block.header)
            new_state = process_block(self._state, block, block_hash)
            t1 = time.perf_counter()
            self._store.append(StoredBlock(block.height, block_hash, block.header.prev_hash, encode_block(block)))
            self._state = new_state
            self._headers.append(block.header)
            t2 = time.perf_counter()
        return BlockImportResult(block.height, block_hash, block.header.prev_hash, block.header.winner,
                                 (t1 - t0) * 1e3, (t2 - t1) * 1e3)

    def close(self) -> None:
        self._store.close()


def verify_chain(path: Path | str) -> ChainState:
    """Re-validate every stored block from genesis; raises at the first bad height."""
    chain = Chain.open(path, create=False, verify=True)
    try:
        return chain.state
    finally:
        chain.close()
