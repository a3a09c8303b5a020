"""Loop alerts: when the hourly brake silences our replies to a sender, 1st line hears of it once."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from typing import TYPE_CHECKING

from gateway.core import clock
from gateway.flow.context import Context
from gateway.outbox.queue import Outgoing, enqueue
from gateway.store.case_rows import record

if TYPE_CHECKING:
    from gateway.runtime import Runtime

ACTION = "loop-alert"


def alert(
    runtime: Runtime, conn: sqlite3.Connection, ctx: Context, case_id: int | None, event: str, count: int
) -> str | None:
    """Queue a loop-alert to the 1st-line agents, at most once per sender per hour; its Message-ID.

    A sender that reaches service.receipt_limit_per_hour is most often an autoresponder answering
    our answers. The brake ends the loop; this tells a person, who can look at the sender's cases.
    """

    sender = ctx.sender.address
    hour_ago = clock.iso(clock.now() - timedelta(hours=1))
    told = conn.execute(
        "SELECT 1 FROM events WHERE action = ? AND detail = ? AND at > ? LIMIT 1", (ACTION, sender, hour_ago)
    ).fetchone()
    if told is not None:
        return None
    agents = sorted(a.email for a in runtime.registry().agents.values() if a.line == 1)
    if not agents:
        record(conn, case_id, "gateway", ACTION, sender, "no 1st-line agent in the registry to alert")
        return None
    service = runtime.config.service
    context = {
        "service": service,
        "sender": ctx.sender,
        "organization": ctx.sender.organization,
        "count": count,
        "limit": service.receipt_limit_per_hour,
        "event": event,
        "subject": ctx.message.subject,
        "tag": f"{service.case_prefix}#{case_id}" if case_id is not None else "",
        "now": clock.now(),
    }
    rendered = runtime.templates.render(service.language, "staff", ACTION, context)
    mail = Outgoing(
        kind=ACTION, to=agents, subject=rendered.subject, body=rendered.body, auto_submitted="auto-generated"
    )
    # Not threaded into the case: an agent answering the alert must not write to the customer.
    message_id = enqueue(conn, runtime.config, mail, None)
    why = f"{count} automatic replies in the last hour; agents alerted as {message_id}"
    record(conn, case_id, "gateway", ACTION, sender, why)
    return message_id
