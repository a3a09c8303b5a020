"""Which escalation fields a case has collected, which were asked for, and asking only once."""

from __future__ import annotations

import sqlite3

from gateway.cases.escalation import BY_KEY, Field, missing
from gateway.core import clock
from gateway.flow.context import Analysis

# A field a message supplies; rowcount 0 when it was already present (the first evidence wins).
_PRESENT = (
    "INSERT INTO case_fields (case_id, field, state, evidence, at) VALUES (?, ?, 'present', ?, ?)"
    " ON CONFLICT (case_id, field) DO UPDATE SET state = 'present', evidence = excluded.evidence,"
    " at = excluded.at WHERE case_fields.state != 'present'"
)


def collect(conn: sqlite3.Connection, case_id: int, present: dict[str, str]) -> list[str]:
    """Record the fields this message supplies; return the ones that were not present before."""
    fresh = []
    for key, quote in present.items():
        cursor = conn.execute(_PRESENT, (case_id, key, quote, clock.iso()))
        if cursor.rowcount:
            fresh.append(key)
    return fresh


def case_text(conn: sqlite3.Connection, case_id: int) -> str:
    rows = conn.execute(
        "SELECT subject, body FROM messages WHERE case_id = ? AND direction = 'in' AND internal = 0",
        (case_id,),
    ).fetchall()
    return "\n".join(f"{s}\n{b}" for s, b in rows)


def states(conn: sqlite3.Connection, case_id: int) -> dict[str, str]:
    rows = conn.execute("SELECT field, state FROM case_fields WHERE case_id = ?", (case_id,)).fetchall()
    return {field: state for field, state in rows}


def still_missing(conn: sqlite3.Connection, case_id: int) -> list[Field]:
    present = {k for k, v in states(conn, case_id).items() if v == "present"}
    # A case placed in an organisation (a contact's mail, a monitored device) has its name in the
    # registry: it is never missing, even before anyone from the organisation has written.
    if conn.execute("SELECT organization FROM cases WHERE id = ?", (case_id,)).fetchone()[0]:
        present.add("organisation")
    return missing(case_text(conn, case_id), present)


def to_ask(conn: sqlite3.Connection, case_id: int) -> list[Field]:
    """Missing fields, unless we already asked on this case: asking twice is a failure."""
    if "asked" in states(conn, case_id).values():
        return []
    return still_missing(conn, case_id)


def first_questions(conn: sqlite3.Connection, case_id: int, analysis: Analysis) -> list[Field]:
    """A case's first mail: record what it supplies, return what is missing.

    The same answer as collect() then to_ask(), without reading back what was just written:
    a new case has no earlier fields, no earlier questions and no other text.
    """
    at = clock.iso()
    conn.executemany(_PRESENT, [(case_id, key, quote, at) for key, quote in analysis.present.items()])
    return [BY_KEY[key] for key in analysis.needed if key not in analysis.present]


def mark_asked(conn: sqlite3.Connection, case_id: int, fields: list[Field]) -> None:
    at = clock.iso()
    conn.executemany(
        "INSERT OR IGNORE INTO case_fields (case_id, field, state, at) VALUES (?, ?, 'asked', ?)",
        [(case_id, field.key, at) for field in fields],
    )


def was_asked(conn: sqlite3.Connection, case_id: int) -> bool:
    row = conn.execute(
        "SELECT 1 FROM events WHERE case_id = ? AND action = 'asked-missing' LIMIT 1", (case_id,)
    ).fetchone()
    return row is not None


def labels(keys: list[str], language: str) -> list[str]:
    return [getattr(BY_KEY[k], "en" if language == "en" else "nb") for k in keys]
