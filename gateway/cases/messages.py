"""Inbound messages as stored rows, and the de-duplication step every message passes first."""

from __future__ import annotations

import json
import sqlite3

from gateway.core import clock
from gateway.flow.context import Context, Result
from gateway.runtime import Runtime
from gateway.store.database import put_raw


def deduplicate(runtime: Runtime, conn: sqlite3.Connection, ctx: Context) -> Result | None:
    """The same Message-ID (else the same bytes) is stored once; the raw bytes are kept first."""
    message = ctx.message
    ctx.key = key = message.message_id or f"sha256:{message.sha256}"
    earlier = conn.execute("SELECT case_id, sha256 FROM messages WHERE dedupe_key = ?", (key,)).fetchone()
    if earlier is None:
        put_raw(conn, message.raw)
        return None
    if (
        earlier[1] != message.sha256
        and not conn.execute("SELECT 1 FROM raw_messages WHERE sha256 = ?", (message.sha256,)).fetchone()
    ):
        # Same Message-ID, other bytes (another route, or a reused id): keep them, act on nothing.
        put_raw(conn, message.raw)
        store_message(conn, ctx, "", earlier[0], "duplicate", f"same Message-ID as {key}")
    return Result("duplicate", f"already stored as {key}", earlier[0], message.message_id)


def store_message(
    conn: sqlite3.Connection, ctx: Context, key: str, case_id: int | None, disposition: str, reason: str
) -> int:
    m = ctx.message
    cursor = conn.execute(
        "INSERT INTO messages (message_id, direction, dedupe_key, case_id, disposition, reason, source,"
        " from_addr, from_name, to_addrs, cc_addrs, subject, body, defects, sha256, created_at)"
        " VALUES (?, 'in', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            m.message_id or key,
            key or None,  # no key: a kept duplicate, which must not claim the unique slot
            case_id,
            disposition,
            reason,
            ctx.source,
            m.from_addr,
            m.from_name,
            json.dumps(m.to),
            json.dumps(m.cc),
            m.subject,
            m.body,
            json.dumps(m.defects),
            m.sha256,
            clock.iso(),
        ),
    )
    if case_id is not None and m.message_id:
        conn.execute(
            "INSERT OR IGNORE INTO message_refs (message_id, case_id) VALUES (?, ?)", (m.message_id, case_id)
        )
    return int(cursor.lastrowid or 0)
