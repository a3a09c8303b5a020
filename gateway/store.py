"""The SQLite store: one durable file, WAL and full sync, explicit write transactions."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from gateway import clock
from gateway.schema import migrations


class StorageUnavailable(Exception):
    """The store cannot take a write right now; the sender should retry later."""


class Store:
    """A connection to the gateway database, opened with the durability we promise."""

    def __init__(self, path: Path, busy_timeout_ms: int = 10000) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, so sqlite3's
            # implicit transactions never open or commit behind our back.
            conn = sqlite3.connect(
                str(path), isolation_level=None, check_same_thread=False, timeout=busy_timeout_ms / 1000
            )
            conn.execute(f"PRAGMA busy_timeout = {busy_timeout_ms}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            self.conn = conn
            self._assert_durability()
            self.db = Database(conn)
            migrations.apply(self.db)
        except (sqlite3.Error, OSError) as exc:
            raise StorageUnavailable(f"{path}: {exc}") from exc

    def _assert_durability(self) -> None:
        mode = self.conn.execute("PRAGMA journal_mode").fetchone()[0]
        sync = self.conn.execute("PRAGMA synchronous").fetchone()[0]
        if mode != "wal" or sync != 2:
            raise StorageUnavailable(f"journal_mode={mode} synchronous={sync}: need wal and FULL")

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One BEGIN IMMEDIATE transaction; any failure rolls back and is reported as temporary."""
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StorageUnavailable(str(exc)) from exc
        try:
            yield self.conn
            self.conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise StorageUnavailable(str(exc)) from exc
        except BaseException:
            self._rollback()
            raise

    def _rollback(self) -> None:
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")

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


def get_raw(store: Store, digest: str) -> bytes | None:
    row = store.conn.execute("SELECT raw FROM raw_messages WHERE sha256 = ?", (digest,)).fetchone()
    return bytes(row[0]) if row else None
