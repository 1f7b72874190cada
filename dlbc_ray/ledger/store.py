"""SQLite storage of blocks: one row per block, written in one transaction (py-evm's atomic batch).

WAL journal: a crash mid-write leaves the previous head intact and nothing half-written.
Durability of a commit (SQLite's ``synchronous`` in WAL mode): ``FULL``, the default, fsyncs
the WAL at every commit, so a returned append survives a process kill, an OS crash and a
power loss; ``NORMAL`` fsyncs only at WAL checkpoints, so a returned append survives a
process kill (the OS holds the write) but the newest commits may roll back after an OS crash
or power loss (the file stays consistent: they vanish whole). A new ledger is built in a
temporary file (schema, version and genesis in one transaction) and renamed into place, so
the ledger's path holds a whole chain or nothing. The store knows bytes, not rules; ``Chain`` does.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from dlbc_ray.errors import ConfigError, CorruptLedger

SCHEMA_VERSION = "4"  # 4: one signed ballot per validator and round; 3: ASERT difficulty law, submissions with
# transcript roots; 2: PoLe and BaaS headers (0.x: no migration)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS blocks (
    height    INTEGER PRIMARY KEY,
    hash      TEXT NOT NULL UNIQUE,
    prev_hash TEXT NOT NULL,
    body      BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoints (
    height     INTEGER PRIMARY KEY,
    head_hash  TEXT NOT NULL,
    state_hash TEXT NOT NULL,
    state      BLOB NOT NULL
);
"""
_SCHEMA_STATEMENTS = [s.strip() for s in _SCHEMA.split(";") if s.strip()]

LedgerStatus = Literal["absent", "empty", "chain"]
Synchronous = Literal["FULL", "NORMAL"]
SYNCHRONOUS: tuple[Synchronous, ...] = ("FULL", "NORMAL")


@dataclass(frozen=True)
class StoredBlock:
    height: int
    hash: str
    prev_hash: str
    body: bytes


@dataclass(frozen=True)
class Checkpoint:
    """The chain state after ``height`` (whose block hash is ``head_hash``), encoded, and its hash."""

    height: int
    head_hash: str
    state_hash: str
    state: bytes


def ledger_status(path: Path | str) -> LedgerStatus:
    """'absent' (no file), 'empty' (a file without genesis: a creation cut short) or 'chain'."""
    if not Path(path).exists():
        return "absent"
    try:
        con = sqlite3.connect(path)
    except sqlite3.Error as e:
        raise CorruptLedger(f"{path} cannot be opened as a ledger ({e})", reason="not_a_ledger") from None
    try:
        has_table = con.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='blocks'").fetchone()
        has_genesis = has_table and con.execute("SELECT 1 FROM blocks WHERE height=0").fetchone()
    except sqlite3.DatabaseError as e:
        raise CorruptLedger(f"{path} is not a dlbc-ray ledger ({e})", reason="not_a_ledger") from None
    finally:
        con.close()
    return "chain" if has_genesis else "empty"


class LedgerStore:
    """Blocks by height; ``append`` is all-or-nothing.

    With ``create`` and no file yet, nothing is written until the first block (genesis)
    arrives; that block creates the file whole.
    """

    def __init__(self, path: Path | str, *, create: bool = True, read_only: bool = False,
                 synchronous: Synchronous = "FULL") -> None:
        if synchronous not in SYNCHRONOUS:
            raise ConfigError(f"ledger synchronous must be one of {', '.join(SYNCHRONOUS)}, not {synchronous!r}",
                              reason="config")
        self.path = str(path)
        self.synchronous = synchronous
        self._conn: sqlite3.Connection | None = None
        if self.path != ":memory:" and not Path(self.path).exists():
            if not create or read_only:
                raise ConfigError(f"no ledger at {self.path}", reason="missing_ledger")
            return
        self._conn = self._connect_read_only(self.path) if read_only else self._connect(self.path, synchronous)

    @staticmethod
    def _connect(path: str, synchronous: Synchronous) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={synchronous}")  # one of SYNCHRONOUS, checked in __init__
            _check_version(conn, path)
        except sqlite3.DatabaseError as e:
            raise CorruptLedger(f"{path} is not a dlbc-ray ledger ({e})", reason="not_a_ledger") from None
        return conn

    @staticmethod
    def _connect_read_only(path: str) -> sqlite3.Connection:
        """SQLite's ``mode=ro``: no pragma, no table is created, and every write is refused."""
        uri = f"{Path(path).resolve().as_uri()}?mode=ro"
        try:
            conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
            row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        except sqlite3.DatabaseError as e:
            raise CorruptLedger(f"{path} is not a dlbc-ray ledger ({e})", reason="not_a_ledger") from None
        if row is None or row[0] != SCHEMA_VERSION:
            conn.close()
            raise CorruptLedger(f"{path} has ledger schema {row[0] if row else 'none'}, expected {SCHEMA_VERSION}",
                                reason="schema_version")
        return conn

    def _create(self, genesis: StoredBlock, checkpoint: Checkpoint | None) -> None:
        """A new ledger file holding genesis: built aside in one transaction, fsynced, renamed in."""
        folder = Path(self.path).parent
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".ledger-", suffix=".tmp")
        os.close(fd)
        try:
            conn = sqlite3.connect(tmp, isolation_level=None)
            conn.execute("PRAGMA journal_mode=DELETE")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("BEGIN IMMEDIATE")
            _write(conn, [genesis], [checkpoint] if checkpoint else [], new=True)
            conn.execute("COMMIT")
            conn.close()
            _fsync(tmp)
            os.replace(tmp, self.path)
            _fsync(str(folder))
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        self._conn = self._connect(self.path, self.synchronous)

    def append(self, block: StoredBlock, checkpoint: Checkpoint | None = None) -> None:
        """Write one block (and the state checkpoint after it) atomically; the height must be the next one."""
        self.append_many([block], [checkpoint] if checkpoint else [])

    def append_many(self, blocks: Sequence[StoredBlock], checkpoints: Sequence[Checkpoint] = ()) -> None:
        """Write consecutive blocks in one transaction: all of them are durable, or none."""
        if self._conn is None:
            if blocks[0].height != 0 or len(blocks) != 1:
                raise ConfigError(f"no ledger at {self.path}: a new ledger starts with genesis alone",
                                  reason="missing_ledger")
            self._create(blocks[0], checkpoints[0] if checkpoints else None)
            return
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            _write(self._conn, blocks, checkpoints, new=False)
            self._conn.execute("COMMIT")
        except BaseException:  # boundary: any failure, even an interrupt, rolls the batch back and re-raises
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise

    def rows(self, start: int = 0, stop: int | None = None) -> Iterator[StoredBlock]:
        if self._conn is None:
            return
        query = "SELECT height, hash, prev_hash, body FROM blocks WHERE height >= ? AND height < ? ORDER BY height"
        for h, bh, ph, body in self._conn.execute(query, (start, stop if stop is not None else 2**62)):
            yield StoredBlock(h, bh, ph, _as_bytes(body))

    def get(self, height: int) -> StoredBlock | None:
        return next(self.rows(height, height + 1), None)

    def last(self) -> StoredBlock | None:
        if self._conn is None:
            return None
        row = self._conn.execute("SELECT MAX(height) FROM blocks").fetchone()
        return None if row[0] is None else self.get(int(row[0]))

    def count(self) -> int:
        return 0 if self._conn is None else int(self._conn.execute("SELECT COUNT(*) FROM blocks").fetchone()[0])

    def checkpoints(self, start: int = 0) -> list[int]:
        """Heights that have a stored state checkpoint, ascending."""
        if self._conn is None:
            return []
        query = "SELECT height FROM checkpoints WHERE height >= ? ORDER BY height"
        return [int(h) for (h,) in self._conn.execute(query, (start,))]

    def checkpoint_sizes(self) -> dict[int, int]:
        """Height -> bytes of each stored checkpoint's state, read without loading any state."""
        if self._conn is None:
            return {}
        return {int(h): int(n) for h, n in self._conn.execute("SELECT height, length(state) FROM checkpoints")}

    def checkpoint(self, height: int) -> Checkpoint | None:
        if self._conn is None:
            return None
        row = self._conn.execute("SELECT height, head_hash, state_hash, state FROM checkpoints WHERE height=?",
                                 (height,)).fetchone()
        return None if row is None else Checkpoint(int(row[0]), row[1], row[2], _as_bytes(row[3]))

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


def _check_version(conn: sqlite3.Connection, path: str) -> None:
    """Create missing tables (a file cut short before its schema) and check the schema version."""
    for statement in _SCHEMA_STATEMENTS:
        conn.execute(statement)
    row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    if row is None:
        conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
    elif row[0] != SCHEMA_VERSION:
        raise CorruptLedger(f"{path} has ledger schema {row[0]}, expected {SCHEMA_VERSION}", reason="schema_version")


def _write(conn: sqlite3.Connection, blocks: Sequence[StoredBlock], checkpoints: Sequence[Checkpoint], *,
           new: bool) -> None:
    if new:
        for statement in _SCHEMA_STATEMENTS:
            conn.execute(statement)
        conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
    conn.executemany("INSERT INTO blocks VALUES (?, ?, ?, ?)",
                     [(b.height, b.hash, b.prev_hash, b.body) for b in blocks])
    conn.executemany("INSERT OR REPLACE INTO checkpoints VALUES (?, ?, ?, ?)",
                     [(c.height, c.head_hash, c.state_hash, c.state) for c in checkpoints])


def _as_bytes(value: object) -> bytes:
    """A stored body as bytes; an edited row may hold text (or worse) instead of a blob."""
    if isinstance(value, bytes | memoryview):
        return bytes(value)
    return str(value).encode("utf-8", "surrogatepass")


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
