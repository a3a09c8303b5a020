"""Alerts to staff about a new case (the on-call, 2nd line): who reported it, how to call, where to answer."""

from __future__ import annotations

import sqlite3
from typing import Any

from gateway.cases.agents import STAFF_AUTO, reply_address
from gateway.cases.escalation import Evidence, reporter_phone
from gateway.flow.context import Context
from gateway.outbox.queue import Outgoing, enqueue
from gateway.runtime import Runtime
from gateway.store.case_rows import record


def alert(
    runtime: Runtime,
    conn: sqlite3.Connection,
    ctx: Context,
    case: dict[str, Any],
    target: str,
    context: dict[str, Any],
) -> bool:
    """Alert a named target (on-call, second-line) or an address about a case; False when none is set."""
    service = runtime.config.service
    address = {"on-call": service.on_call_address, "second-line": service.second_line_address}.get(
        target, target
    )
    if not address:
        record(conn, case["id"], "gateway", "notify-skipped", target, "no address configured")
        return False
    evidence = Evidence(f"{ctx.message.subject}\n{ctx.message.body}", ctx.message.attachments, ctx.sender)
    # Someone called out at night needs the reporter's number before anything else in the mail.
    context = context | {"body": ctx.message.body, "phone": reporter_phone(evidence) or ""}
    rendered = runtime.templates.render(service.language, "staff", "alert", context)
    mail = Outgoing(
        kind="alert",
        to=[address],
        subject=rendered.subject,
        body=rendered.body,
        # An answer from the on-call lands in the case, as agents' answers to their notices do.
        reply_to=reply_address(runtime, conn, case["id"]),
        auto_submitted=STAFF_AUTO,
    )
    message_id = enqueue(conn, runtime.config, mail, case["id"])
    record(conn, case["id"], "gateway", "notified", address, f"alert {message_id}")
    return True
