"""The change record as stored: one change, its organisations, its history, and what is in progress."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime

from gateway.core import clock


class ChangeNotFound(LookupError):
    """No change with that id."""


@dataclass(frozen=True)
class Change:
    id: int
    uid: str  # the iCalendar UID, fixed for the change's life
    title: str
    description: str
    impact: str
    urgent: bool
    status: str  # planned | cancelled | completed
    starts_at: datetime
    ends_at: datetime
    sequence: int  # the iCalendar SEQUENCE: one more for every moved or cancelled window
    organizations: tuple[str, ...]
    created_by: str
    created_at: datetime


def load(conn: sqlite3.Connection, change_id: int) -> Change:
    row = conn.execute(
        "SELECT uid, title, description, impact, urgent, status, starts_at, ends_at, sequence,"
        " created_by, created_at FROM changes WHERE id = ?",
        (change_id,),
    ).fetchone()
    if row is None:
        raise ChangeNotFound(f"no change {change_id}")
    orgs = conn.execute(
        "SELECT organization FROM change_organizations WHERE change_id = ? ORDER BY organization",
        (change_id,),
    ).fetchall()
    return Change(
        id=change_id,
        uid=row[0],
        title=row[1],
        description=row[2],
        impact=row[3],
        urgent=bool(row[4]),
        status=row[5],
        starts_at=clock.parse_iso(row[6]),
        ends_at=clock.parse_iso(row[7]),
        sequence=row[8],
        organizations=tuple(o[0] for o in orgs),
        created_by=row[9],
        created_at=clock.parse_iso(row[10]),
    )


def record(
    conn: sqlite3.Connection,
    change_id: int,
    actor: str,
    action: str,
    detail: str = "",
    message: int | None = None,
) -> None:
    """One line of a change's history: who did what, and which stored message it concerns."""
    conn.execute(
        "INSERT INTO change_events (change_id, message, at, actor, action, detail) VALUES (?, ?, ?, ?, ?, ?)",
        (change_id, message, clock.iso(), actor, action, detail),
    )


def in_progress(conn: sqlite3.Connection, organization: str, moment: datetime) -> int | None:
    """The planned change for this organisation whose window contains `moment`, if any."""
    at = clock.iso(moment)
    row = conn.execute(
        "SELECT c.id FROM changes c JOIN change_organizations o ON o.change_id = c.id"
        " WHERE o.organization = ? AND c.status = 'planned' AND c.starts_at <= ? AND c.ends_at > ?"
        " ORDER BY c.starts_at LIMIT 1",
        (organization, at, at),
    ).fetchone()
    return int(row[0]) if row else None
