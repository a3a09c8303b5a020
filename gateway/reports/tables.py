"""`gateway report`: the agents' digest figures on the terminal, or as JSON or CSV for a spreadsheet."""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Any

from rich.console import Console
from rich.table import Table

from gateway.reports.figures import AgentFigures

CSV_COLUMNS = ("section", "day", "organization", "category", "case", "name", "value")


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def as_json(figures: AgentFigures) -> str:
    data = figures.as_dict()
    # asdict() leaves out properties; the unsent notices are a figure in their own right.
    data["changes"]["unsent_notices"] = [c.__dict__ for c in figures.changes.unsent_notices]
    return json.dumps(data, ensure_ascii=False, indent=2, default=_plain)


def csv_rows(figures: AgentFigures) -> list[dict[str, Any]]:
    """One figure a row, long format, so a spreadsheet can pivot it any way it likes."""
    rows: list[dict[str, Any]] = []

    def add(section: str, name: str, value: Any, **where: Any) -> None:
        rows.append({"section": section, "name": name, "value": value, **where})

    for name, value in _summary(figures):
        add("summary", name, value)
    for day in figures.days:
        add("per-day", "opened", day.opened, day=day.day.date().isoformat())
        add("per-day", "resolved", day.resolved, day=day.day.date().isoformat())
    for group in figures.groups:
        for status in ("new", "open", "pending"):
            add(
                "open-cases",
                status,
                getattr(group, status),
                organization=group.organization,
                category=group.category,
            )
    for breach in figures.breaches:
        add(
            "past-target",
            breach.target,
            round(breach.elapsed_hours, 2),
            case=breach.case.tag,
            organization=breach.case.organization,
            category=breach.case.category,
        )
    for line in figures.awaiting_information:
        add("missing-information", "waiting", 1, case=line.tag, organization=line.organization)
    for mail in figures.failed_mail:
        add(
            "failed-mail",
            "bounced" if mail.bounced else "failed",
            mail.recipients,
            day=mail.created_at.date().isoformat(),
        )
    for change in figures.changes.changes:
        add(
            "changes",
            f"notice {change.notice}",
            change.title,
            day=change.starts_at.date().isoformat(),
            organization=change.organization,
        )
    return rows


def _summary(figures: AgentFigures) -> list[tuple[str, int]]:
    return [
        ("opened", figures.opened),
        ("resolved", figures.resolved),
        ("new", figures.totals["new"]),
        ("open", figures.totals["open"]),
        ("pending", figures.totals["pending"]),
        ("past target", figures.breach_count),
        ("waiting for missing information", figures.awaiting_count),
        ("quarantined in period", figures.quarantined),
        ("quarantine waiting", figures.quarantine_waiting),
        ("held in period", figures.held),
        ("held waiting", figures.held_waiting),
        ("bounces", figures.bounces),
        ("failed mail", figures.failed),
        ("changes coming up", len(figures.changes.changes)),
        ("notices not sent", len(figures.changes.unsent_notices)),
    ]


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left", show_edge=False)
    for column in columns:
        table.add_column(
            column, justify="right" if column in ("n", "new", "open", "pending", "hours") else "left"
        )
    return table


def print_tables(figures: AgentFigures, console: Console) -> None:
    period = figures.period
    made = f"{figures.generated_at:%Y-%m-%d %H:%M} UTC"
    console.print(f"[bold]{period.kind} report for {period.label}[/bold], made {made}")
    summary = _table("Summary", "figure", "n")
    for name, value in _summary(figures):
        summary.add_row(name, str(value))
    days = _table("Per day", "day", "opened", "resolved")
    for day in figures.days:
        days.add_row(day.day.date().isoformat(), str(day.opened), str(day.resolved))
    groups = _table("Open cases, oldest first", "organisation", "category", "new", "open", "pending")
    for group in figures.groups:
        groups.add_row(
            group.organization_name, group.category, str(group.new), str(group.open), str(group.pending)
        )
    breaches = _table(
        f"Past target ({figures.breach_count})", "case", "subject", "priority", "target", "hours"
    )
    for breach in figures.breaches:
        breaches.add_row(
            breach.case.tag,
            breach.case.subject,
            breach.case.priority,
            breach.target,
            f"{breach.elapsed_hours:.1f} / {breach.target_hours:.1f}",
        )
    for table in (summary, days, groups, breaches):
        console.print(table)
    if figures.awaiting_information:
        awaiting = _table(
            f"Waiting for missing information ({figures.awaiting_count})", "case", "subject", "organisation"
        )
        for line in figures.awaiting_information:
            awaiting.add_row(line.tag, line.subject, line.organization_name)
        console.print(awaiting)
    if figures.failed_mail:
        failed = _table("Mail that did not arrive", "created", "to", "error")
        for mail in figures.failed_mail:
            failed.add_row(mail.created_at.isoformat(timespec="minutes"), mail.recipients, mail.error)
        console.print(failed)
    if figures.changes.changes:
        changes = _table("Changes in the next 10 working days", "starts", "organisation", "change", "notice")
        for change in figures.changes.changes:
            changes.add_row(
                change.starts_at.isoformat(timespec="minutes"),
                change.organization_name,
                change.title,
                change.notice,
            )
        console.print(changes)
