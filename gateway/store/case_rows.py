"""Case rows and their history: the one case loader and the one history writer every layer uses."""

from __future__ import annotations

import sqlite3
from typing import Any

from gateway.core import clock

# One INSERT text for every history line, so a new case's first lines go in one executemany.
EVENT_INSERT = (
    "INSERT INTO events (case_id, message, at, actor, action, detail, reason) VALUES (?, ?, ?, ?, ?, ?, ?)"
)


def record(
    conn: sqlite3.Connection,
    case_id: int | None,
    actor: str,
    action: str,
    detail: str = "",
    reason: str = "",
    message: int | None = None,
) -> None:
    """One line of a case's history: who did what, and why."""
    conn.execute(EVENT_INSERT, (case_id, message, clock.iso(), actor, action, detail, reason))


def load_case(conn: sqlite3.Connection, case_id: int) -> dict[str, Any] | None:
    """A case row as a dict of its columns, or None when there is no such case."""
    cursor = conn.execute("SELECT * FROM cases WHERE id = ?", (case_id,))
    row = cursor.fetchone()
    if row is None:
        return None
    return dict(zip([d[0] for d in cursor.description], row, strict=True))


def existing_case(conn: sqlite3.Connection, case_id: int) -> dict[str, Any]:
    """A case the caller knows exists (it threaded into it, or opened it in this transaction)."""
    case = load_case(conn, case_id)
    if case is None:
        raise LookupError(f"no case {case_id}")
    return case
