"""SQLite storage of blocks: one row per block, written in one transaction (py-evm's atomic batch).

WAL journal with ``synchronous=FULL``: a crash mid-write leaves the previous head
intact and nothing half-written. The store knows bytes, not rules; ``Chain`` does.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from dlbc_ray.errors import ConfigError, CorruptLedger

SCHEMA_VERSION = "2"  # 2: PoLe difficulty and BaaS fusion in headers (0.x: no migration from 1)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS blocks (
    height    INTEGER PRIMARY KEY,
    hash      TEXT NOT NULL UNIQUE,
    prev_hash TEXT NOT NULL,
    body      BLOB NOT NULL
);
"""


@dataclass(frozen=True)
class StoredBlock:
    height: int
    hash: str
    prev_hash: str
    body: bytes


class LedgerStore:
    """Blocks by height; ``append`` is all-or-nothing."""

    def __init__(self, path: Path | str, *, create: bool = True) -> None:
        self.path = str(path)
        if self.path != ":memory:" and not create and not Path(self.path).exists():
            raise ConfigError(f"no ledger at {self.path}", reason="missing_ledger")
        try:
            self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.executescript(_SCHEMA)
            self._check_version()
        except sqlite3.DatabaseError as e:
            raise CorruptLedger(f"{self.path} is not a dlbc-ray ledger ({e})", reason="not_a_ledger") from None

    def _check_version(self) -> None:
        row = self._conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is None:
            self._conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
        elif row[0] != SCHEMA_VERSION:
            raise CorruptLedger(f"{self.path} has ledger schema {row[0]}, expected {SCHEMA_VERSION}",
                                reason="schema_version")

    def append(self, block: StoredBlock) -> None:
        """Write one block atomically; the height must be the next one."""
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.execute("INSERT INTO blocks VALUES (?, ?, ?, ?)",
                               (block.height, block.hash, block.prev_hash, block.body))
            self._conn.execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise

    def rows(self, start: int = 0, stop: int | None = None) -> Iterator[StoredBlock]:
        query = "SELECT height, hash, prev_hash, body FROM blocks WHERE height >= ? AND height < ? ORDER BY height"
        for h, bh, ph, body in self._conn.execute(query, (start, stop if stop is not None else 2**62)):
            yield StoredBlock(h, bh, ph, bytes(body))

    def get(self, height: int) -> StoredBlock | None:
        return next(self.rows(height, height + 1), None)

    def count(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM blocks").fetchone()[0])

    def close(self) -> None:
        self._conn.close()
