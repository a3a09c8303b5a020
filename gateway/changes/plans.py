"""Changes the centre makes in customers' networks: plan, move, cancel, complete, remind; the notice rule."""

# The rule (DOMAIN.md, seeds): a planned change is announced to each organisation's
# Varslingspunkt Change at least 8 working days before it starts, counted by
# WorkingCalendar.earliest_change_start from the day the notice goes out (Oslo time).
# An urgent change skips the rule, and its Teknisk ansvarlig contacts are asked for input.
# Moving a change later keeps the notice customers already had; moving it earlier is
# held to the rule again from today.

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from gateway.changes import notices as change_notices
from gateway.changes.notices import ANNOUNCING
from gateway.changes.record import Change, ChangeNotFound, load, record
from gateway.core import clock
from gateway.directory.registry import Registry

if TYPE_CHECKING:
    from gateway.runtime import Runtime

__all__ = [
    "ChangeNotFound",
    "ChangeRefused",
    "cancel_change",
    "complete_change",
    "local_time",
    "plan_change",
    "reschedule_change",
    "send_reminders",
]


class ChangeRefused(ValueError):
    """A change request that breaks a rule; the message says which, and what would be allowed."""


def local_time(value: str, timezone: str) -> datetime:
    """A window boundary as an operator writes it; without an offset it is service-local time."""
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ChangeRefused(f"{value!r} is not a time; write it like 2026-04-08 22:00") from None
    if moment.tzinfo is not None:
        return moment
    zone = ZoneInfo(timezone)
    aware = moment.replace(tzinfo=zone)
    # 02:30 on the last Sunday of March does not exist in Oslo; refuse rather than guess an hour.
    if aware.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != moment:
        raise ChangeRefused(f"{value} does not exist in {timezone} (daylight saving time starts then)")
    return aware


def plan_change(
    runtime: Runtime,
    orgs: Sequence[str],
    start: datetime,
    end: datetime,
    title: str,
    description: str,
    impact: str,
    urgent: bool,
    actor: str,
    conn: sqlite3.Connection | None = None,
) -> int:
    """Record a change and queue its notices; a planned change announced too late is refused.

    Pass `conn` when already inside a write transaction (agent mail, in the pipeline's own):
    everything is checked before the first write, so a refusal leaves that transaction clean.
    """
    tz = runtime.config.service.timezone
    start, end = _aware(start, tz), _aware(end, tz)
    wanted = list(dict.fromkeys(o.strip() for o in orgs if o.strip()))
    _check_organizations(runtime.registry(), wanted)
    if not title.strip():
        raise ChangeRefused("a change needs a title")
    _check_window(runtime, start, end, notice_rule=not urgent)
    if conn is None:
        with runtime.store.write() as own:
            return _insert(runtime, own, wanted, start, end, title, description, impact, urgent, actor)
    return _insert(runtime, conn, wanted, start, end, title, description, impact, urgent, actor)


def _insert(
    runtime: Runtime,
    conn: sqlite3.Connection,
    orgs: list[str],
    start: datetime,
    end: datetime,
    title: str,
    description: str,
    impact: str,
    urgent: bool,
    actor: str,
) -> int:
    now = clock.iso()
    uid = f"change-{clock.token(10)}@{runtime.config.service.domain}"
    cursor = conn.execute(
        "INSERT INTO changes (uid, title, description, impact, urgent, status, starts_at, ends_at,"
        " sequence, created_by, created_at, updated_at)"
        " VALUES (?, ?, ?, ?, ?, 'planned', ?, ?, 0, ?, ?, ?)",
        (
            uid,
            title.strip(),
            description.strip(),
            impact.strip(),
            int(urgent),
            clock.iso(start),
            clock.iso(end),
            actor,
            now,
            now,
        ),
    )
    change_id = int(cursor.lastrowid or 0)
    conn.executemany(
        "INSERT INTO change_organizations (change_id, organization) VALUES (?, ?)",
        [(change_id, org) for org in orgs],
    )
    record(conn, change_id, actor, "planned", f"{_window(start, end)} for {', '.join(orgs)}")
    change_notices.send(runtime, conn, load(conn, change_id), "urgent" if urgent else "notice", actor)
    return change_id


def reschedule_change(
    runtime: Runtime, change_id: int, start: datetime, end: datetime, urgent: bool, actor: str
) -> None:
    """Move a change's window; customers' calendars get the same event with a higher SEQUENCE."""
    tz = runtime.config.service.timezone
    start, end = _aware(start, tz), _aware(end, tz)
    with runtime.store.write() as conn:
        change = _planned(conn, change_id)
        urgent = urgent or change.urgent
        _check_window(runtime, start, end, notice_rule=not urgent and start < change.starts_at)
        conn.execute(
            "UPDATE changes SET starts_at = ?, ends_at = ?, urgent = ?, sequence = sequence + 1,"
            " updated_at = ? WHERE id = ?",
            (clock.iso(start), clock.iso(end), int(urgent), clock.iso(), change_id),
        )
        moved = f"{_window(change.starts_at, change.ends_at)} -> {_window(start, end)}"
        record(conn, change_id, actor, "rescheduled", moved)
        change_notices.send(runtime, conn, load(conn, change_id), "update", actor, previous=change)


def cancel_change(runtime: Runtime, change_id: int, actor: str) -> None:
    """Call a change off; the notice carries METHOD:CANCEL so calendars drop the window."""
    with runtime.store.write() as conn:
        _planned(conn, change_id)
        conn.execute(
            "UPDATE changes SET status = 'cancelled', sequence = sequence + 1, updated_at = ? WHERE id = ?",
            (clock.iso(), change_id),
        )
        record(conn, change_id, actor, "cancelled")
        change_notices.send(runtime, conn, load(conn, change_id), "cancel", actor)


def complete_change(runtime: Runtime, change_id: int, actor: str) -> None:
    """Tell the customers the work is done; only once the window has begun."""
    with runtime.store.write() as conn:
        change = _planned(conn, change_id)
        if clock.now() < change.starts_at:
            raise ChangeRefused(
                f"change {change_id} has not started yet (starts {_window(change.starts_at)})"
            )
        conn.execute(
            "UPDATE changes SET status = 'completed', updated_at = ? WHERE id = ?", (clock.iso(), change_id)
        )
        record(conn, change_id, actor, "completed")
        change_notices.send(runtime, conn, replace(change, status="completed"), "complete", actor)


def send_reminders(runtime: Runtime) -> list[int]:
    """Remind on the working day before each change starts, once per version of the window (cron)."""
    calendar = runtime.calendar
    now = clock.now()
    today = now.astimezone(calendar.tz).date()
    reminded: list[int] = []
    with runtime.store.write() as conn:
        # The working day before is never more than a fortnight back, even around Easter.
        due = conn.execute(
            "SELECT id FROM changes WHERE status = 'planned' AND starts_at > ? AND starts_at < ?"
            " ORDER BY starts_at",
            (clock.iso(now), clock.iso(now + timedelta(days=14))),
        ).fetchall()
        for (change_id,) in due:
            change = load(conn, change_id)
            remind_day = calendar.working_days_before(change.starts_at, 1)
            if today >= remind_day and _not_yet_reminded(conn, change, calendar.tz, remind_day):
                change_notices.send(runtime, conn, change, "reminder", "gateway")
                reminded.append(change_id)
        change_notices.alert_undelivered(conn, runtime.config)
    return reminded


def _not_yet_reminded(conn: sqlite3.Connection, change: Change, tz: tzinfo, remind_day: date) -> bool:
    reminded = conn.execute(
        "SELECT 1 FROM change_notices WHERE change_id = ? AND kind = 'reminder' AND sequence = ?",
        (change.id, change.sequence),
    ).fetchone()
    (announced,) = conn.execute(
        "SELECT max(created_at) FROM change_notices WHERE change_id = ? AND kind IN (?, ?, ?)",
        (change.id, *ANNOUNCING),
    ).fetchone()
    # Someone told on the reminder day itself (an urgent change, a late move) needs no second mail.
    fresh = announced is not None and clock.parse_iso(announced).astimezone(tz).date() >= remind_day
    return reminded is None and not fresh


def _planned(conn: sqlite3.Connection, change_id: int) -> Change:
    change = load(conn, change_id)
    if change.status != "planned":
        raise ChangeRefused(f"change {change_id} is {change.status}; only a planned change can be changed")
    return change


def _aware(moment: datetime, timezone: str) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=ZoneInfo(timezone))


def _window(start: datetime, end: datetime | None = None) -> str:
    text = start.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"{text} to {end.astimezone(UTC):%Y-%m-%d %H:%M UTC}" if end else text


def _check_organizations(registry: Registry, wanted: list[str]) -> None:
    if not wanted:
        raise ChangeRefused("name at least one organisation (--org ID[,ID…])")
    for org_id in wanted:
        org = registry.organizations.get(org_id)
        if org is None:
            known = ", ".join(sorted(registry.organizations))
            raise ChangeRefused(f"unknown organisation {org_id!r} (known: {known})")
        if not org.contacts_with("change"):
            raise ChangeRefused(f"{org_id} has no Varslingspunkt Change (role 'change') in the registry")


def _check_window(runtime: Runtime, start: datetime, end: datetime, notice_rule: bool) -> None:
    if end <= start:
        raise ChangeRefused("the window must end after it starts")
    now = clock.now()
    if start <= now:
        raise ChangeRefused(f"the window starts in the past ({_window(start)})")
    if not notice_rule:
        return
    calendar = runtime.calendar
    today = now.astimezone(calendar.tz).date()
    earliest = calendar.earliest_change_start(today)
    if start.astimezone(calendar.tz).date() < earliest:
        raise ChangeRefused(
            f"too short notice: a planned change needs {calendar.notice_days} working days' notice, so one"
            f" announced on {today:%A} {today} may start on {earliest:%A} {earliest} at the earliest;"
            " move the start, or plan it as urgent (--urgent)"
        )
