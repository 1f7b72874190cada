"""The chain: import a block (validate, then persist atomically), reopen from disk, verify.

Reopening loads the newest state checkpoint and replays the blocks after it (links,
hashes, money rules); ``verify_chain`` re-validates every block from genesis against
every rule, spread over the cores, and checks each checkpoint against the state its
blocks imply. Altered bytes fail at the altered height, by name.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from dlbc_ray import crypto
from dlbc_ray.consensus import ChainState, compute_block_hash, process_block, validate_block
from dlbc_ray.consensus.validation import SignedHeader
from dlbc_ray.errors import CorruptLedger, DLBCError, InvalidBlock
from dlbc_ray.ledger.snapshot import is_checkpoint_height, load_checkpoint, make_checkpoint
from dlbc_ray.ledger.store import LedgerStore, StoredBlock, Synchronous
from dlbc_ray.schema import Block, BlockHeader, PostTaskTx, Signed, TransferTx

# A stored value that parses but breaks an encoder (NaN, inf, a huge number) surfaces as one of these.
_RAW_ERRORS = (ValueError, TypeError, OverflowError, RecursionError)
REPLAY_CHUNK = 128  # blocks decoded and signature-checked together on a full replay
SMALL_BATCH_CHUNK = 4  # one block's 8 body signatures go to both pool threads, not one, while the rules start


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
    return check_row(row, parse_row(row))


def parse_row(row: StoredBlock) -> Block:
    try:
        return Block.model_validate_json(row.body)
    except ValidationError as e:
        raise CorruptLedger(f"block {row.height}: stored bytes do not parse ({e.errors()[0]['msg']})"[:300],
                            reason="unreadable", height=row.height) from None
    except (*_RAW_ERRORS, DLBCError) as e:
        raise _unreadable(row, e) from None


def check_row(row: StoredBlock, block: Block) -> Block:
    """The parsed block is the one its row records: height, hash and parent."""
    try:
        actual = compute_block_hash(block.header)
    except (*_RAW_ERRORS, DLBCError) as e:
        raise _unreadable(row, e) from None
    if block.header.height != row.height or actual != row.hash or block.header.prev_hash != row.prev_hash:
        raise CorruptLedger(f"block {row.height}: stored bytes do not hash to the recorded {row.hash[:12]}",
                            reason="block_hash", height=row.height)
    return block


def _unreadable(row: StoredBlock, e: Exception) -> CorruptLedger:
    return CorruptLedger(f"block {row.height}: stored bytes hold an invalid value ({e})"[:300],
                         reason="unreadable", height=row.height)


def block_signatures(block: Block) -> list[Signed]:  # type: ignore[type-arg]
    """Every signed envelope the rules check in a block: header, submissions, ballots, fusion votes, txs, evidence."""
    header = block.header
    signeds: list[Signed] = [SignedHeader.model_construct(  # type: ignore[type-arg]
        message=header, chain_id=header.chain_id, signer=header.proposer, signature=block.signature)]
    signeds += block.submissions
    signeds += block.ballots
    signeds += block.fusion_votes
    for tx in block.txs:
        if isinstance(tx, TransferTx):
            signeds.append(tx.transfer)
        elif isinstance(tx, PostTaskTx):
            signeds.append(tx.task)
    for ev in block.evidence:
        signeds += (ev.first, ev.second)
    return signeds


def prefetched(blocks: Sequence[Block]) -> AbstractContextManager[None]:
    """Check the signatures of many blocks over the cores, ahead of the rules that ask for them.

    Each header goes after its body: the first rule to ask (the proposer's signature) then
    verifies a small chunk itself while the pool threads take the body's.
    """
    return crypto.prefetched((s for b in blocks for s in _header_last(block_signatures(b))),
                             SMALL_BATCH_CHUNK if len(blocks) <= 1 else crypto.VERIFY_CHUNK)


def _header_last(signeds: list[Signed]) -> list[Signed]:  # type: ignore[type-arg]
    return [*signeds[1:], signeds[0]]


def apply_stored(state: ChainState | None, block: Block, block_hash: str, *, verify: bool) -> ChainState:
    """The state after a stored block: every rule with ``verify``, else its links and money rules.

    ``state`` is handed over (updated in place, ``process_block(consume=True)``): a replay never
    reads a state again once the next block applied, and a refused block ends the replay.
    """
    height = block.header.height
    try:
        if verify:
            validate_block(block, state)
        elif state is not None and (height, block.header.prev_hash) != (state.height + 1, state.head_hash):
            raise CorruptLedger(f"block {height}: does not follow the stored block {state.height}",
                                reason="prev_hash", height=height)
        return process_block(state, block, block_hash, consume=True)
    except InvalidBlock:
        raise
    except (*_RAW_ERRORS, DLBCError) as e:
        raise CorruptLedger(f"block {height}: a stored value breaks the rules' arithmetic ({e})"[:300],
                            reason="unreadable", height=height) from None


def replay(store: LedgerStore, state: ChainState | None, start: int, stop: int | None, *,
           verify: bool) -> tuple[ChainState | None, BlockHeader | None]:
    """Apply stored blocks start..stop-1; with ``verify``, their signatures are checked a chunk at a time over the cores.

    A block that does not decode is reported after the blocks before it were applied, so the
    first failure by height is the one raised.
    """
    head, chunk = None, []
    for row in store.rows(start, stop):
        chunk.append(row)
        if len(chunk) == (REPLAY_CHUNK if verify else 1):
            state, head = _apply_rows(state, head, chunk, verify=verify)
            chunk = []
    return _apply_rows(state, head, chunk, verify=verify)


def _apply_rows(state: ChainState | None, head: BlockHeader | None, rows: Sequence[StoredBlock], *,
                verify: bool) -> tuple[ChainState | None, BlockHeader | None]:
    parsed, broken = [], None
    for row in rows:
        try:
            parsed.append((row, parse_row(row)))
        except CorruptLedger as e:
            broken = e
            break
    with prefetched([block for _, block in parsed]) if verify else nullcontext():  # hashes reuse its encodings
        for row, block in parsed:
            state, head = apply_stored(state, check_row(row, block), row.hash, verify=verify), block.header
    if broken is not None:
        raise broken
    return state, head


def latest_state(store: LedgerStore, head_height: int) -> tuple[ChainState | None, int]:
    """The newest checkpoint at or below the head that still checks out, and the next height to replay."""
    for height in reversed(store.checkpoints()):
        cp = store.checkpoint(height)
        if height > head_height or cp is None:
            continue
        try:
            return load_checkpoint(cp, store.get(height)), height + 1
        except CorruptLedger:
            continue  # a damaged checkpoint costs replay time, never the chain; `chain verify` names it
    return None, 0


def stored_chain_id(path: Path | str) -> str:
    """The chain a ledger file holds (its genesis header's ``chain_id``), read without replaying the chain."""
    store = LedgerStore(path, create=False, read_only=True)
    try:
        row = store.get(0)
    finally:
        store.close()
    if row is None:
        raise half_made(path)
    return decode_block(row).header.chain_id


def half_made(path: Path | str) -> CorruptLedger:
    return CorruptLedger(f"ledger {path} has no genesis block: its creation was cut short. Run the command that "
                         "made it again (`dlbc-ray up` or `dlbc-ray demo` with this --home): it writes genesis "
                         "into it", reason="empty", height=0)


class Chain:
    """A validated, persisted chain and the state it implies. Thread-safe."""

    def __init__(self, store: LedgerStore, *, verify: bool = True) -> None:
        self._store = store
        self._lock = threading.RLock()
        last = store.last()
        start, self._state = 0, None
        if last is not None and not verify:
            self._state, start = latest_state(store, last.height)
        self._state, head = replay(store, self._state, start, None, verify=verify)
        self._head = head if head is not None or last is None else decode_block(last).header

    @classmethod
    def open(cls, path: Path | str, *, create: bool = True, verify: bool = True,
             synchronous: Synchronous = "FULL") -> Chain:
        """``verify``: re-validate every block (slow); else start from the newest checkpoint.

        ``synchronous``: what a returned import survives (``store.py``): FULL, power loss too; NORMAL, a process kill.
        """
        return cls(LedgerStore(path, create=create, synchronous=synchronous), verify=verify)

    # ------------------------------------------------------------------ reads

    @property
    def state(self) -> ChainState:
        if self._state is None:
            raise half_made(self._store.path)
        return self._state

    @property
    def is_empty(self) -> bool:
        return self._state is None

    @property
    def height(self) -> int:
        return self.state.height

    @property
    def head(self) -> BlockHeader:
        if self._head is None:
            raise half_made(self._store.path)
        return self._head

    def headers(self) -> list[BlockHeader]:
        return [b.header for b in self.blocks()]

    def block(self, height: int) -> Block:
        row = self._store.get(height)
        if row is None:
            raise InvalidBlock(f"no block at height {height}", reason="missing", height=height)
        return decode_block(row)

    def blocks(self, start: int = 0, stop: int | None = None) -> list[Block]:
        return [decode_block(row) for row in self._store.rows(start, stop)]

    # ----------------------------------------------------------------- writes

    def import_block(self, block: Block, before_persist: Callable[[], object] | None = None) -> BlockImportResult:
        """Validate against the head, then persist in one transaction; raises InvalidBlock."""
        return self.import_blocks([block], before_persist)[0]

    def import_blocks(self, blocks: Sequence[Block],
                      before_persist: Callable[[], object] | None = None) -> list[BlockImportResult]:
        """Validate each block on the one before, then persist them all in one transaction (all or none).

        ``before_persist`` runs once every block validated and before any is written (the ledger actor
        keeps the delivered model there: nothing is written for a block the rules refuse). A crash before
        the commit loses the whole batch and leaves the previous head; after it, the whole batch is
        durable (WAL; with ``synchronous=FULL`` against power loss too, see ``store.py``).
        """
        with self._lock:
            t0 = time.perf_counter()
            state, rows, checkpoints = self._state, [], []
            now_ms = time.time_ns() // 1_000_000  # the importer's clock: no block from the future
            with prefetched(blocks):
                for block in blocks:
                    validate_block(block, state, now_ms=now_ms)
                    block_hash = compute_block_hash(block.header)
                    # The head's state is copied (a refused batch keeps it); the batch's own are handed over.
                    state = process_block(state, block, block_hash, consume=state is not self._state)
                    rows.append(StoredBlock(block.height, block_hash, block.header.prev_hash, encode_block(block)))
                    if is_checkpoint_height(block.height):
                        checkpoints.append(make_checkpoint(state))
            if before_persist is not None:
                before_persist()
            t1 = time.perf_counter()
            self._store.append_many(rows, checkpoints)
            t2 = time.perf_counter()
            self._state, self._head = state, blocks[-1].header
        per = 1e3 / len(blocks)
        return [BlockImportResult(b.height, r.hash, b.header.prev_hash, b.header.winner, (t1 - t0) * per,
                                  (t2 - t1) * per) for b, r in zip(blocks, rows)]

    def close(self) -> None:
        self._store.close()

