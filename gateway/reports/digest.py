"""`gateway digest`: the agents' and customers' overviews for cron, queued once per period."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from gateway.core import clock
from gateway.notices.templates import WEEKDAYS_NB
from gateway.outbox.queue import Outgoing, enqueue
from gateway.reports.figures import (
    AgentFigures,
    CustomerFigures,
    DayCount,
    Figures,
    Period,
)
from gateway.runtime import Runtime

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
    # People act on the digest's list: a case over both targets is listed once.
    return [agents_digest(runtime, figures.agents(period, now, once=True), to, target)], []


def already_sent(runtime: Runtime, period: Period, audience: str) -> str | None:
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
            return already_said(digest.audience, period, str(sent_at))
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


def already_said(audience: str, period: Period, sent_at: str) -> str:
    return f"{audience}: {period.kind} digest for {period.label} was already sent {sent_at}; nothing sent"
