"""The figures behind digests and `gateway report`: one set of queries, read-only, for one period."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from gateway.changes import upcoming as upcoming_changes
from gateway.core import clock
from gateway.core.config import Config, Targets
from gateway.core.workdays import WorkingCalendar
from gateway.directory.registry import Registry
from gateway.store.database import Store

OPEN_STATES = ("new", "open", "pending")
PERIODS = ("daily", "weekly")
# A mail is read, not scrolled: each list shows this many (oldest first) and says how many more.
LIST_LIMIT = 15
GROUP_LIMIT = 3
_ONE_DAY = timedelta(days=1)


@dataclass(frozen=True)
class Period:
    """A complete calendar day or ISO week in the service's time zone, as a half-open UTC range."""

    kind: str
    first_day: date
    last_day: date
    start: datetime
    end: datetime

    @property
    def days(self) -> list[date]:
        return [self.first_day + timedelta(days=i) for i in range((self.last_day - self.first_day).days + 1)]

    @property
    def last_moment(self) -> datetime:
        # One second before the end is on the last day in any zone, even on a 23-hour DST day.
        return self.end - timedelta(seconds=1)

    @property
    def week(self) -> int:
        return self.first_day.isocalendar().week

    @property
    def label(self) -> str:
        if self.kind == "daily":
            return self.first_day.isoformat()
        return f"{self.first_day:%G-W%V} ({self.first_day}..{self.last_day})"


def latest_period(kind: str, now: datetime, calendar: WorkingCalendar) -> Period:
    """The most recent complete period before `now`: yesterday, or last week Monday to Sunday."""
    today = now.astimezone(calendar.tz).date()
    if kind == "daily":
        first = last = today - _ONE_DAY
    elif kind == "weekly":
        last = today - timedelta(days=today.weekday() + 1)
        first = last - timedelta(days=6)
    else:
        raise ValueError(f"unknown period {kind!r}")

    def midnight(day: date) -> datetime:
        return datetime.combine(day, time(0), tzinfo=calendar.tz).astimezone(UTC)

    return Period(kind, first, last, midnight(first), midnight(last + _ONE_DAY))


@dataclass(frozen=True)
class CaseLine:
    id: int
    tag: str
    subject: str
    status: str
    category: str
    priority: str
    organization: str
    organization_name: str
    created_at: datetime
    updated_at: datetime

    @property
    def waiting_for(self) -> str:
        # Pending means the centre asked the customer something; anything else is ours to move.
        return "customer" if self.status == "pending" else "centre"


@dataclass
class CaseGroup:
    organization: str
    organization_name: str
    category: str
    new: int = 0
    open: int = 0
    pending: int = 0
    oldest: list[CaseLine] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.new + self.open + self.pending

    @property
    def more(self) -> int:
        return self.total - len(self.oldest)


@dataclass(frozen=True)
class Breach:
    case: CaseLine
    target: str  # first-response | resolution
    elapsed_hours: float
    target_hours: float
    around_the_clock: bool


@dataclass(frozen=True)
class DayCount:
    day: datetime  # local midnight, so templates format it like any other moment
    opened: int
    resolved: int


@dataclass(frozen=True)
class FailedMail:
    id: int
    kind: str
    recipients: str
    error: str
    created_at: datetime
    bounced: bool


@dataclass
class AgentFigures:
    period: Period
    generated_at: datetime
    groups: list[CaseGroup]
    totals: dict[str, int]
    opened: int
    resolved: int
    days: list[DayCount]
    breaches: list[Breach]
    breach_count: int
    awaiting_information: list[CaseLine]
    awaiting_count: int
    quarantined: int
    quarantine_waiting: int
    held: int
    held_waiting: int
    failed_mail: list[FailedMail]
    bounces: int
    failed: int
    changes: upcoming_changes.Changes

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CustomerFigures:
    period: Period
    organization: str
    organization_name: str
    language: str
    cases: list[CaseLine]
    changes: list[upcoming_changes.Change]


class OpeningHours:
    """Opening-hours seconds between instants; whole days are summed once, so 100k cases stay cheap."""

    def __init__(self, calendar: WorkingCalendar, origin: date) -> None:
        self.calendar = calendar
        self.origin = origin
        self._day_starts = [0.0]  # opening seconds from origin's midnight to each later midnight

    def _midnight(self, day: date) -> datetime:
        return datetime.combine(day, time(0), tzinfo=self.calendar.tz)

    def _offset(self, moment: datetime) -> float:
        day = moment.astimezone(self.calendar.tz).date()
        index = (day - self.origin).days
        if index < 0:
            return -self.calendar.business_seconds_between(moment, self._midnight(self.origin))
        while len(self._day_starts) <= index:
            d = self.origin + timedelta(days=len(self._day_starts) - 1)
            whole = self.calendar.business_seconds_between(self._midnight(d), self._midnight(d + _ONE_DAY))
            self._day_starts.append(self._day_starts[-1] + whole)
        return self._day_starts[index] + self.calendar.business_seconds_between(self._midnight(day), moment)

    def between(self, start: datetime, end: datetime) -> float:
        return self._offset(end) - self._offset(start)


def _range(period: Period) -> tuple[str, str]:
    return clock.iso(period.start), clock.iso(period.end)


class Figures:
    """Queries over one store for one moment; `now` comes from the caller (gateway.clock in practice)."""

    def __init__(self, config: Config, store: Store, registry: Registry, calendar: WorkingCalendar) -> None:
        self.config = config
        self.store = store
        self.registry = registry
        self.calendar = calendar

    def _line(self, row: dict[str, Any]) -> CaseLine:
        org = self.registry.organizations.get(row["organization"] or "")
        return CaseLine(
            id=row["id"],
            tag=f"{self.config.service.case_prefix}#{row['id']}",
            subject=row["subject"],
            status=row["status"],
            category=row["category"],
            priority=row["priority"],
            organization=row["organization"] or "",
            organization_name=org.name if org else (row["organization"] or "-"),
            created_at=datetime.fromisoformat(row["created_at"]),
            updated_at=datetime.fromisoformat(row["updated_at"]),
        )

    def _open_cases(self) -> list[dict[str, Any]]:
        marks = ",".join("?" for _ in OPEN_STATES)
        return self.store.query(
            "SELECT id, subject, status, category, priority, organization, created_at, updated_at,"
            f" first_response_at FROM cases WHERE status IN ({marks}) ORDER BY created_at, id",
            OPEN_STATES,
        )

    def agents(
        self, period: Period, now: datetime, limit: int | None = LIST_LIMIT, once: bool = False
    ) -> AgentFigures:
        """Figures for the agents; lists are cut to `limit` (oldest first), counts never are.

        `once`: a case over both targets is one breach (the digest's list for people to act on);
        otherwise every broken target is its own row (the report's data).
        """
        rows = self._open_cases()
        groups = self._groups(rows)
        breaches = self._breaches(rows, now, self.config.targets, once)
        awaiting = self._awaiting_information()
        failed = self._failed_mail(period)
        days = self._days(period)
        start, end = _range(period)
        return AgentFigures(
            period=period,
            generated_at=now,
            groups=groups,
            totals={s: sum(1 for r in rows if r["status"] == s) for s in OPEN_STATES},
            opened=sum(d.opened for d in days),
            resolved=sum(d.resolved for d in days),
            days=days,
            breaches=breaches[:limit],
            breach_count=len(breaches),
            awaiting_information=awaiting[:limit],
            awaiting_count=len(awaiting),
            quarantined=self._count("quarantine", "created_at >= ? AND created_at < ?", (start, end)),
            quarantine_waiting=self._count("quarantine", "replayed_at IS NULL", ()),
            held=self._count(
                "messages", "disposition = 'held' AND created_at >= ? AND created_at < ?", (start, end)
            ),
            held_waiting=self._count("messages", "disposition = 'held'", ()),
            failed_mail=failed[:limit],
            bounces=sum(1 for f in failed if f.bounced),
            failed=sum(1 for f in failed if not f.bounced),
            changes=upcoming_changes.upcoming(self.store, self.registry, self.calendar, now),
        )

    def _count(self, table: str, where: str, params: tuple[Any, ...]) -> int:
        return int(
            self.store.conn.execute(f"SELECT count(*) FROM {table} WHERE {where}", params).fetchone()[0]
        )

    def _groups(self, rows: list[dict[str, Any]]) -> list[CaseGroup]:
        groups: dict[tuple[str, str], CaseGroup] = {}
        for row in rows:  # already oldest first, so each group's list is too
            line = self._line(row)
            key = (line.organization, line.category)
            group = groups.get(key)
            if group is None:
                group = groups[key] = CaseGroup(line.organization, line.organization_name, line.category)
            setattr(group, line.status, getattr(group, line.status) + 1)
            if len(group.oldest) < GROUP_LIMIT:
                group.oldest.append(line)
        return sorted(groups.values(), key=lambda g: (g.organization_name.lower(), g.category))

    def _breaches(
        self, rows: list[dict[str, Any]], now: datetime, targets: Targets, once: bool
    ) -> list[Breach]:
        if not rows:
            return []
        origin = datetime.fromisoformat(rows[0]["created_at"]).astimezone(self.calendar.tz).date()
        hours = OpeningHours(self.calendar, origin)
        found: list[Breach] = []
        for row in rows:
            target = targets.for_priority(row["priority"])
            created = datetime.fromisoformat(row["created_at"])
            limits = [("resolution", target.resolution_hours * 3600)]
            if row["first_response_at"] is None:
                limits.insert(0, ("first-response", target.first_response_minutes * 60.0))
            wall = (now - created).total_seconds()
            # Opening-hours time never exceeds wall-clock time, so young cases skip the calendar.
            if wall <= min(limit for _, limit in limits):
                continue
            seconds = wall if target.around_the_clock else hours.between(created, now)
            for name, limit in limits:
                if seconds > limit:
                    found.append(
                        Breach(self._line(row), name, seconds / 3600, limit / 3600, target.around_the_clock)
                    )
                    if once:
                        break  # by the first promise it broke: first response before resolution
        return found

    def _awaiting_information(self) -> list[CaseLine]:
        # Until escalation fields carry their own state, "asked and not answered" is read from
        # history: an 'asked-missing' event (written by casework) with no inbound mail after it.
        marks = ",".join("?" for _ in OPEN_STATES)
        # Driven from the open cases with one indexed lookup each (events_action, messages_case):
        # joining a grouped CTE instead made SQLite compare every open case with every asked case.
        # The unary + keeps the planner off messages_disposition, which scans all case mail.
        rows = self.store.query(
            "SELECT * FROM (SELECT c.id, c.subject, c.status, c.category, c.priority, c.organization,"
            " c.created_at, c.updated_at, (SELECT max(e.at) FROM events e"
            "   WHERE e.action = 'asked-missing' AND e.case_id = c.id) AS asked_at"
            f" FROM cases c WHERE c.status IN ({marks})) AS o"
            " WHERE o.asked_at IS NOT NULL AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.case_id = o.id"
            " AND m.direction = 'in' AND +m.disposition = 'case' AND m.created_at > o.asked_at)"
            " ORDER BY o.created_at, o.id",
            OPEN_STATES,
        )
        return [self._line(r) for r in rows]

    def _failed_mail(self, period: Period) -> list[FailedMail]:
        rows = self.store.query(
            "SELECT id, kind, recipients, last_error, created_at FROM outbox"
            " WHERE status = 'failed' AND created_at >= ? AND created_at < ? ORDER BY created_at, id",
            _range(period),
        )
        return [
            FailedMail(
                id=r["id"],
                kind=r["kind"],
                recipients=", ".join(json.loads(r["recipients"])),
                error=r["last_error"],
                created_at=datetime.fromisoformat(r["created_at"]),
                # casework marks a bounce's original with this prefix; the rest the relay refused.
                bounced=r["last_error"].startswith("bounced:"),
            )
            for r in rows
        ]

    def _days(self, period: Period) -> list[DayCount]:
        opened: dict[date, int] = defaultdict(int)
        resolved: dict[date, int] = defaultdict(int)
        for column, counter in (("created_at", opened), ("resolved_at", resolved)):
            cursor = self.store.conn.execute(
                f"SELECT {column} FROM cases WHERE {column} >= ? AND {column} < ?", _range(period)
            )
            for (value,) in cursor:
                counter[datetime.fromisoformat(value).astimezone(self.calendar.tz).date()] += 1
        return [
            DayCount(datetime.combine(d, time(0), tzinfo=self.calendar.tz), opened[d], resolved[d])
            for d in period.days
        ]

    def customers(self, period: Period, now: datetime) -> list[CustomerFigures]:
        """One set per organisation in the registry; a case is only ever put under its own organisation."""
        by_org: dict[str, list[CaseLine]] = defaultdict(list)
        for row in self._open_cases():
            if row["organization"]:
                by_org[row["organization"]].append(self._line(row))
        upcoming = upcoming_changes.upcoming(self.store, self.registry, self.calendar, now)
        return [
            CustomerFigures(
                period=period,
                organization=org.id,
                organization_name=org.name,
                language=org.language,
                cases=by_org.get(org.id, []),
                changes=[c for c in upcoming.changes if c.organization == org.id],
            )
            for org in self.registry.organizations.values()
        ]
