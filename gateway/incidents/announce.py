"""Telling the customer about monitoring incidents: one notice once the down holds, updates, the all-clear."""

# Each monitoring incident has a row in incident_notices. A run (serve's timer, or
# `gateway incident notify-due` from cron) takes the rows that need something, one transaction
# each: it re-reads the row inside BEGIN IMMEDIATE, queues the mail and moves the state on before
# COMMIT. A crash loses both or neither, and a second run at the same moment waits for the write
# lock and then finds the state already moved, so no notice is sent twice or never.
#
#   due       -> notified     still down at due_at: the notice (with every alert so far)
#   due       -> flapped      up again before due_at: the customer hears nothing
#   due       -> resolved     up after due_at but before a run noticed: notice, then the all-clear
#   notified  -> notified     alerts joined the case since: one update naming them
#   notified  -> resolved     every alert is up: the all-clear
#   due       -> unreachable  no Varslingspunkt Incidents in the registry: the case says so

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from gateway.core import clock
from gateway.directory.registry import Organization
from gateway.incidents.detected import IncidentRefused, send_notice
from gateway.store.case_rows import existing_case, record

if TYPE_CHECKING:
    from gateway.runtime import Runtime

log = logging.getLogger("gateway.incidents")
ACTOR = "monitoring"

# The customer's words, in the organisation's language: NAV's own subject ("Box … is down") is
# English whatever the customer reads, so it stays on the case for the agents and goes no further.
WORDS = {
    "nb": {
        "notice": "Berørt utstyr: {}.",
        "update": "Nye varsler fra overvåkingen gjelder: {}.",
        "boxState": "{} svarer ikke",
        "other": "Feil meldt på {}",
    },
    "en": {
        "notice": "Equipment affected: {}.",
        "update": "New monitoring alerts concern: {}.",
        "boxState": "{} is not responding",
        "other": "Fault reported on {}",
    },
}


@dataclass(frozen=True)
class Alerts:
    """The alerts paired with one incident case, oldest first."""

    devices: list[str]
    first_event: str
    serious: bool

    @property
    def count(self) -> int:
        return len(self.devices)


def schedule(conn: sqlite3.Connection, case_id: int, org_id: str, after_minutes: int) -> None:
    """Note a new monitoring incident: its notice is due once it has been down `after_minutes`."""
    now = clock.now()
    conn.execute(
        "INSERT OR IGNORE INTO incident_notices (case_id, organization, detected_at, due_at)"
        " VALUES (?, ?, ?, ?)",
        (case_id, org_id, clock.iso(now), clock.iso(now + timedelta(minutes=after_minutes))),
    )


def all_up(conn: sqlite3.Connection, case_id: int) -> None:
    """Every alert on the incident is up again: the all-clear (or nothing, if it flapped) is due."""
    conn.execute(
        "UPDATE incident_notices SET ended_at = ? WHERE case_id = ? AND ended_at IS NULL",
        (clock.iso(), case_id),
    )


def notify_due(runtime: Runtime) -> list[str]:
    """Send whatever monitoring incidents are owed now; one line per thing done."""
    candidates = runtime.store.query(
        "SELECT case_id FROM incident_notices WHERE state IN ('due', 'notified')"
        " AND (state = 'notified' OR ended_at IS NOT NULL OR due_at <= ?) ORDER BY case_id",
        (clock.iso(),),
    )
    done: list[str] = []
    for row in candidates:
        with runtime.store.write() as conn:
            outcome = _advance(runtime, conn, int(row["case_id"]))
        if outcome:
            done.append(outcome)
    return done


def _advance(runtime: Runtime, conn: sqlite3.Connection, case_id: int) -> str | None:
    row = _row(conn, case_id)
    if row is None or row["state"] not in ("due", "notified"):
        return None  # another run got here first
    tag = f"{runtime.config.service.case_prefix}#{case_id}"
    ended = row["ended_at"]
    if row["state"] == "due":
        if ended is None and row["due_at"] > clock.iso():
            return None
        skipped = _not_owed(conn, row)
        if skipped is not None:
            state, why = skipped
            _set(conn, case_id, state=state)
            record(conn, case_id, ACTOR, "notice-skipped", state, why)
            return f"{tag}: {why}, customer not told"
    org = runtime.registry().organizations.get(row["organization"])
    if org is None:
        return _unreachable(conn, case_id, tag, f"organisation {row['organization']!r} left the registry")
    alerts = _alerts(conn, case_id, org)
    if row["state"] == "notified" and ended is None and alerts.count <= row["alerts_told"]:
        return None
    case = {**existing_case(conn, case_id), "subject": _title(org, alerts)}
    # Teknisk ansvarlig hears of it once something serious happened outside opening hours, and
    # then of everything that follows, so the all-clear reaches whoever got the alarm.
    technical = bool(row["technical"]) or (alerts.serious and not _open_now(runtime))
    roles = ("incidents", "technical") if technical else ("incidents",)
    try:
        if row["state"] == "due":
            _notice(runtime, conn, case, org, alerts, roles, row)
        elif alerts.count > row["alerts_told"]:
            new = _devices(org, "update", alerts.devices[row["alerts_told"] :])
            send_notice(runtime, conn, case, org, "incident-update", new, ACTOR, roles)
        if ended is not None:
            when = clock.parse_iso(ended)
            send_notice(runtime, conn, case, org, "incident-resolved", "", ACTOR, roles, when)
    except IncidentRefused as exc:
        return _unreachable(conn, case_id, tag, str(exc))
    state = "resolved" if ended is not None else "notified"
    _set(conn, case_id, state=state, alerts_told=alerts.count, technical=int(technical))
    now = clock.iso()
    conn.execute(
        "UPDATE incident_notices SET notified_at = coalesce(notified_at, ?),"
        " resolved_sent_at = CASE WHEN state = 'resolved' THEN ? END WHERE case_id = ?",
        (now, now, case_id),
    )
    return f"{tag}: {state}" + (" (Teknisk ansvarlig too)" if technical else "")


def _row(conn: sqlite3.Connection, case_id: int) -> dict[str, Any] | None:
    cursor = conn.execute("SELECT * FROM incident_notices WHERE case_id = ?", (case_id,))
    found = cursor.fetchone()
    return dict(zip([d[0] for d in cursor.description], found, strict=True)) if found else None


def _not_owed(conn: sqlite3.Connection, row: dict[str, Any]) -> tuple[str, str] | None:
    """Why an incident whose notice was never sent needs none now: (its new state, the reason), or None."""
    if row["ended_at"] is not None and row["ended_at"] < row["due_at"]:
        return "flapped", "up again within the window"
    if row["ended_at"] is None and _closed_by_staff(conn, row["case_id"]):
        # An agent resolved it while NAV still says down: they have dealt with the customer.
        return "resolved", "resolved by an agent before the notice was due"
    return None


def _closed_by_staff(conn: sqlite3.Connection, case_id: int) -> bool:
    status = conn.execute("SELECT status FROM cases WHERE id = ?", (case_id,)).fetchone()
    return status is None or status[0] in ("resolved", "closed")


def _notice(
    runtime: Runtime,
    conn: sqlite3.Connection,
    case: dict[str, Any],
    org: Organization,
    alerts: Alerts,
    roles: tuple[str, ...],
    row: dict[str, Any],
) -> None:
    detected = clock.parse_iso(row["detected_at"])
    message = _devices(org, "notice", alerts.devices)
    send_notice(runtime, conn, case, org, "incident-notice", message, ACTOR, roles, detected)


def _open_now(runtime: Runtime) -> bool:
    # The one place monitoring asks whether the customer is inside opening hours.
    return runtime.is_open(clock.now())


def _alerts(conn: sqlite3.Connection, case_id: int, org: Organization) -> Alerts:
    rows = conn.execute(
        "SELECT device, event_type FROM monitoring_alerts WHERE case_id = ? ORDER BY started_at, history_id",
        (case_id,),
    ).fetchall()
    serious = any(event == "boxState" or org.is_critical_device(device) for device, event in rows)
    return Alerts([device for device, _ in rows], rows[0][1] if rows else "", serious)


def _devices(org: Organization, kind: str, devices: list[str]) -> str:
    unique = list(dict.fromkeys(devices))
    return WORDS.get(org.language, WORDS["nb"])[kind].format(", ".join(unique))


def _title(org: Organization, alerts: Alerts) -> str:
    """What the customer's mail calls the incident: its first device, and whether the box is down."""
    kind = "boxState" if alerts.first_event == "boxState" else "other"
    first = alerts.devices[0] if alerts.devices else org.name
    return WORDS.get(org.language, WORDS["nb"])[kind].format(first)


def _unreachable(conn: sqlite3.Connection, case_id: int, tag: str, why: str) -> str:
    # The agents heard of the incident when it opened; the case now says the customer was not told.
    _set(conn, case_id, state="unreachable")
    record(conn, case_id, ACTOR, "notice-failed", "customer not told", why)
    log.warning("%s: incident notice not sent: %s", tag, why)
    return f"{tag}: not sent: {why}"


def _set(conn: sqlite3.Connection, case_id: int, **values: Any) -> None:
    columns = ", ".join(f"{name} = ?" for name in values)
    conn.execute(f"UPDATE incident_notices SET {columns} WHERE case_id = ?", (*values.values(), case_id))
