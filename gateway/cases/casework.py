"""Doing what was decided, inside the message's transaction: cases, history and queued replies."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from datetime import timedelta
from typing import Any

from gateway.cases import agents, case_fields, loop_alerts, staff_alerts
from gateway.cases.escalation import Field, question
from gateway.cases.messages import store_message
from gateway.cases.threads import clean_subject
from gateway.core import clock
from gateway.flow.context import Analysis, Context, Result
from gateway.mail import screening
from gateway.notices.echo import echo
from gateway.outbox.queue import Outgoing, enqueue
from gateway.runtime import Runtime
from gateway.store.case_rows import EVENT_INSERT, existing_case, record


def language_for(runtime: Runtime, ctx: Context) -> str:
    org = ctx.sender.organization
    return org.language if org else runtime.config.service.language


def keep_automated(runtime: Runtime, conn: sqlite3.Connection, ctx: Context) -> None:
    """Mail we must never answer is stored; a bounce marks the outgoing mail it reports as failed."""
    if ctx.automated is None:
        return
    ctx.row = store_message(conn, ctx, ctx.key, ctx.thread.case_id, "automated", ctx.automated)
    if screening.is_bounce(ctx.message):
        _mark_bounced(conn, ctx, ctx.row)


def ignore_automated(runtime: Runtime, conn: sqlite3.Connection, ctx: Context) -> Result | None:
    """Stored mail we never answer ends here, noted in its case's history when it threads into one."""
    if ctx.automated is None:
        return None
    if ctx.thread.case_id is not None and not screening.is_bounce(ctx.message):
        record(
            conn,
            ctx.thread.case_id,
            ctx.sender.address,
            "automated-reply-stored",
            ctx.message.subject,
            ctx.automated,
            ctx.row,
        )
    return Result("ignored", ctx.automated, ctx.thread.case_id, ctx.message.message_id)


def hold(runtime: Runtime, conn: sqlite3.Connection, ctx: Context) -> Result | None:
    """A rule said hold: stored for an agent to triage, nothing sent."""
    if ctx.decision.hold is None:
        return None
    # "unknown sender" would send an agent looking in the registry, when the cause is authentication.
    reason = ctx.unproven_agent or ctx.decision.hold
    store_message(conn, ctx, ctx.key, None, "held", f"{reason} ({ctx.rules_why})")
    return Result("held", reason, None, ctx.message.message_id)


def act(runtime: Runtime, conn: sqlite3.Connection, ctx: Context) -> Result:
    """Refuse, let an agent work the case, append to it, or open a new one."""
    decision, sender, thread, key, rules_why = ctx.decision, ctx.sender, ctx.thread, ctx.key, ctx.rules_why
    if decision.refuse is not None:
        store_message(conn, ctx, key, None, "refused", f"{decision.refuse} ({rules_why})")
        sent = reply(runtime, conn, ctx, None, decision.refuse, template_context(runtime, ctx, None))
        return Result("refused", decision.refuse, None, ctx.message.message_id, sent)
    if thread.case_id is not None and sender.kind == "agent" and sender.agent is not None:
        return agents.handle(runtime, conn, ctx, key)
    if thread.case_id is not None:
        return _append(runtime, conn, ctx, key, rules_why)
    return open_case(runtime, conn, ctx, key, rules_why)


def open_case(
    runtime: Runtime,
    conn: sqlite3.Connection,
    ctx: Context,
    key: str,
    rules_why: str,
    linked: int | None = None,
    existing_row: int | None = None,
) -> Result:
    """A new case from this message: history, receipt (asking once for what is missing), alerts."""
    d, sender, now = ctx.decision, ctx.sender, clock.iso()
    case_id = _insert_case(runtime, conn, ctx, linked, now)
    row = _opening_message(conn, ctx, key, case_id, existing_row)
    conn.executemany(EVENT_INSERT, _opening_events(ctx, case_id, row, now, rules_why))
    if linked is not None:
        record(conn, linked, "gateway", "follow-up-case", f"case {case_id}", "reply to a closed case")
    case = existing_case(conn, case_id)
    asked: list[Field] = []
    lacking: list[Field] | None = None  # what the agent notice lists; worked out there when unknown
    wanted = d.ask_missing and d.category == "incident"
    analysis = _analysed(conn, ctx, case_id, row, wanted)
    if wanted and analysis is not None:
        asked = lacking = case_fields.first_questions(conn, case_id, analysis)
    base = template_context(runtime, ctx, case)
    # Staff first, so the receipt can tell a night-time reporter that the on-call has been called.
    alerted = {target for target in d.notify if staff_alerts.alert(runtime, conn, ctx, case, target, base)}
    context = base | {
        "missing": [question(f, sender, language_for(runtime, ctx)) for f in asked],
        "missing_keys": [f.key for f in asked],
        "on_call_alerted": "on-call" in alerted,
    }
    sent = [m for event in d.replies for m in reply(runtime, conn, ctx, case_id, event, context)]
    if asked and sent:
        # The receipt carried the questions: one mail, and never a second time on this case.
        case_fields.mark_asked(conn, case_id, asked)
        record(
            conn,
            case_id,
            "gateway",
            "asked-missing",
            ", ".join(f.key for f in asked),
            "escalation information missing from the report",
        )
    if d.resolve and sent:
        _resolve_answered(conn, case_id, d.resolve)
    elif sender.kind != "agent":
        agents.notify(runtime, conn, case_id, "new-case", ctx, lacking)
    return Result("opened", rules_why, case_id, ctx.message.message_id, sent)


def _resolve_answered(conn: sqlite3.Connection, case_id: int, why: str) -> None:
    """The automatic answer was all the mail needed: resolved, so it is on record and a reply reopens it.

    Only once the answer was queued: when the hourly brake held it back, the case stays open for a person.
    """
    now = clock.iso()
    conn.execute(
        "UPDATE cases SET status = 'resolved', resolved_at = ?, first_response_at = ? WHERE id = ?",
        (now, now, case_id),
    )
    record(conn, case_id, "gateway", "resolved", "new -> resolved", why)


def _insert_case(
    runtime: Runtime, conn: sqlite3.Connection, ctx: Context, linked: int | None, now: str
) -> int:
    """The case row itself, from what the rules decided and who wrote."""
    d, sender = ctx.decision, ctx.sender
    org = sender.organization.id if sender.organization else None
    subject = clean_subject(ctx.message.subject, runtime.config.service.case_prefix)
    cursor = conn.execute(
        "INSERT INTO cases (subject, status, category, priority, queue, organization, requester,"
        " requester_name, language, linked_case, created_at, updated_at)"
        " VALUES (?, 'new', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            subject,
            d.category,
            d.priority,
            d.queue,
            org,
            sender.address,
            sender.name,
            language_for(runtime, ctx),
            linked,
            now,
            now,
        ),
    )
    return int(cursor.lastrowid or 0)


def _opening_message(
    conn: sqlite3.Connection, ctx: Context, key: str, case_id: int, existing_row: int | None
) -> int:
    """The stored row of the message that opens a case: new, or one kept aside until now."""
    if existing_row is None:
        return store_message(conn, ctx, key, case_id, "case", "opened the case")
    # A message kept aside earlier (awaiting confirmation) now opens the case.
    conn.execute(
        "UPDATE messages SET case_id = ?, disposition = 'case', reason = 'opened the case' WHERE id = ?",
        (case_id, existing_row),
    )
    if ctx.message.message_id:
        conn.execute(
            "INSERT OR IGNORE INTO message_refs (message_id, case_id) VALUES (?, ?)",
            (ctx.message.message_id, case_id),
        )
    return existing_row


def _opening_events(ctx: Context, case_id: int, row: int, now: str, rules_why: str) -> list[tuple[Any, ...]]:
    """A new case's first history: opened, threaded, each rule, what the mail asks for, agent flags."""
    d = ctx.decision
    opened = f"category={d.category} priority={d.priority} queue={d.queue}"
    return [
        (case_id, row, now, ctx.sender.address, "opened", opened, rules_why),
        (case_id, row, now, "gateway", "threaded", "new case", ctx.thread.reason),
        *((case_id, row, now, "rules", "rule-fired", name, why) for name, why in d.fired),
        (case_id, row, now, "gateway", "intent", ctx.intent.summary(), ctx.intent.signals_text()),
        *((case_id, row, now, "rules", "flag", flag, "for the agent") for flag in d.flags),
    ]


def _append(runtime: Runtime, conn: sqlite3.Connection, ctx: Context, key: str, rules_why: str) -> Result:
    case_id = ctx.thread.case_id
    assert case_id is not None
    case = existing_case(conn, case_id)
    if case["status"] == "closed" and _closed_long_ago(case, runtime.config.service.reopen_days):
        return open_case(runtime, conn, ctx, key, rules_why, linked=case_id)
    row = store_message(conn, ctx, key, case_id, "case", ctx.thread.reason)
    record(conn, case_id, ctx.sender.address, "message-added", ctx.message.subject, ctx.thread.reason, row)
    updates = {"updated_at": clock.iso()}
    if case["status"] in ("resolved", "closed", "pending") and ctx.sender.kind != "agent":
        updates["status"] = "open"
        record(
            conn, case_id, "gateway", "reopened", f"{case['status']} -> open", "the customer wrote again", row
        )
    skipped = ctx.analysis is not None and bool(ctx.analysis.skipped)
    # An incident opened without asking (by monitoring, or recategorised) still gathers what the
    # customer writes, or the agents are told it is missing right under the customer's words.
    tracked = case["category"] == "incident" or case_fields.states(conn, case_id)
    if ctx.sender.kind != "agent" and (skipped or tracked):
        _collect_answers(conn, ctx, case_id, row)
    sets = ", ".join(f"{k} = ?" for k in updates)
    conn.execute(f"UPDATE cases SET {sets} WHERE id = ?", (*updates.values(), case_id))
    if ctx.sender.kind != "agent":
        agents.notify(runtime, conn, case_id, "follow-up", ctx)
    return Result("appended", ctx.thread.reason, case_id, ctx.message.message_id)


def _analysed(
    conn: sqlite3.Connection, ctx: Context, case_id: int, row: int, wanted: bool
) -> Analysis | None:
    """The analysis made before the transaction; None when it was skipped, which the history says.

    The text is never read here instead: inside the transaction a slow read would hold the lock.
    Nothing is asked of the customer then, and the agent reads the mail itself.
    """
    analysis = ctx.analysis
    if analysis is not None and not analysis.skipped:
        return analysis
    if analysis is not None or wanted:
        why = analysis.skipped if analysis is not None else "the text was not read before the transaction"
        record(conn, case_id, "gateway", "analysis-skipped", "escalation fields not looked for", why, row)
    return None


def _collect_answers(conn: sqlite3.Connection, ctx: Context, case_id: int, row: int) -> None:
    analysis = _analysed(conn, ctx, case_id, row, True)
    if analysis is None:
        return
    fresh = case_fields.collect(conn, case_id, analysis.present)
    if fresh:
        record(conn, case_id, ctx.sender.address, "escalation-info-added", ", ".join(fresh), "", row)
    if fresh and case_fields.was_asked(conn, case_id) and not case_fields.still_missing(conn, case_id):
        record(conn, case_id, "gateway", "escalation-info-complete", "", "every asked field is present", row)


def _closed_long_ago(case: dict[str, Any], days: int) -> bool:
    closed = case.get("closed_at")
    return isinstance(closed, str) and clock.now() - clock.parse_iso(closed) > timedelta(days=days)


def close_resolved(runtime: Runtime) -> list[int]:
    """Close cases resolved more than service.autoclose_days ago (cron or the serve loop)."""
    cutoff = clock.iso(clock.now() - timedelta(days=runtime.config.service.autoclose_days))
    with runtime.store.write() as conn:
        ids = [
            r[0]
            for r in conn.execute(
                "SELECT id FROM cases WHERE status = 'resolved' AND resolved_at <= ?", (cutoff,)
            )
        ]
        for case_id in ids:
            conn.execute(
                "UPDATE cases SET status = 'closed', closed_at = ?, updated_at = ? WHERE id = ?",
                (clock.iso(), clock.iso(), case_id),
            )
            record(
                conn,
                case_id,
                "gateway",
                "closed",
                "resolved -> closed",
                f"resolved more than {runtime.config.service.autoclose_days} days ago",
            )
    return ids


def template_context(runtime: Runtime, ctx: Context, case: dict[str, Any] | None) -> dict[str, Any]:
    service, org, now = runtime.config.service, ctx.sender.organization, clock.now()
    return {
        "service": service,
        "case": case,
        "tag": f"{service.case_prefix}#{case['id']}" if case else "",
        "sender": ctx.sender,
        "organization": org,
        "local_support": org.contacts_with("local-support") if org else [],
        "technical": org.contacts_with("technical") if org else [],
        "subject": ctx.message.subject,
        "now": now,
        # Hours and the open/closed state come from config and the one calendar, never a template.
        "opening_hours": runtime.calendar.hours_text,
        "open_now": runtime.is_open(now),
        "on_call_alerted": False,
        "missing_keys": [],
    }


def reply(
    runtime: Runtime,
    conn: sqlite3.Connection,
    ctx: Context,
    case_id: int | None,
    event: str,
    context: dict[str, Any],
    budgeted: bool = True,
) -> list[str]:
    """Queue an automatic answer to the sender, unless the hourly brake says we have said enough.

    budgeted=False: the caller keeps its own budget (confirmation codes), and this one is untouched.
    """
    to = ctx.sender.address
    if not to:
        return []
    hour_ago = clock.iso(clock.now() - timedelta(hours=1))
    (count,) = conn.execute(
        "SELECT count(*) FROM auto_replies WHERE recipient = ? AND at > ?", (to, hour_ago)
    ).fetchone()
    if budgeted and count >= runtime.config.service.receipt_limit_per_hour:
        record(
            conn,
            case_id,
            "gateway",
            "reply-suppressed",
            event,
            f"{to} already had {count} automatic replies in the last hour",
        )
        loop_alerts.alert(runtime, conn, ctx, case_id, event, count)
        return []
    if not ctx.verdict.authenticated:
        # Our automatic mail must not lend our address to a stranger's words: only a defanged,
        # bounded echo of the subject, and never the body (README "What automatic mail repeats").
        case = context.get("case")
        context = context | {"subject": echo(str(context.get("subject", "")))}
        context["case"] = dict(case, subject=echo(case["subject"])) if case else case
        context["sender"] = replace(ctx.sender, name=echo(ctx.sender.name))
    rendered = runtime.templates.render(language_for(runtime, ctx), "customer", event, context)
    refs = [*ctx.message.references, ctx.message.message_id] if ctx.message.message_id else []
    mail = Outgoing(
        kind=event,
        to=[to],
        subject=rendered.subject,
        body=rendered.body,
        in_reply_to=ctx.message.message_id,
        references=refs,
        auto_submitted="auto-replied",
    )
    message_id = enqueue(conn, runtime.config, mail, case_id)
    if budgeted:
        conn.execute("INSERT INTO auto_replies (recipient, at) VALUES (?, ?)", (to, clock.iso()))
    record(conn, case_id, "gateway", "reply-queued", event, f"to {to} as {message_id}")
    return [message_id]


def _mark_bounced(conn: sqlite3.Connection, ctx: Context, row: int) -> None:
    for mid in screening.bounced_message_ids(ctx.message):
        # Only mail that has left can bounce: a forged report must not stop a queued receipt.
        found = conn.execute(
            "SELECT id, case_id FROM outbox WHERE message_id = ? AND status = 'sent'", (mid,)
        ).fetchone()
        if found is None:
            continue
        conn.execute(
            "UPDATE outbox SET status = 'failed', last_error = ? WHERE id = ?",
            (f"bounced: {ctx.message.subject}"[:300], found[0]),
        )
        record(conn, found[1], "gateway", "delivery-failed", mid, "a delivery status report came back", row)
