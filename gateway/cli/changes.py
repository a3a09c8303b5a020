"""`gateway change …`: plan and update changes; list and show who was notified and whether it arrived."""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable
from datetime import date
from typing import TYPE_CHECKING, Any

from gateway.changes.notices import ANNOUNCING
from gateway.changes.plans import (
    ChangeNotFound,
    ChangeRefused,
    cancel_change,
    complete_change,
    local_time,
    plan_change,
    reschedule_change,
    send_reminders,
)
from gateway.cli.common import EX_NOINPUT, EX_OK, print_json, run_action
from gateway.core import clock
from gateway.core.workdays import WorkingCalendar
from gateway.store.database import Store, open_store

if TYPE_CHECKING:
    from gateway.core.config import Config
    from gateway.runtime import Runtime

_CHANGE_FIELDS = (
    "id, uid, title, description, impact, urgent, status, starts_at, ends_at, sequence, created_by,"
    " created_at, updated_at"
)


def list_changes(store: Store, calendar: WorkingCalendar) -> list[dict[str, Any]]:
    """Every change, latest window first, with its organisations and how its notices fared."""
    rows = store.query(f"SELECT {_CHANGE_FIELDS} FROM changes ORDER BY starts_at DESC, id DESC")
    return [_summary(store, row, calendar) for row in rows]


def show_change(store: Store, change_id: int, calendar: WorkingCalendar) -> dict[str, Any] | None:
    """One change: its window, each notice with its delivery, and its history (replies, alerts)."""
    row = store.one(f"SELECT {_CHANGE_FIELDS} FROM changes WHERE id = ?", (change_id,))
    if row is None:
        return None
    view = _summary(store, row, calendar)
    view["history"] = store.query(
        "SELECT e.at, e.actor, e.action, e.detail, m.from_addr AS message_from, m.subject AS message_subject,"
        " m.body AS message_body FROM change_events e LEFT JOIN messages m ON m.id = e.message"
        " WHERE e.change_id = ? ORDER BY e.id",
        (change_id,),
    )
    return view


def _summary(store: Store, row: dict[str, Any], calendar: WorkingCalendar) -> dict[str, Any]:
    starts = clock.parse_iso(row["starts_at"])
    notices = store.query(
        "SELECT n.organization, n.recipient, n.role, n.kind, n.sequence, n.message_id,"
        " n.created_at AS queued_at, o.sent_at, o.status AS delivery, o.last_error AS error, n.alerted_at"
        " FROM change_notices n JOIN outbox o ON o.message_id = n.message_id"
        " WHERE n.change_id = ? ORDER BY n.id",
        (row["id"],),
    )
    orgs = store.query(
        "SELECT organization FROM change_organizations WHERE change_id = ? ORDER BY organization",
        (row["id"],),
    )
    deadline = calendar.last_notice_day(starts)
    return {
        **row,
        "urgent": bool(row["urgent"]),
        "starts_at": starts.astimezone(calendar.tz).isoformat(),
        "ends_at": clock.parse_iso(row["ends_at"]).astimezone(calendar.tz).isoformat(),
        "last_notice_day": deadline.isoformat(),
        "organizations": [_reach(o["organization"], notices, calendar, deadline) for o in orgs],
        "notices": notices,
    }


def _reach(
    org: str, notices: list[dict[str, Any]], calendar: WorkingCalendar, deadline: date
) -> dict[str, Any]:
    """Whether the window's announcement reached someone at this organisation, and in time for the rule."""
    arrived = sorted(
        n["sent_at"]
        for n in notices
        if n["organization"] == org and n["kind"] in ANNOUNCING and n["delivery"] == "sent"
    )
    first = clock.parse_iso(arrived[0]).astimezone(calendar.tz).date() if arrived else None
    return {
        "id": org,
        "reached": bool(arrived),
        "first_reached_at": arrived[0] if arrived else None,
        "in_time": first is not None and first <= deadline,
    }


def _write(config: Config, action: Callable[[Runtime], str]) -> int:
    return run_action(config, action, (ChangeRefused,), (ChangeNotFound,))


def _recipients(runtime: Runtime, change_id: int, kind: str) -> str:
    rows = runtime.store.query(
        "SELECT DISTINCT recipient FROM change_notices WHERE change_id = ? AND kind = ? ORDER BY recipient",
        (change_id, kind),
    )
    return ", ".join(r["recipient"] for r in rows) or "nobody"


def cmd_plan(config: Config, args: argparse.Namespace) -> int:
    def action(runtime: Runtime) -> str:
        tz = config.service.timezone
        change_id = plan_change(
            runtime,
            args.org.split(","),
            local_time(args.start, tz),
            local_time(args.end, tz),
            args.title,
            args.description,
            args.impact,
            args.urgent,
            getpass.getuser(),
        )
        kind = "urgent" if args.urgent else "notice"
        return f"change {change_id} planned; {kind} queued to {_recipients(runtime, change_id, kind)}"

    return _write(config, action)


def cmd_reschedule(config: Config, args: argparse.Namespace) -> int:
    def action(runtime: Runtime) -> str:
        tz = config.service.timezone
        start, end = local_time(args.start, tz), local_time(args.end, tz)
        reschedule_change(runtime, args.id, start, end, args.urgent, getpass.getuser())
        return f"change {args.id} moved; update queued to {_recipients(runtime, args.id, 'update')}"

    return _write(config, action)


def cmd_cancel(config: Config, args: argparse.Namespace) -> int:
    def action(runtime: Runtime) -> str:
        cancel_change(runtime, args.id, getpass.getuser())
        return f"change {args.id} cancelled; cancellation queued to {_recipients(runtime, args.id, 'cancel')}"

    return _write(config, action)


def cmd_complete(config: Config, args: argparse.Namespace) -> int:
    def action(runtime: Runtime) -> str:
        complete_change(runtime, args.id, getpass.getuser())
        return f"change {args.id} completed; all-clear queued to {_recipients(runtime, args.id, 'complete')}"

    return _write(config, action)


def cmd_remind(config: Config, args: argparse.Namespace) -> int:
    def action(runtime: Runtime) -> str:
        reminded = send_reminders(runtime)
        return f"reminders queued for {len(reminded)} change(s)" + (f": {reminded}" if reminded else "")

    return _write(config, action)


def cmd_list(config: Config, args: argparse.Namespace) -> int:
    calendar = WorkingCalendar.with_opening_hours(config.service.timezone, config.service.opening_hours)
    rows = list_changes(open_store(config.storage), calendar)
    if args.json:
        print_json(rows)
        return EX_OK
    for row in rows:
        counts = {s: sum(n["delivery"] == s for n in row["notices"]) for s in ("sent", "queued", "failed")}
        orgs = ",".join(o["id"] for o in row["organizations"])
        kind = "urgent" if row["urgent"] else ""
        print(
            f"{row['id']:<5} {row['status']:<10} {kind:<6} {row['starts_at'][:16]}  {orgs[:30]:<30}"
            f" sent {counts['sent']}, queued {counts['queued']}, failed {counts['failed']}"
            f"  {row['title'][:40]}"
        )
    return EX_OK


def cmd_show(config: Config, args: argparse.Namespace) -> int:
    change = show_change(
        open_store(config.storage),
        args.id,
        WorkingCalendar.with_opening_hours(config.service.timezone, config.service.opening_hours),
    )
    if change is None:
        print(f"no change {args.id}", file=sys.stderr)
        return EX_NOINPUT
    if args.json:
        print_json(change)
        return EX_OK
    labels = [change["status"], *(["urgent"] if change["urgent"] else []), f"sequence {change['sequence']}"]
    print(f"change {change['id']}: {change['title']} [{', '.join(labels)}]")
    print(f"  window: {change['starts_at']} to {change['ends_at']}")
    print(f"  notice due by: {change['last_notice_day']}")
    for org in change["organizations"]:
        reached = f"reached {org['first_reached_at']}" if org["reached"] else "NOT REACHED"
        print(f"  {org['id']}: {reached}{', in time' if org['in_time'] else ''}")
    print("\nnotices:")
    for n in change["notices"]:
        print(
            f"  {n['queued_at'][:19]} {n['kind']:<9} {n['recipient']:<40} {n['delivery']:<7}"
            f" {n['sent_at'] or ''} {n['error'][:60]}"
        )
    print("\nhistory:")
    for event in change["history"]:
        print(f"  {event['at'][:19]} {event['actor']}: {event['action']} {event['detail']}")
        if event["message_body"]:
            print("      " + event["message_body"].strip().replace("\n", "\n      "))
    return EX_OK


def add_commands(top: Any) -> None:
    """The `gateway change …` group."""
    group = top.add_parser("change", help="planned and urgent changes").add_subparsers(
        dest="action", required=True
    )

    def add(name: str, handler: Callable[[Config, argparse.Namespace], int], text: str) -> Any:
        parser = group.add_parser(name, help=text)
        parser.set_defaults(handler=handler)
        return parser

    plan = add("plan", cmd_plan, "record a change and notify the organisations' change contacts")
    plan.add_argument("--org", required=True, help="organisation id(s), comma-separated")
    plan.add_argument("--title", required=True)
    plan.add_argument("--description", required=True)
    plan.add_argument("--impact", default="", help="what customers will notice")
    reschedule = add("reschedule", cmd_reschedule, "move a change's window and send the update")
    for parser in (plan, reschedule):
        parser.add_argument("--start", required=True, help="e.g. '2026-04-08 22:00' (Europe/Oslo)")
        parser.add_argument("--end", required=True)
        parser.add_argument("--urgent", action="store_true", help="skip the 8-working-day rule")
    for name, handler, text in (
        ("cancel", cmd_cancel, "cancel a change and withdraw its calendar event"),
        ("complete", cmd_complete, "mark a change done and tell the customers"),
    ):
        add(name, handler, text).add_argument("id", type=int)
    reschedule.add_argument("id", type=int)
    add("remind", cmd_remind, "send reminders due on the working day before a change (for cron)")
    add("list", cmd_list, "changes, latest window first").add_argument("--json", action="store_true")
    show = add("show", cmd_show, "one change with its notices, their delivery, and replies")
    show.add_argument("id", type=int)
    show.add_argument("--json", action="store_true")
