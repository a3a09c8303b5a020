"""Agents and 2nd line work cases by mail: they are told, they answer, they command, they note."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import sqlite3
from typing import TYPE_CHECKING, Any

from gateway.cases import case_fields, local_work
from gateway.cases.commands import Applied, Command, Rejected, parse
from gateway.cases.escalation import BY_KEY
from gateway.cases.messages import store_message
from gateway.core import clock
from gateway.flow.context import Context, Result, ThreadMatch
from gateway.mail.quoting import new_text
from gateway.outbox.queue import Outgoing, enqueue
from gateway.store.case_rows import existing_case, record

if TYPE_CHECKING:
    from gateway.cases.escalation import Field
    from gateway.runtime import Runtime

STAFF_AUTO = "auto-generated"


def _secret(runtime: Runtime, conn: sqlite3.Connection, create: bool = True) -> bytes | None:
    """The reply-address key: from config, else generated once per installation and kept in the store."""
    if runtime.reply_key is not None:
        return runtime.reply_key
    if runtime.config.service.secret:
        runtime.reply_key = runtime.config.service.secret.encode()
        return runtime.reply_key
    row = conn.execute("SELECT value FROM settings WHERE name = 'reply-address-key'").fetchone()
    if row is None:
        if not create:
            return None  # no key yet, so no reply address was ever handed out
        # The transaction that first needs it stores it; cached only once that has committed.
        value = secrets.token_hex(32)
        conn.execute("INSERT INTO settings (name, value) VALUES ('reply-address-key', ?)", (value,))
        return value.encode()
    runtime.reply_key = str(row[0]).encode()
    return runtime.reply_key


def _mac(key: bytes, case_id: int) -> str:
    return hmac.new(key, f"case:{case_id}".encode(), hashlib.sha256).hexdigest()[:10]


def reply_address(runtime: Runtime, conn: sqlite3.Connection, case_id: int) -> str:
    """kontakt+SSC123.<mac>@…: the mac makes the address unguessable for other cases."""
    service = runtime.config.service
    local, _, domain = service.address.partition("@")
    key = _secret(runtime, conn)
    assert key is not None
    return f"{local}+{service.case_prefix.lower()}{case_id}.{_mac(key, case_id)}@{domain}"


def thread_by_address(
    runtime: Runtime, conn: sqlite3.Connection, recipients: list[str]
) -> ThreadMatch | None:
    service = runtime.config.service
    local, _, domain = service.address.partition("@")
    pattern = re.compile(
        rf"^{re.escape(local)}\+{re.escape(service.case_prefix.lower())}(\d+)\.([0-9a-f]{{10}})@{re.escape(domain)}$"
    )
    for address in recipients:
        found = pattern.match(address)
        if not found:
            continue
        key = _secret(runtime, conn, create=False)
        case_id = int(found.group(1))
        if key is None or not hmac.compare_digest(found.group(2), _mac(key, case_id)):
            continue
        row = conn.execute("SELECT status FROM cases WHERE id = ?", (case_id,)).fetchone()
        if row is not None:
            return ThreadMatch(case_id, f"per-case reply address {address}", row[0])
    return None


def responsible(runtime: Runtime, case: dict[str, Any]) -> list[str]:
    """The case's owner, else every 1st-line agent."""
    agents = runtime.registry().agents
    if case.get("owner") and case["owner"] in agents:
        return [case["owner"]]
    return sorted(a.email for a in agents.values() if a.line == 1)


def notify(
    runtime: Runtime,
    conn: sqlite3.Connection,
    case_id: int,
    event: str,
    ctx: Context,
    missing: list[Field] | None = None,
) -> None:
    """Tell the responsible agents about a case, with a Reply-To that lands their answer in it.

    `missing` is what the caller already knows the case lacks; otherwise it is worked out here.
    """
    case = existing_case(conn, case_id)
    to = responsible(runtime, case)
    if not to:
        return
    service = runtime.config.service
    if case["category"] != "incident":
        missing = []
    elif missing is None:
        missing = case_fields.still_missing(conn, case_id)
    context = {
        "service": service, "case": case, "tag": f"{service.case_prefix}#{case_id}", "event": event,
        "sender": ctx.sender, "organization": ctx.sender.organization, "text": ctx.message.body,
        "subject": ctx.message.subject, "missing": missing, "flags": ctx.decision.flags,
    }  # fmt: skip
    rendered = runtime.templates.render(service.language, "staff", "notify", context)
    mail = Outgoing(
        kind="agent-notify", to=to, subject=rendered.subject, body=rendered.body,
        reply_to=reply_address(runtime, conn, case_id), auto_submitted=STAFF_AUTO,
    )  # fmt: skip
    enqueue(conn, runtime.config, mail, case_id)


def handle(runtime: Runtime, conn: sqlite3.Connection, ctx: Context, key: str) -> Result:
    """An agent's mail on a case: commands first (all or nothing), then a note or an answer."""

    case_id = ctx.thread.case_id
    assert case_id is not None and ctx.sender.agent is not None
    agent = ctx.sender.agent
    # Cutting the quote must never leave an empty answer: then the whole text goes, and the agent is told.
    reading = new_text(ctx.message.body, ctx.message.subject)
    parsed = parse(reading.text, runtime.registry())
    if parsed.errors:
        rejected = "; ".join(map(str, parsed.errors))
        row = store_message(conn, ctx, key, case_id, "command-error", rejected)
        conn.execute("UPDATE messages SET internal = 1 WHERE id = ?", (row,))
        record(conn, case_id, agent.email, "commands-rejected", rejected, "nothing applied", row)
        _confirm(runtime, conn, ctx, case_id, [], parsed.errors)
        return Result("appended", "agent commands rejected", case_id, ctx.message.message_id)
    # 2nd line talks to 1st line unless it says #svar; #intern keeps anything inside, and so does
    # #eskaler: the text under it is for 2nd line (it goes in the escalation), not the customer;
    # and #lokalt: the text is the request to the Lokalt supportpunkt, not an answer.
    internal = parsed.has("internal") or parsed.has("escalate") or parsed.has("local") or not parsed.text
    internal = internal or (agent.line == 2 and not parsed.has("reply"))
    row = store_message(conn, ctx, key, case_id, "case", ctx.thread.reason)
    conn.execute("UPDATE messages SET internal = ?, body = ? WHERE id = ?", (int(internal), parsed.text, row))
    record(
        conn,
        case_id,
        agent.email,
        "internal-note" if internal else "agent-answer",
        ctx.message.subject,
        ctx.thread.reason,
        row,
    )
    changes = apply_commands(runtime, conn, ctx.sender.address, case_id, parsed.commands, row)
    if parsed.has("local"):
        to_site = local_work.request(
            runtime, conn, case_id, agent, parsed.local_work(), reply_address(runtime, conn, case_id), row
        )
        changes.append(to_site.applied())
    if not internal:
        _answer_customer(runtime, conn, ctx, case_id, parsed.text)
    elif agent.line == 2:
        notify(runtime, conn, case_id, "second-line", ctx)
    if parsed.commands or reading.kept_whole:
        _confirm(
            runtime,
            conn,
            ctx,
            case_id,
            changes,
            [],
            kept_whole=reading.kept_whole,
            commands=bool(parsed.commands),
        )
    return Result(
        "appended", "internal note" if internal else "answer relayed", case_id, ctx.message.message_id
    )


def apply_commands(
    runtime: Runtime,
    conn: sqlite3.Connection,
    actor: str,
    case_id: int,
    commands: list[Command],
    row: int | None,
) -> list[Applied]:
    """Checked commands onto a case, each change in its history under `actor`; what changed."""
    case = existing_case(conn, case_id)
    changes: list[Applied] = []
    updates: dict[str, Any] = {}
    for command in commands:
        field = {"status": "status", "priority": "priority", "category": "category", "assign": "owner"}.get(
            command.name
        )
        if field is not None and case.get(field) != command.value:
            updates[field] = command.value
            changes.append(Applied(field, case.get(field) or "", command.value))
            record(conn, case_id, actor, f"set-{field}", command.value, command.line, row)
        if command.name == "escalate":
            changes.extend(escalate(runtime, conn, case_id, actor, row))
            updates["queue"] = "second-line"
    now = clock.iso()
    if updates.get("status") == "resolved":
        updates["resolved_at"] = now
    if updates.get("status") == "closed":
        updates["closed_at"] = now
    updates["updated_at"] = now
    sets = ", ".join(f"{k} = ?" for k in updates)
    conn.execute(f"UPDATE cases SET {sets} WHERE id = ?", (*updates.values(), case_id))
    return changes


def escalate(
    runtime: Runtime, conn: sqlite3.Connection, case_id: int, actor: str, row: int | None
) -> list[Applied]:
    """Send the case with its history and gathered information to 2nd line; warn about gaps."""

    service = runtime.config.service
    case = existing_case(conn, case_id)
    missing = case_fields.still_missing(conn, case_id) if case["category"] == "incident" else []
    present = conn.execute(
        "SELECT field, evidence FROM case_fields WHERE case_id = ? AND state = 'present' ORDER BY field",
        (case_id,),
    ).fetchall()
    history = conn.execute(
        "SELECT created_at, from_addr, internal, body FROM messages WHERE case_id = ? ORDER BY id", (case_id,)
    ).fetchall()
    context = {
        "service": service,
        "case": case,
        # 2nd line reads the organisation's name; the case row only keeps the registry's id.
        "organization": runtime.registry().organizations.get(case["organization"] or ""),
        "tag": f"{service.case_prefix}#{case_id}",
        "present": [(BY_KEY[key], evidence) for key, evidence in present if key in BY_KEY],
        "missing": missing,
        "history": history,
    }
    rendered = runtime.templates.render(service.language, "staff", "escalation", context)
    if not service.second_line_address:
        record(conn, case_id, actor, "escalation-failed", "", "service.second_line_address is not set", row)
        return [Applied("escalation-failed")]
    mail = Outgoing(
        kind="escalation",
        to=[service.second_line_address],
        subject=rendered.subject,
        body=rendered.body,
        reply_to=reply_address(runtime, conn, case_id),
        auto_submitted=STAFF_AUTO,
    )
    message_id = enqueue(conn, runtime.config, mail, case_id)
    record(conn, case_id, actor, "escalated", service.second_line_address, message_id, row)
    notes = [Applied("escalated", new=service.second_line_address)]
    if missing:
        notes.append(Applied("missing", fields=tuple(missing)))
    return notes


def _answer_customer(
    runtime: Runtime, conn: sqlite3.Connection, ctx: Context, case_id: int, text: str
) -> None:

    case = existing_case(conn, case_id)
    service = runtime.config.service
    agent = ctx.sender.agent
    assert agent is not None
    refs = [
        r[0]
        for r in conn.execute(
            "SELECT message_id FROM messages WHERE case_id = ? AND direction = 'in' AND message_id LIKE '<%'"
            " AND from_addr != ? ORDER BY id",
            (case_id, ctx.sender.address),
        )
    ]
    context = {
        "service": service,
        "case": case,
        "tag": f"{service.case_prefix}#{case_id}",
        "text": text,
        "agent": agent,
    }
    rendered = runtime.templates.render(case["language"], "customer", "answer", context)
    mail = Outgoing(
        kind="answer",
        to=[case["requester"]],
        cc=_customer_copies(runtime, conn, case),
        subject=rendered.subject,
        body=rendered.body,
        in_reply_to=refs[-1] if refs else "",
        references=refs[-10:],
        from_name=f"{agent.name}, {service.name}",
    )
    message_id = enqueue(conn, runtime.config, mail, case_id)
    conn.execute(
        "UPDATE cases SET first_response_at = coalesce(first_response_at, ?),"
        " status = CASE WHEN status = 'new' THEN 'open' ELSE status END WHERE id = ?",
        (clock.iso(), case_id),
    )
    record(conn, case_id, agent.email, "answered", case["requester"], message_id)


def _customer_copies(runtime: Runtime, conn: sqlite3.Connection, case: dict[str, Any]) -> list[str]:
    """People in Cc of the customer's mail who are contacts of the same organisation."""
    org = runtime.registry().organizations.get(case["organization"] or "")
    if org is None:
        return []
    contacts = {c.email for c in org.contacts}
    copies: set[str] = set()
    for (cc,) in conn.execute(
        "SELECT cc_addrs FROM messages WHERE case_id = ? AND direction = 'in'", (case["id"],)
    ):
        copies.update(a for a in json.loads(cc) if a in contacts)
    copies.discard(case["requester"])
    return sorted(copies)


def _confirm(
    runtime: Runtime,
    conn: sqlite3.Connection,
    ctx: Context,
    case_id: int,
    changes: list[Applied],
    errors: list[Rejected],
    kept_whole: bool = False,
    commands: bool = True,
) -> None:
    service = runtime.config.service
    context = {
        "kept_whole": kept_whole,
        "commands": commands,
        "service": service,
        "case": existing_case(conn, case_id),
        "tag": f"{service.case_prefix}#{case_id}",
        "changes": changes,
        "errors": errors,
    }
    rendered = runtime.templates.render(service.language, "staff", "command-result", context)
    mail = Outgoing(
        kind="command-result",
        to=[ctx.sender.address],
        subject=rendered.subject,
        body=rendered.body,
        in_reply_to=ctx.message.message_id,
        auto_submitted=STAFF_AUTO,
        reply_to=reply_address(runtime, conn, case_id),
    )
    enqueue(conn, runtime.config, mail, case_id)
