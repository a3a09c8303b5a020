"""The SQLite store: one durable file, WAL and full sync, explicit write transactions."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from gateway.core import clock
from gateway.core.config import StorageConfig
from gateway.store.schema import migrations
from gateway.store.write_errors import WriteErrorLog


class StorageUnavailable(Exception):
    """The store cannot take a write right now; the sender should retry later."""


# SQLITE_READONLY, SQLITE_IOERR, SQLITE_FULL, SQLITE_CANTOPEN: after one of these the connection
# itself may be what is stuck (SQLite opens a file it may not write read-only, for good), so the
# next write opens a fresh one. A locked database (SQLITE_BUSY) needs no such thing.
_REOPEN_AFTER = frozenset({8, 10, 13, 14})

# With Litestream streaming the store, it alone checkpoints (PASSIVE at 1,000 pages and every
# minute, TRUNCATE past 121,359): a checkpoint of ours could restart the WAL before Litestream has
# copied it, which costs a fresh snapshot. Our connections keep a safety net above all of
# Litestream's thresholds, so the WAL stays bounded (about 600 MB) if Litestream is not running.
REPLICA_CHECKPOINT_PAGES = 150_000


class Store:
    """A connection to the gateway database, opened with the durability we promise."""

    def __init__(self, path: Path, busy_timeout_ms: int = 10000, replica: bool = False) -> None:
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        self._reopen_needed = False
        self.replica = replica
        # SQLite's default (1000) unless deferred, or left to Litestream when it streams the store.
        self.checkpoint_pages: int | None = REPLICA_CHECKPOINT_PAGES if replica else None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.write_errors = WriteErrorLog(path.parent, f"{Path(sys.argv[0]).stem} pid {os.getpid()}")
            self.conn = self._connect()
            self.db = Database(self.conn)
            migrations.apply(self.db)
        except (sqlite3.Error, OSError) as exc:
            raise StorageUnavailable(f"{path}: {exc}") from exc

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, so sqlite3's
        # implicit transactions never open or commit behind our back.
        timeout_ms = self.busy_timeout_ms
        conn = sqlite3.connect(
            str(self.path), isolation_level=None, check_same_thread=False, timeout=timeout_ms / 1000
        )
        conn.execute(f"PRAGMA busy_timeout = {timeout_ms}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        if self.checkpoint_pages is not None:
            conn.execute(f"PRAGMA wal_autocheckpoint = {int(self.checkpoint_pages)}")
        self._assert_durability(conn)
        return conn

    def defer_checkpoints(self, pages: int) -> None:
        """Let this connection's commits leave WAL checkpoints to other writers, up to `pages`.

        A checkpoint copies the WAL into the database file and syncs it, inside the COMMIT that
        crossed the threshold. serve's intake worker sets a high threshold so that its commits,
        which hold every SMTP client's 250, rarely pay for one: the outbox sender commits after
        each delivery batch with SQLite's default of 1000 pages and so checkpoints first. The high
        threshold still bounds the WAL when nothing goes out. Where Litestream checkpoints
        (`storage.replica`), the connection keeps its higher safety net instead.
        """
        self.checkpoint_pages = max(pages, REPLICA_CHECKPOINT_PAGES) if self.replica else pages
        self.conn.execute(f"PRAGMA wal_autocheckpoint = {int(self.checkpoint_pages)}")

    def _assert_durability(self, conn: sqlite3.Connection) -> None:
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        sync = conn.execute("PRAGMA synchronous").fetchone()[0]
        if mode != "wal" or sync != 2:
            conn.close()
            raise StorageUnavailable(f"journal_mode={mode} synchronous={sync}: need wal and FULL")

    def _reopen(self) -> None:
        """A fresh connection after the store was full, read-only or failing: `serve` heals by itself."""
        try:
            fresh = self._connect()
        except (sqlite3.Error, OSError) as exc:
            self.write_errors.failed(f"reopening {self.path}: {exc}")
            raise StorageUnavailable(f"{self.path}: {exc}") from exc
        stale, self.conn, self.db = self.conn, fresh, Database(fresh)
        self._reopen_needed = False
        with suppress(sqlite3.Error):
            stale.close()

    def _failed(self, exc: sqlite3.Error) -> StorageUnavailable:
        if getattr(exc, "sqlite_errorcode", 0) & 0xFF in _REOPEN_AFTER:
            # The storage itself failed (a lock timeout is not that): `gateway status` shows it.
            self._reopen_needed = True
            self.write_errors.failed(str(exc))
        return StorageUnavailable(str(exc))

    def close(self) -> None:
        self.conn.close()
        self.write_errors.close()

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One BEGIN IMMEDIATE transaction; any failure rolls back and is reported as temporary."""
        if self._reopen_needed:
            self._reopen()
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise self._failed(exc) from exc
        try:
            yield self.conn
            self.conn.execute("COMMIT")
            self.write_errors.succeeded()
        except sqlite3.Error as exc:
            self._rollback()
            raise self._failed(exc) from exc
        except BaseException:
            self._rollback()
            raise

    def _rollback(self) -> None:
        if self.conn.in_transaction:
            try:
                self.conn.execute("ROLLBACK")
            except sqlite3.Error:  # the connection is in trouble: the next write starts afresh
                self._reopen_needed = True

    def query(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> list[dict[str, Any]]:
        cursor = self.conn.execute(sql, params)
        names = [d[0] for d in cursor.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def one(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> Any:
        rows = self.query(sql, params)
        return rows[0] if rows else None


def put_raw(conn: sqlite3.Connection, raw: bytes) -> str:
    """Keep the exact bytes once, keyed by their SHA-256; return the key."""
    digest = hashlib.sha256(raw).hexdigest()
    conn.execute(
        "INSERT OR IGNORE INTO raw_messages (sha256, size, raw, stored_at) VALUES (?, ?, ?, ?)",
        (digest, len(raw), raw, clock.iso()),
    )
    return digest


def get_raw(conn: sqlite3.Connection, digest: str) -> bytes | None:
    """The exact bytes kept under a SHA-256, on whichever connection the caller holds."""
    row = conn.execute("SELECT raw FROM raw_messages WHERE sha256 = ?", (digest,)).fetchone()
    return bytes(row[0]) if row else None


def open_store(storage: StorageConfig) -> Store:
    """The store a configuration names, with its lock timeout."""
    return Store(storage.database, storage.busy_timeout_ms, storage.replica)
