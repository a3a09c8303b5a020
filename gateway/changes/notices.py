"""Change notices: who gets them, the mail with its .ics, agents alerted when one is not delivered."""

# Delivery is part of the notice rule: the 8 working days only count once a notice reached
# someone. A notice's delivery state is its outbox row's. Two paths mark that row failed,
# and both call alert_undelivered in the same transaction, so the agents hear at once:
# a bounce (casework, after _mark_bounced) and a 5xx or give-up in the outbox (Deliverer._mark).
# `gateway change remind` runs it too, as a safety net for an alert that could not be sent
# (e.g. the registry was broken at that moment).

from __future__ import annotations

import logging
import sqlite3
from datetime import datetime, time
from typing import TYPE_CHECKING, Any

from gateway.cases.messages import store_message
from gateway.changes.calendar import MaintenanceWindow, invitation
from gateway.changes.record import Change, load, record
from gateway.core import clock
from gateway.core.config import Config
from gateway.core.workdays import WorkingCalendar
from gateway.directory.registry import Contact, Organization, Registry, RegistryError, load_registry
from gateway.flow.context import Context, Result
from gateway.mail import screening
from gateway.notices.templates import Templates
from gateway.outbox.queue import Deliverer, Outgoing, enqueue
from gateway.store.database import Store

if TYPE_CHECKING:
    from gateway.runtime import Runtime

log = logging.getLogger("gateway.changes")

KINDS = ("notice", "urgent", "update", "cancel", "reminder", "complete")
# Notices that announce the window itself; a reminder or an all-clear does not.
ANNOUNCING = ("notice", "urgent", "update")


def recipients(org: Organization, urgent: bool) -> list[tuple[Contact, list[str]]]:
    """Who hears about a change: Varslingspunkt Change, and Teknisk ansvarlig too when it is urgent."""
    wanted = ("change", "technical") if urgent else ("change",)
    found: dict[str, tuple[Contact, list[str]]] = {}
    for contact in org.contacts:
        if contact.role in wanted:
            found.setdefault(contact.email, (contact, []))[1].append(contact.role)
    return list(found.values())


def send(
    runtime: Runtime,
    conn: sqlite3.Connection,
    change: Change,
    kind: str,
    actor: str,
    previous: Change | None = None,
) -> list[str]:
    """Queue one notice per recipient address, so a bounce names exactly who did not get it."""
    registry = runtime.registry()
    sent: list[str] = []
    for org_id in change.organizations:
        org = registry.organizations.get(org_id)
        people = recipients(org, change.urgent) if org else []
        if org is None or not people:
            record(
                conn, change.id, "gateway", "notice-skipped", f"{org_id}: no change contact in the registry"
            )
            continue
        for contact, roles in people:
            _send_one(runtime, conn, change, kind, org, contact, roles, previous)
            sent.append(contact.email)
    record(conn, change.id, actor, f"{kind}-queued", ", ".join(sent))
    return sent


def _send_one(
    runtime: Runtime,
    conn: sqlite3.Connection,
    change: Change,
    kind: str,
    org: Organization,
    contact: Contact,
    roles: list[str],
    previous: Change | None,
) -> None:
    service = runtime.config.service
    context = {
        "service": service,
        "organization": org,
        "contact": contact,
        "roles": roles,
        "change": change,
        "previous": previous,
        "asks_input": change.urgent and "technical" in roles,
    }
    rendered = runtime.templates.render(org.language, "customer", f"change-{kind}", context)
    # Follow-ups thread under the first notice this recipient had about the change.
    first = conn.execute(
        "SELECT message_id FROM change_notices WHERE change_id = ? AND recipient = ? ORDER BY id LIMIT 1",
        (change.id, contact.email),
    ).fetchone()
    attachments = []
    if kind != "complete":
        window = MaintenanceWindow(
            uid=change.uid,
            sequence=change.sequence,
            summary=change.title,
            description="\n\n".join(t for t in (change.description, change.impact) if t),
            starts_at=change.starts_at,
            ends_at=change.ends_at,
            cancelled=kind == "cancel",
        )
        organizer = (service.name, service.address)
        ics = invitation(window, service.timezone, organizer, (contact.name, contact.email), clock.now())
        name = "endring" if org.language == "nb" else "change"
        # The summary and description are UTF-8 (æøå): a calendar part must say so, with its method.
        media_type = f"text/calendar; charset=utf-8; method={'CANCEL' if kind == 'cancel' else 'REQUEST'}"
        attachments.append((f"{name}-{change.id}.ics", media_type, ics))
    mail = Outgoing(
        kind=f"change-{kind}",
        to=[contact.email],
        subject=rendered.subject,
        body=rendered.body,
        in_reply_to=first[0] if first else "",
        references=[first[0]] if first else [],
        # Only the cron reminder is machine-made; the other notices carry an agent's words.
        auto_submitted="auto-generated" if kind == "reminder" else "",
        attachments=attachments,
    )
    message_id = enqueue(conn, runtime.config, mail, None)
    conn.execute(
        "INSERT INTO change_notices (change_id, organization, recipient, role, kind, sequence, message_id,"
        " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (change.id, org.id, contact.email, ",".join(roles), kind, change.sequence, message_id, clock.iso()),
    )


def alert_undelivered(conn: sqlite3.Connection, config: Config) -> int:
    """Alert every line-1 agent about each change notice that bounced or failed, once per notice."""
    rows = conn.execute(
        "SELECT n.id, n.change_id, n.organization, n.recipient, n.kind, n.message_id, o.last_error"
        " FROM outbox o JOIN change_notices n ON n.message_id = o.message_id"
        " WHERE o.status = 'failed' AND n.alerted_at IS NULL ORDER BY n.id"
    ).fetchall()
    if not rows:
        return 0
    try:
        registry = load_registry(config.registry.file)
    except RegistryError as exc:
        # Left unmarked, so the next failure or `gateway change remind` tries again.
        log.error("undelivered change notices not alerted yet, registry unusable: %s", exc)
        return 0
    templates = Templates(config.templates_dir, config.service.timezone)
    calendar = WorkingCalendar.with_opening_hours(config.service.timezone, config.service.opening_hours)
    for notice_id, change_id, org_id, recipient, kind, message_id, error in rows:
        change = load(conn, change_id)
        org = registry.organizations.get(org_id)
        deadline = calendar.last_notice_day(change.starts_at)
        context = {
            "service": config.service,
            "change": change,
            "organization_name": org.name if org else org_id,
            "recipient": recipient,
            "kind": kind,
            "message_id": message_id,
            "error": error,
            "notice_deadline": datetime.combine(deadline, time(12), tzinfo=calendar.tz),
        }
        told = _tell_agents(conn, config, templates, registry, "change-undelivered", context)
        conn.execute("UPDATE change_notices SET alerted_at = ? WHERE id = ?", (clock.iso(), notice_id))
        record(
            conn, change_id, "gateway", "notice-undelivered", f"{kind} to {recipient}: {error} (told {told})"
        )
    return len(rows)


def alert_on_bounce(runtime: Runtime, conn: sqlite3.Connection, ctx: Context) -> None:
    """A bounce may have failed a change notice: agents hear of it in the same transaction."""
    if ctx.automated is not None and screening.is_bounce(ctx.message):
        alert_undelivered(conn, runtime.config)


def deliverer(config: Config, store: Store) -> Deliverer:
    """The outbox's sender, wired so that a change notice failed for good reaches an agent at once."""
    return Deliverer(config, store, on_failed=lambda conn: alert_undelivered(conn, config))


def take_reply(runtime: Runtime, conn: sqlite3.Connection, ctx: Context) -> Result | None:
    """A reply to one of our change notices joins that change's record, opens no case, and is passed on."""
    if ctx.automated is not None or ctx.thread.case_id is not None:
        return None  # out-of-office answers and bounces go through the usual screening
    for mid in ctx.message.thread_ids:
        found = conn.execute("SELECT change_id FROM change_notices WHERE message_id = ?", (mid,)).fetchone()
        if found is not None:
            break
    else:
        return None
    change = load(conn, int(found[0]))
    row = store_message(conn, ctx, ctx.key, None, "change-reply", f"reply to change notice {mid}")
    # Nobody watches a change record by itself: an answer about timing must reach a person.
    context = {
        "service": runtime.config.service,
        "change": change,
        "sender": ctx.sender,
        "subject": ctx.message.subject,
        "body": ctx.message.body,
    }
    told = _tell_agents(conn, runtime.config, runtime.templates, runtime.registry(), "change-reply", context)
    record(conn, change.id, ctx.sender.address, "reply", f"{ctx.message.subject} (told {told})", row)
    reason = f"reply to change notice {mid} (change {change.id})"
    return Result("appended", reason, None, ctx.message.message_id)


def _tell_agents(
    conn: sqlite3.Connection,
    config: Config,
    templates: Templates,
    registry: Registry,
    event: str,
    context: dict[str, Any],
) -> str:
    """Queue a staff mail to every line-1 agent; returns who was told, for the change's history."""
    agents = sorted(a.email for a in registry.agents.values() if a.line == 1)
    if not agents:
        log.warning("%s for change %s: no line-1 agent in the registry", event, context["change"].id)
        return "nobody: no line-1 agent in the registry"
    rendered = templates.render(config.service.language, "staff", event, context)
    mail = Outgoing(
        kind=event,
        to=agents,
        subject=rendered.subject,
        body=rendered.body,
        auto_submitted="auto-generated",
    )
    enqueue(conn, config, mail, None)
    return ", ".join(agents)
