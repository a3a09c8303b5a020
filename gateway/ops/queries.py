"""Read-side views for operators: cases, quarantine, outbox and held mail, as dicts ready for JSON."""

from __future__ import annotations

import json
from typing import Any

from gateway.core import clock
from gateway.flow.context import Result
from gateway.pipeline.process import process
from gateway.runtime import Runtime
from gateway.store.database import Store, get_raw

CASE_FIELDS = (
    "id, subject, status, category, priority, queue, organization, requester,"
    " requester_name, language, owner, linked_case, created_at, updated_at"
)


def list_cases(store: Store, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    where, params = ("WHERE status = ?", (status,)) if status else ("", ())
    return store.query(f"SELECT {CASE_FIELDS} FROM cases {where} ORDER BY id DESC LIMIT ?", (*params, limit))


def show_case(store: Store, case_id: int) -> dict[str, Any] | None:
    case = store.one(f"SELECT {CASE_FIELDS} FROM cases WHERE id = ?", (case_id,))
    if case is None:
        return None
    inbound = store.query(
        'SELECT message_id, \'in\' AS direction, from_addr AS "from", to_addrs AS "to", subject, body,'
        " disposition, internal, created_at FROM messages WHERE case_id = ? ORDER BY id",
        (case_id,),
    )
    outbound = store.query(
        "SELECT message_id, kind, recipients, raw, status, created_at, sent_at FROM outbox"
        " WHERE case_id = ? ORDER BY id",
        (case_id,),
    )
    messages = [{**m, "to": json.loads(m["to"]), "internal": bool(m["internal"])} for m in inbound] + [
        _outgoing_view(o) for o in outbound
    ]
    messages.sort(key=lambda m: m["created_at"])
    events = store.query(
        "SELECT at, actor, action, detail, reason FROM events WHERE case_id = ? ORDER BY id", (case_id,)
    )
    return {**case, "messages": messages, "history": events}


def _outgoing_view(row: dict[str, Any]) -> dict[str, Any]:
    from email import message_from_bytes
    from email.policy import default

    parsed = message_from_bytes(bytes(row["raw"]), policy=default)
    body_part = parsed.get_body(("plain",))
    return {
        "message_id": row["message_id"],
        "direction": "out",
        "from": str(parsed["From"]),
        "to": json.loads(row["recipients"]),
        "subject": str(parsed["Subject"]),
        "body": body_part.get_content() if body_part is not None else "",
        "kind": row["kind"],
        "status": row["status"],
        "internal": False,
        "created_at": row["created_at"],
        "sent_at": row["sent_at"],
    }


def list_quarantine(store: Store) -> list[dict[str, Any]]:
    return store.query(
        "SELECT q.id, q.source, q.error, q.created_at, q.replayed_at, q.replay_result, r.size, q.sha256"
        " FROM quarantine q JOIN raw_messages r ON r.sha256 = q.sha256 ORDER BY q.id"
    )


def replay_quarantined(runtime: Runtime, entry_id: int) -> Result:
    """Run a quarantined message through the pipeline again, after a fix; the entry records how it went."""
    store = runtime.store
    row = store.one("SELECT sha256, source FROM quarantine WHERE id = ?", (entry_id,))
    if row is None:
        raise KeyError(f"no quarantine entry {entry_id}")
    raw = get_raw(store.conn, row["sha256"])
    assert raw is not None, "quarantine rows always reference stored bytes"
    result = process(runtime, raw, f"replay:{row['source']}", quarantine_errors=False)
    with store.write() as conn:
        conn.execute(
            "UPDATE quarantine SET replayed_at = ?, replay_result = ? WHERE id = ?",
            (clock.iso(), f"{result.outcome}: {result.reason}"[:500], entry_id),
        )
    return result


def list_outbox(store: Store, status: str | None = None) -> list[dict[str, Any]]:
    where, params = ("WHERE status = ?", (status,)) if status else ("", ())
    rows = store.query(
        f"SELECT id, message_id, case_id, kind, recipients, status, attempts, next_attempt_at,"
        f" last_error, created_at, sent_at FROM outbox {where} ORDER BY id",
        params,
    )
    return [{**r, "recipients": json.loads(r["recipients"])} for r in rows]


def list_held(store: Store) -> list[dict[str, Any]]:
    return store.query(
        "SELECT id, message_id, from_addr, subject, reason, created_at FROM messages"
        " WHERE disposition = 'held' ORDER BY id"
    )
