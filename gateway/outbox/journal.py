"""The outbox's note of each mail the relay took, made at its 250 before the next mail is sent.

The note goes to a small SQLite file of the sender's own (`<storage.path>/outbox-sent.db`), not to
the store: a transaction in the store per delivery would wait on the intake's write lock each
time (SQLite's busy handler sleeps in steps of up to 100 ms), and end-to-end throughput fell by a
quarter. The notes are applied to the store's outbox rows in batches, and any left by a crash
are applied before anything else is sent, so a kill -9 can leave at most the one mail in flight
on a relay connection unnoted.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from pathlib import Path

from gateway.core import clock
from gateway.store.database import StorageUnavailable

FILE_NAME = "outbox-sent.db"


class SentJournal:
    """Outbox ids the relay took, with when; safe from a crash at once (WAL, synchronous NORMAL)."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / FILE_NAME
        try:
            folder.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(
                str(self.path), isolation_level=None, check_same_thread=False, timeout=10
            )
            self.conn.execute("PRAGMA journal_mode = WAL")
            # NORMAL: a commit is in the WAL (the OS's page cache) before the next mail goes, which a
            # kill -9 cannot undo; only a power cut can lose notes not yet synced, and then those mails
            # (at most the 50 not yet applied to the store, which syncs) go twice, never missing.
            # An fsync per delivery let the sender fall seconds behind the intake.
            self.conn.execute("PRAGMA synchronous = NORMAL")
            # The Message-ID too: a note must never match another row with the same id, as in a
            # store restored from a backup beside a journal left from after that backup.
            self.conn.execute(
                "CREATE TABLE IF NOT EXISTS sent (outbox_id INTEGER PRIMARY KEY, message_id TEXT NOT NULL,"
                " sent_at TEXT NOT NULL)"
            )
        except (sqlite3.Error, OSError) as exc:
            raise StorageUnavailable(f"{self.path}: {exc}") from exc

    def note(self, outbox_id: int, message_id: str) -> None:
        """One committed row (autocommit): the relay took this mail."""
        try:
            self.conn.execute(
                "INSERT OR IGNORE INTO sent VALUES (?, ?, ?)", (outbox_id, message_id, clock.iso())
            )
        except sqlite3.Error as exc:
            raise StorageUnavailable(f"{self.path}: {exc}") from exc

    def pending(self) -> list[tuple[int, str, str]]:
        """(outbox id, Message-ID, sent at) of every note not yet applied to the store."""
        try:
            rows = self.conn.execute("SELECT outbox_id, message_id, sent_at FROM sent").fetchall()
            return [(int(i), str(mid), str(at)) for i, mid, at in rows]
        except sqlite3.Error as exc:
            raise StorageUnavailable(f"{self.path}: {exc}") from exc

    def forget(self, ids: Iterable[int]) -> None:
        """Drop notes the store now has; a crash before this only applies them once more, harmlessly."""
        try:
            # One statement, so one transaction and one sync for the whole batch.
            self.conn.execute(
                "DELETE FROM sent WHERE outbox_id IN (SELECT value FROM json_each(?))",
                (json.dumps(list(ids)),),
            )
        except sqlite3.Error as exc:
            raise StorageUnavailable(f"{self.path}: {exc}") from exc

    def close(self) -> None:
        self.conn.close()
