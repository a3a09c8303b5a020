"""Changes coming up in the next working days, per organisation, with the state of their notice."""

# The change tables come from migration m003_changes (gateway/changes.py), written in
# parallel with the digests. A store without them simply has nothing to report, so the
# tables are looked up in sqlite_master first rather than assumed.

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

from gateway.core import clock
from gateway.core.workdays import WorkingCalendar
from gateway.directory.registry import Registry
from gateway.store.database import Store

HORIZON_WORKING_DAYS = 10
# Notices that announce the window itself (gateway.changes.ANNOUNCING); reminders do not count.
ANNOUNCING = ("notice", "urgent", "update")
_TABLES = ("changes", "change_organizations", "change_notices")


@dataclass(frozen=True)
class Change:
    """One change as one organisation sees it: a change for three organisations is three of these."""

    id: int
    organization: str
    organization_name: str
    title: str
    kind: str  # planned | urgent
    starts_at: datetime
    ends_at: datetime
    notice: str  # sent | queued | failed | none: the best delivery state of an announcing notice
    notice_due: datetime  # last day a planned change's notice may go out, as local midnight

    @property
    def notice_sent(self) -> bool:
        return self.notice == "sent"


@dataclass
class Changes:
    available: bool = False  # False while the store has no change tables
    horizon: datetime | None = None
    changes: list[Change] = field(default_factory=list)

    @property
    def unsent_notices(self) -> list[Change]:
        return sorted((c for c in self.changes if not c.notice_sent), key=lambda c: (c.notice_due, c.id))


def _present(store: Store) -> bool:
    marks = ",".join("?" for _ in _TABLES)
    rows = store.query(f"SELECT name FROM sqlite_master WHERE type = 'table' AND name IN ({marks})", _TABLES)
    return len(rows) == len(_TABLES)


def _notice_state(states: str | None) -> str:
    found = set((states or "").split(","))
    return next((s for s in ("sent", "queued", "failed") if s in found), "none")


def upcoming(store: Store, registry: Registry, calendar: WorkingCalendar, now: datetime) -> Changes:
    """Planned changes starting from now to the end of the 10th working day ahead, soonest first."""
    if not _present(store):
        return Changes()
    last_day = calendar.add_working_days(now.astimezone(calendar.tz).date(), HORIZON_WORKING_DAYS)
    horizon = datetime.combine(last_day + timedelta(days=1), time(0), tzinfo=calendar.tz)
    announcing = ",".join("?" for _ in ANNOUNCING)
    rows = store.query(
        "SELECT c.id, c.title, c.urgent, c.starts_at, c.ends_at, co.organization,"
        " (SELECT group_concat(o.status) FROM change_notices n JOIN outbox o ON o.message_id = n.message_id"
        f"   WHERE n.change_id = c.id AND n.organization = co.organization AND n.kind IN ({announcing}))"
        " AS states"
        " FROM changes c JOIN change_organizations co ON co.change_id = c.id"
        " WHERE c.status = 'planned' AND c.starts_at >= ? AND c.starts_at < ?"
        " ORDER BY c.starts_at, c.id, co.organization",
        (*ANNOUNCING, clock.iso(now), clock.iso(horizon)),
    )
    found = []
    for row in rows:
        org = registry.organizations.get(row["organization"])
        starts = datetime.fromisoformat(row["starts_at"])
        found.append(
            Change(
                id=row["id"],
                organization=row["organization"],
                organization_name=org.name if org else row["organization"],
                title=row["title"],
                kind="urgent" if row["urgent"] else "planned",
                starts_at=starts,
                ends_at=datetime.fromisoformat(row["ends_at"]),
                notice=_notice_state(row["states"]),
                notice_due=_local_midnight(calendar, calendar.last_notice_day(starts)),
            )
        )
    return Changes(available=True, horizon=horizon, changes=found)


def _local_midnight(calendar: WorkingCalendar, day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=calendar.tz)
