"""Alert mail from the monitoring system (NAV): open, update and resolve incidents by device."""

# NAV's e-mail dispatcher puts what we need in headers (the body is a human template):
#   X-NAV-Alert-State       start | end | stateless
#   X-NAV-Alert-Netbox      the device's sysname, matched against organization.devices
#   X-NAV-Alert-History-ID  the same on a "down" mail and its "up" mail: the pairing key
#   X-NAV-Event-Type        boxState, linkState, …
# No header carries severity, so a whole box going down is "high" and the rest "normal".
# NAV mail is never answered: no receipt, no rule runs on it.

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, replace
from ipaddress import ip_address, ip_network
from typing import TYPE_CHECKING

from gateway.cases.agents import notify as notify_agents
from gateway.cases.messages import store_message
from gateway.changes.record import in_progress
from gateway.changes.record import record as record_on_change
from gateway.core import clock
from gateway.core.config import MonitoringConfig
from gateway.directory.registry import Organization
from gateway.flow.context import Context, Result
from gateway.incidents.announce import all_up, schedule
from gateway.incidents.detected import open_case
from gateway.mail.message import InboundMessage
from gateway.store.case_rows import record

if TYPE_CHECKING:
    from gateway.runtime import Runtime

STATE_HEADER = "x-nav-alert-state"
STATES = ("start", "end", "stateless")


@dataclass(frozen=True)
class Alert:
    state: str
    device: str
    history_id: str
    event_type: str
    subject: str


def is_alert(message: InboundMessage, senders: tuple[str, ...]) -> bool:
    """NAV's headers from a configured NAV sender; with none configured, NAV headers mean nothing."""
    return message.from_addr in senders and bool(message.header(STATE_HEADER).strip())


def proof(config: MonitoringConfig, ctx: Context) -> str | None:
    """How this alert proves it came from NAV, or None: a From header alone proves nothing."""
    if ctx.verdict.authenticated:
        return ctx.verdict.reason  # DKIM aligned with the sender's domain, or our MTA's verdict
    arrival = ctx.arrival
    if arrival is None or not config.recipient or config.recipient not in arrival.recipients:
        return None
    try:
        client = ip_address(arrival.client_address)
    except ValueError:
        return None
    if any(client in ip_network(net, strict=False) for net in config.client_addresses):
        return f"sent to {config.recipient} from {client}"
    return None


def read_alert(message: InboundMessage) -> Alert:
    return Alert(
        state=message.header(STATE_HEADER).strip().lower(),
        device=message.header("x-nav-alert-netbox").strip(),
        history_id=message.header("x-nav-alert-history-id").strip(),
        event_type=message.header("x-nav-event-type").strip(),
        subject=message.subject or "(NAV alert)",
    )


def take_alert(runtime: Runtime, conn: sqlite3.Connection, ctx: Context) -> Result | None:
    """A NAV alert from a proven monitoring sender is paired here and never answered.

    An unproven one goes on as ordinary mail from a stranger (the rules hold it), so a forged
    "down" opens nothing and a forged "up" resolves nothing.
    """
    config = runtime.config.monitoring
    if not is_alert(ctx.message, config.senders) or proof(config, ctx) is None:
        return None
    return handle(runtime, conn, ctx, ctx.key)


def handle(runtime: Runtime, conn: sqlite3.Connection, ctx: Context, key: str) -> Result:
    """Store a NAV alert and pair it with an incident case, a planned change, or an agent's triage."""
    alert = read_alert(ctx.message)
    if alert.state not in STATES:
        return _hold(conn, ctx, key, f"NAV alert with unknown state {alert.state!r}")
    if not alert.device:
        return _hold(conn, ctx, key, "NAV alert without X-NAV-Alert-Netbox: no device to place")
    if alert.state != "stateless" and not alert.history_id:
        return _hold(
            conn, ctx, key, f"NAV {alert.state} alert without X-NAV-Alert-History-ID: cannot pair it"
        )
    org = runtime.registry().organization_of_device(alert.device)
    if org is None:
        return _hold(
            conn, ctx, key, f"NAV alert for unknown device {alert.device!r}: no organisation's devices match"
        )
    if alert.state == "start":
        # The customer side is the organisation's Varslingspunkt Incidents, never whoever sent the
        # alert; without one, the centre itself, as for incidents the centre detects.
        point = next(iter(org.contacts_with("incidents")), None)
        service = runtime.config.service
        requester = (point.email, point.name) if point else (service.address, service.name)
        result = _start(conn, ctx, key, alert, org, requester)
        if result.outcome == "opened" and result.case_id is not None:
            # The customer hears of it only if it is still down after the window (incidents/announce.py);
            # 1st line hears of it now, with a Reply-To into the case.
            schedule(conn, result.case_id, org.id, runtime.config.monitoring.notify_after_minutes)
            # NAV is no contact of the organisation; the agents' mail names whose network it is.
            nav = replace(ctx.sender, name=ctx.sender.name or "NAV", organization=org)
            told = replace(ctx, sender=nav)
            notify_agents(runtime, conn, result.case_id, "new-case", told, missing=[])
        return result
    if alert.state == "end":
        return _end(conn, ctx, key, alert)
    return _stateless(conn, ctx, key, alert)


def _start(
    conn: sqlite3.Connection,
    ctx: Context,
    key: str,
    alert: Alert,
    org: Organization,
    requester: tuple[str, str],
) -> Result:
    mid = ctx.message.message_id
    paired = conn.execute(
        "SELECT case_id, change_id FROM monitoring_alerts WHERE history_id = ?", (alert.history_id,)
    ).fetchone()
    if paired is not None:
        return _note(conn, ctx, key, paired[0], paired[1], "alert-repeated", alert)
    change_id = in_progress(conn, org.id, clock.now())
    if change_id is not None:
        # A device going down inside an announced window is the change working, not an incident.
        _pair(conn, alert, org.id, None, change_id)
        return _note(conn, ctx, key, None, change_id, "alert-expected", alert)
    case_id = _open_case_for(conn, alert.device)
    if case_id is not None:
        _pair(conn, alert, org.id, case_id, None)
        return _note(conn, ctx, key, case_id, None, "alert-added", alert)
    priority = "high" if alert.event_type == "boxState" else "normal"
    case_id = open_case(
        conn, org, alert.subject, requester, priority, "monitoring", f"NAV {alert.event_type} start"
    )
    _pair(conn, alert, org.id, case_id, None)
    row = store_message(conn, ctx, key, case_id, "case", "NAV alert opened the case")
    record(conn, case_id, "monitoring", "alert-start", alert.device, _why(alert), row)
    return Result("opened", f"NAV alert for {alert.device} ({org.id})", case_id, mid)


def _end(conn: sqlite3.Connection, ctx: Context, key: str, alert: Alert) -> Result:
    paired = conn.execute(
        "SELECT case_id, change_id FROM monitoring_alerts WHERE history_id = ?", (alert.history_id,)
    ).fetchone()
    if paired is None:
        # An "up" whose "down" we never saw (it came before we ran, or went elsewhere).
        return _note(conn, ctx, key, _open_case_for(conn, alert.device), None, "alert-end-unpaired", alert)
    conn.execute(
        "UPDATE monitoring_alerts SET ended_at = ? WHERE history_id = ? AND ended_at IS NULL",
        (clock.iso(), alert.history_id),
    )
    case_id, change_id = paired
    result = _note(conn, ctx, key, case_id, change_id, "alert-end", alert)
    if case_id is not None and not _still_alerting(conn, case_id):
        all_up(conn, case_id)
        _resolve(conn, case_id, alert)
    return result


def _stateless(conn: sqlite3.Connection, ctx: Context, key: str, alert: Alert) -> Result:
    return _note(conn, ctx, key, _open_case_for(conn, alert.device), None, "alert-noted", alert)


def _note(
    conn: sqlite3.Connection,
    ctx: Context,
    key: str,
    case_id: int | None,
    change_id: int | None,
    action: str,
    alert: Alert,
) -> Result:
    """Store the alert on its case or change, or as plain monitoring mail when it belongs to neither."""

    mid = ctx.message.message_id
    if case_id is not None:
        row = store_message(conn, ctx, key, case_id, "case", f"NAV {alert.state} alert")
        record(conn, case_id, "monitoring", action, alert.device, _why(alert), row)
        conn.execute("UPDATE cases SET updated_at = ? WHERE id = ?", (clock.iso(), case_id))
        return Result(
            "appended", f"NAV {alert.state} alert for {alert.device} on case {case_id}", case_id, mid
        )
    if change_id is not None:
        row = store_message(conn, ctx, key, None, "change-alert", f"during change {change_id}")
        record_on_change(conn, change_id, "monitoring", action, f"{alert.device}: {alert.subject}", row)
        return Result("appended", f"NAV alert for {alert.device} expected: change {change_id}", None, mid)
    store_message(conn, ctx, key, None, "monitoring", f"{action}: no open case for {alert.device}")
    return Result("ignored", f"NAV {alert.state} alert for {alert.device}: no open case", None, mid)


def _hold(conn: sqlite3.Connection, ctx: Context, key: str, reason: str) -> Result:

    store_message(conn, ctx, key, None, "held", reason)
    return Result("held", reason, None, ctx.message.message_id)


def _pair(
    conn: sqlite3.Connection, alert: Alert, org: str, case_id: int | None, change_id: int | None
) -> None:
    conn.execute(
        "INSERT INTO monitoring_alerts (history_id, device, organization, event_type, case_id, change_id,"
        " started_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (alert.history_id, alert.device, org, alert.event_type, case_id, change_id, clock.iso()),
    )


def _open_case_for(conn: sqlite3.Connection, device: str) -> int | None:
    """The newest unresolved case a NAV alert for this device opened or joined."""
    row = conn.execute(
        "SELECT a.case_id FROM monitoring_alerts a JOIN cases c ON c.id = a.case_id"
        " WHERE a.device = ? AND c.status NOT IN ('resolved', 'closed') ORDER BY c.id DESC LIMIT 1",
        (device,),
    ).fetchone()
    return int(row[0]) if row else None


def _still_alerting(conn: sqlite3.Connection, case_id: int) -> bool:
    row = conn.execute(
        "SELECT 1 FROM monitoring_alerts WHERE case_id = ? AND ended_at IS NULL LIMIT 1", (case_id,)
    ).fetchone()
    return row is not None


def _resolve(conn: sqlite3.Connection, case_id: int, alert: Alert) -> None:
    status = conn.execute("SELECT status FROM cases WHERE id = ?", (case_id,)).fetchone()[0]
    if status in ("resolved", "closed"):
        return
    now = clock.iso()
    conn.execute(
        "UPDATE cases SET status = 'resolved', resolved_at = ?, updated_at = ? WHERE id = ?",
        (now, now, case_id),
    )
    record(conn, case_id, "monitoring", "resolved", f"{status} -> resolved", f"NAV: {alert.subject}")


def _why(alert: Alert) -> str:
    return f"NAV {alert.event_type or 'alert'} {alert.state} (history {alert.history_id or '-'})"
