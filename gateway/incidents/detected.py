"""Incidents the centre detects: a case, a notice to the incidents contacts, one thread of follow-ups."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import TYPE_CHECKING, Any

from gateway.core import clock
from gateway.directory.registry import Organization
from gateway.outbox.queue import Outgoing, enqueue
from gateway.store.case_rows import load_case, record

if TYPE_CHECKING:
    from gateway.runtime import Runtime


class IncidentRefused(ValueError):
    """A notice we will not send; the message says why."""


class CaseNotFound(LookupError):
    """No case with that id."""


def open_case(
    conn: sqlite3.Connection,
    org: Organization,
    subject: str,
    requester: tuple[str, str],
    priority: str,
    actor: str,
    reason: str,
) -> int:
    """Open an incident case that no customer mail started (the centre or monitoring found it)."""
    now = clock.iso()
    address, name = requester
    cursor = conn.execute(
        "INSERT INTO cases (subject, status, category, priority, queue, organization, requester,"
        " requester_name, language, created_at, updated_at)"
        " VALUES (?, 'new', 'incident', ?, 'first-line', ?, ?, ?, ?, ?, ?)",
        (subject, priority, org.id, address, name, org.language, now, now),
    )
    case_id = int(cursor.lastrowid or 0)
    record(conn, case_id, actor, "opened", f"category=incident priority={priority}", reason)
    return case_id


def notify(runtime: Runtime, org_id: str, title: str, description: str, actor: str) -> int:
    """Open an incident case for an organisation and notify its incidents contacts; returns the case id."""
    org = runtime.registry().organizations.get(org_id)
    if org is None:
        raise IncidentRefused(f"unknown organisation {org_id!r}")
    if not title.strip():
        raise IncidentRefused("an incident notice needs a title")
    service = runtime.config.service
    with runtime.store.write() as conn:
        case_id = open_case(
            conn,
            org,
            title.strip(),
            (service.address, service.name),
            "normal",
            actor,
            "detected by the centre",
        )
        send_notice(runtime, conn, _case(conn, case_id), org, "incident-notice", description, actor)
    return case_id


def update(runtime: Runtime, case_id: int, message: str, actor: str) -> None:
    """Send a follow-up to the incidents contacts, in the thread of the first notice."""
    if not message.strip():
        raise IncidentRefused("an update needs a message")
    with runtime.store.write() as conn:
        case, org = _incident(runtime, conn, case_id)
        send_notice(runtime, conn, case, org, "incident-update", message, actor)
        conn.execute(
            "UPDATE cases SET status = CASE WHEN status = 'new' THEN 'open' ELSE status END,"
            " updated_at = ? WHERE id = ?",
            (clock.iso(), case_id),
        )


def resolve(runtime: Runtime, case_id: int, message: str, actor: str) -> None:
    """Resolve the incident and send the all-clear to the same thread."""
    with runtime.store.write() as conn:
        case, org = _incident(runtime, conn, case_id)
        if case["status"] in ("resolved", "closed"):
            raise IncidentRefused(f"case {case_id} is already {case['status']}")
        now = clock.iso()
        conn.execute(
            "UPDATE cases SET status = 'resolved', resolved_at = ?, updated_at = ? WHERE id = ?",
            (now, now, case_id),
        )
        record(conn, case_id, actor, "resolved", f"{case['status']} -> resolved", "all-clear sent")
        # Monitoring's own all-clear for this incident would be a second one.
        conn.execute("UPDATE incident_notices SET state = 'resolved' WHERE case_id = ?", (case_id,))
        send_notice(runtime, conn, case, org, "incident-resolved", message, actor)


def _case(conn: sqlite3.Connection, case_id: int) -> dict[str, Any]:
    case = load_case(conn, case_id)
    if case is None:
        raise CaseNotFound(f"no case {case_id}")
    return case


def _incident(
    runtime: Runtime, conn: sqlite3.Connection, case_id: int
) -> tuple[dict[str, Any], Organization]:
    case = _case(conn, case_id)
    org = runtime.registry().organizations.get(case["organization"] or "")
    if org is None:
        raise IncidentRefused(f"case {case_id} belongs to no organisation we can notify")
    return case, org


def send_notice(
    runtime: Runtime,
    conn: sqlite3.Connection,
    case: dict[str, Any],
    org: Organization,
    event: str,
    message: str,
    actor: str,
    roles: tuple[str, ...] = ("incidents",),
    at: datetime | None = None,
) -> str:
    """Queue one incident mail to the organisation's contacts in `roles`; `at` is the time it names."""
    contacts = sorted({c.email for role in roles for c in org.contacts_with(role)})
    if not org.contacts_with("incidents"):
        raise IncidentRefused(f"{org.id} has no Varslingspunkt Incidents (role 'incidents') in the registry")
    # Every follow-up answers the first notice, so mail clients keep one thread per incident.
    first = conn.execute(
        "SELECT message_id FROM outbox WHERE case_id = ? AND kind LIKE 'incident-%' ORDER BY id LIMIT 1",
        (case["id"],),
    ).fetchone()
    service = runtime.config.service
    context = {
        "service": service,
        "case": case,
        "tag": f"{service.case_prefix}#{case['id']}",
        "organization": org,
        "message": message.strip(),
        "now": at or clock.now(),
    }
    rendered = runtime.templates.render(org.language, "customer", event, context)
    mail = Outgoing(
        kind=event,
        to=contacts,
        subject=rendered.subject,
        body=rendered.body,
        in_reply_to=first[0] if first else "",
        references=[first[0]] if first else [],
    )
    message_id = enqueue(conn, runtime.config, mail, case["id"])
    record(conn, case["id"], actor, "notice-queued", event, f"to {', '.join(contacts)} as {message_id}")
    return message_id
