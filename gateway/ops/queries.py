"""Read-side views for operators: cases, quarantine, outbox and held mail, as dicts ready for JSON."""

from __future__ import annotations

import json
from email import message_from_bytes
from email.policy import default
from typing import Any

from gateway.core import clock
from gateway.flow.context import Result
from gateway.mail import attachments
from gateway.mail.limits import MessageTooComplex
from gateway.pipeline.process import process
from gateway.runtime import Runtime
from gateway.store.database import Store, get_raw

# How `cases show` and `messages raw` name outgoing mail, apart from the numbers of incoming mail.
OUTGOING = "out-"

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
        'SELECT id, message_id, sha256, \'in\' AS direction, from_addr AS "from", to_addrs AS "to",'
        " subject, body, disposition, internal, created_at FROM messages WHERE case_id = ? ORDER BY id",
        (case_id,),
    )
    outbound = store.query(
        "SELECT id, message_id, kind, recipients, raw, status, created_at, sent_at FROM outbox"
        " WHERE case_id = ? ORDER BY id",
        (case_id,),
    )
    messages = [_incoming_view(store, m) for m in inbound] + [_outgoing_view(o) for o in outbound]
    messages.sort(key=lambda m: m["created_at"])
    events = store.query(
        "SELECT at, actor, action, detail, reason FROM events WHERE case_id = ? ORDER BY id", (case_id,)
    )
    return {**case, "messages": messages, "history": events}


def _incoming_view(store: Store, row: dict[str, Any]) -> dict[str, Any]:
    digest = row.pop("sha256")
    raw = get_raw(store.conn, digest) if digest else None
    try:
        names = [name for name, _ in attachments.files(raw)] if raw else []
    except MessageTooComplex:
        names = []  # it was quarantined for its shape; `messages raw` still gives the bytes
    return {**row, "to": json.loads(row["to"]), "internal": bool(row["internal"]), "attachments": names}


def _outgoing_view(row: dict[str, Any]) -> dict[str, Any]:
    parsed = message_from_bytes(bytes(row["raw"]), policy=default)
    body_part = parsed.get_body(("plain",))
    return {
        "id": f"{OUTGOING}{row['id']}",
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
        "attachments": [part.get_filename() or "(unnamed)" for part in parsed.iter_attachments()],
    }


def list_quarantine(store: Store) -> list[dict[str, Any]]:
    return store.query(
        "SELECT q.id, q.source, q.error, q.created_at, q.replayed_at, q.replay_result, r.size, q.sha256"
        " FROM quarantine q JOIN raw_messages r ON r.sha256 = q.sha256 ORDER BY q.id"
    )


def raw_message(store: Store, ref: str) -> bytes:
    """The stored bytes of a message: its id in `cases show`, out-N for outgoing mail, or a Message-ID."""
    ref = ref.strip()
    if ref.startswith(OUTGOING) and ref[len(OUTGOING) :].isdigit():
        row = store.one("SELECT raw FROM outbox WHERE id = ?", (int(ref[len(OUTGOING) :]),))
        if row is None:
            raise KeyError(f"no outgoing message {ref}")
        return bytes(row["raw"])
    if ref.isdigit():
        found = store.one("SELECT sha256 FROM messages WHERE id = ?", (int(ref),))
    else:
        wanted = ref if ref.startswith("<") else f"<{ref}>"
        found = store.one("SELECT sha256 FROM messages WHERE message_id = ? ORDER BY id LIMIT 1", (wanted,))
        if found is None:
            sent = store.one("SELECT raw FROM outbox WHERE message_id = ?", (wanted,))
            if sent is not None:
                return bytes(sent["raw"])
    if found is None:
        raise KeyError(f"no message {ref}")
    raw = get_raw(store.conn, found["sha256"]) if found["sha256"] else None
    if raw is None:
        raise KeyError(f"message {ref}: its raw bytes were purged ([retention] raw_mail_days)")
    return raw


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


def quarantined_ids(store: Store) -> list[int]:
    """Entries not replayed yet: what `quarantine replay --all` takes."""
    return [r["id"] for r in store.query("SELECT id FROM quarantine WHERE replayed_at IS NULL ORDER BY id")]


def list_outbox(store: Store, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    where, params = ("WHERE status = ?", (status,)) if status else ("", ())
    rows = store.query(
        f"SELECT id, message_id, case_id, kind, recipients, status, attempts, next_attempt_at,"
        f" last_error, created_at, sent_at FROM outbox {where} ORDER BY id DESC LIMIT ?",
        (*params, limit),
    )
    return [{**r, "recipients": json.loads(r["recipients"])} for r in rows]


def list_held(store: Store) -> list[dict[str, Any]]:
    return store.query(
        "SELECT id, message_id, from_addr, subject, reason, created_at FROM messages"
        " WHERE disposition = 'held' ORDER BY id"
    )
