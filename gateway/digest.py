"""`gateway digest`: the agents' and customers' overviews for cron, queued once per period."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from gateway import clock
from gateway.addresses import AddressError, normalise_address
from gateway.config import Config
from gateway.figures import (
    PERIODS,
    AgentFigures,
    CustomerFigures,
    DayCount,
    Figures,
    Period,
    latest_period,
)
from gateway.outbox import Outgoing, enqueue
from gateway.runtime import Runtime
from gateway.templates import WEEKDAYS_NB

EX_OK = 0
EX_NOINPUT = 66
# Bars never fill their cell, so the count beside the longest one still fits on a phone.
BAR_MAX_PERCENT = 80


@dataclass(frozen=True)
class Digest:
    """One rendered mail and the audience key its period is recorded under."""

    audience: str
    to: list[str]
    language: str
    subject: str
    text: str
    html: str


def _short_day(day: date, language: str) -> str:
    if language == "nb":
        return f"{WEEKDAYS_NB[day.weekday()][:3]} {day.day}.{day.month}."
    return f"{day:%a} {day.day} {day:%b}"


def _width(count: int, peak: int) -> int:
    return 0 if count <= 0 else max(1, round(count * BAR_MAX_PERCENT / peak))


def chart(days: list[DayCount], language: str) -> list[dict[str, Any]]:
    """Rows for the opened/resolved bar chart, widths in percent of the busiest day."""
    peak = max([1, *(d.opened for d in days), *(d.resolved for d in days)])
    return [
        {
            "label": _short_day(d.day.date(), language),
            "opened": d.opened,
            "resolved": d.resolved,
            "opened_width": _width(d.opened, peak),
            "resolved_width": _width(d.resolved, peak),
        }
        for d in days
    ]


def _render(runtime: Runtime, audience: str, language: str, context: dict[str, Any]) -> tuple[str, str, str]:
    rendered = runtime.templates.render(language, audience, "digest", context)
    html = runtime.templates.render_html(
        language, audience, "digest", {**context, "subject": rendered.subject}
    )
    return rendered.subject, rendered.body, html


def agents_digest(runtime: Runtime, figures: AgentFigures, to: list[str], audience: str) -> Digest:
    language = runtime.config.service.language
    context = {
        "service": runtime.config.service,
        "period": figures.period,
        "figures": figures,
        "chart": chart(figures.days, language),
    }
    subject, text, html = _render(runtime, "staff", language, context)
    return Digest(audience, to, language, subject, text, html)


def customer_digest(runtime: Runtime, figures: CustomerFigures, to: list[str]) -> Digest:
    context = {
        "service": runtime.config.service,
        "period": figures.period,
        "figures": figures,
    }
    subject, text, html = _render(runtime, "customer", figures.language, context)
    return Digest(f"org:{figures.organization}", to, figures.language, subject, text, html)


def build(runtime: Runtime, period: Period, target: str, now: datetime) -> tuple[list[Digest], list[str]]:
    """The digests `target` gets for `period`, and notes on organisations left out."""
    registry = runtime.registry()
    figures = Figures(runtime.config, runtime.store, registry, runtime.calendar)
    if target == "customers":
        digests, notes = [], []
        for org_figures in figures.customers(period, now):
            org = registry.organizations[org_figures.organization]
            to = sorted({c.email for c in org.contacts_with("local-support")})
            if not to:
                notes.append(f"org:{org.id}: no local-support contact point; nothing sent")
            elif not org_figures.cases and not org_figures.changes:
                notes.append(f"org:{org.id}: no open cases or planned changes; nothing sent")
            else:
                digests.append(customer_digest(runtime, org_figures, to))
        return digests, notes
    if target == "agents":
        to = sorted(a.email for a in registry.agents.values() if a.line == 1)
        if not to:
            return [], ["agents: no line-1 agents in the registry; nothing sent"]
    else:
        to = [target]
    return [agents_digest(runtime, figures.agents(period, now), to, target)], []


def _already_sent(runtime: Runtime, period: Period, audience: str) -> str | None:
    row = runtime.store.one(
        "SELECT sent_at FROM digests_sent WHERE period = ? AND period_start = ? AND audience = ?",
        (period.kind, period.first_day.isoformat(), audience),
    )
    return None if row is None else str(row["sent_at"])


def send(runtime: Runtime, period: Period, digest: Digest) -> str:
    """Queue one digest and record it in the same transaction; say what happened."""
    config = runtime.config
    with runtime.store.write() as conn:
        # The unique key decides inside the transaction, so two overlapping cron runs still send once.
        cursor = conn.execute(
            "INSERT OR IGNORE INTO digests_sent (period, period_start, period_end, audience, recipients,"
            " message_id, sent_at) VALUES (?, ?, ?, ?, ?, '', ?)",
            (
                period.kind,
                period.first_day.isoformat(),
                period.last_day.isoformat(),
                digest.audience,
                json.dumps(digest.to),
                clock.iso(),
            ),
        )
        if cursor.rowcount == 0:
            (sent_at,) = conn.execute(
                "SELECT sent_at FROM digests_sent WHERE period = ? AND period_start = ? AND audience = ?",
                (period.kind, period.first_day.isoformat(), digest.audience),
            ).fetchone()
            return _already(digest.audience, period, str(sent_at))
        mail = Outgoing(
            kind="digest-customer" if digest.audience.startswith("org:") else "digest-agents",
            to=digest.to,
            subject=digest.subject,
            body=digest.text,
            html=digest.html,
            auto_submitted="auto-generated",
        )
        message_id = enqueue(conn, config, mail, None)
        conn.execute("UPDATE digests_sent SET message_id = ? WHERE id = ?", (message_id, cursor.lastrowid))
    return f"{digest.audience}: queued {period.kind} digest for {period.label} to {', '.join(digest.to)}"


def _already(audience: str, period: Period, sent_at: str) -> str:
    return f"{audience}: {period.kind} digest for {period.label} was already sent {sent_at}; nothing sent"


def _target(value: str) -> str:
    if value in ("agents", "customers"):
        return value
    try:
        return normalise_address(value)
    except AddressError as exc:
        raise argparse.ArgumentTypeError(f"not agents, customers or an address: {exc}") from None


def cmd_digest(config: Config, args: argparse.Namespace) -> int:
    runtime = Runtime(config)
    try:
        now = clock.now()
        period = latest_period(args.period, now, runtime.calendar)
        if args.to != "customers" and not args.dry_run:
            # The agents' figures are the costly part; a second run for the period skips them.
            sent_at = _already_sent(runtime, period, args.to)
            if sent_at is not None:
                print(_already(args.to, period, sent_at))
                return EX_OK
        digests, notes = build(runtime, period, args.to, now)
        for note in notes:
            print(note)
        for digest in digests:
            if args.dry_run:
                _print_dry_run(runtime, period, digest)
            else:
                print(send(runtime, period, digest))
        if not digests and args.to == "agents":
            return EX_NOINPUT
        return EX_OK
    finally:
        runtime.close()


def _print_dry_run(runtime: Runtime, period: Period, digest: Digest) -> None:
    sent_at = _already_sent(runtime, period, digest.audience)
    status = f" (already sent {sent_at}: a real run sends nothing)" if sent_at else ""
    print(f"=== {digest.audience}: {period.kind} digest for {period.label}{status}")
    print(f"To: {', '.join(digest.to)}")
    print(f"Subject: {digest.subject}")
    print()
    print(digest.text)


def add_commands(top: Any) -> None:
    parser = top.add_parser("digest", help="queue the agents' or customers' digest for the last period")
    parser.add_argument("--period", choices=PERIODS, required=True)
    parser.add_argument(
        "--to", type=_target, default="agents", metavar="agents|customers|ADDRESS", help="default: agents"
    )
    parser.add_argument("--dry-run", action="store_true", help="print what would be sent; record nothing")
    parser.set_defaults(handler=cmd_digest)
