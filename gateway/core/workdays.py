"""Working-day calendar (virkedager) for change notices and service-level targets."""

# Working days are Monday to Friday, except Norwegian public holidays as listed by
# the ``holidays`` package. Christmas Eve and New Year's Eve are not public
# holidays, so they are working days when they fall on a weekday.
#
# NOTICE COUNTING RULE
# A planned change needs ``notice_days`` (default 8) working days of notice. The
# day the notice is sent counts as one of them when it is a working day; the day
# the change starts never counts. Equivalently, the latest day a notice may be
# sent is the ``notice_days``-th working day strictly before the change day:
#
#     change on Wed 2026-04-08, 8 days of notice
#     working days before it, newest first (2, 3 and 6 April are Easter holidays):
#       1: Tue 04-07   2: Wed 04-01   3: Tue 03-31   4: Mon 03-30
#       5: Fri 03-27   6: Thu 03-26   7: Wed 03-25   8: Tue 03-24
#     -> the notice must be sent on or before Tue 2026-03-24
#
# The change day itself may be any calendar day (weekend maintenance windows are
# normal); only the working days before it are counted. A notice sent on a
# weekend or holiday is treated as sent on the next working day, which then
# becomes the first counted day (see WorkingCalendar.earliest_change_start).
#
# Opening hours (service.opening_hours, default "08:00-15:30" Europe/Oslo) apply on
# working days only and are half-open: the centre is open at 08:00:00 and closed at
# 15:30:00. WorkingCalendar.is_open is the one answer to "are we open at T?": rules,
# receipts, targets and monitoring all ask it.

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo

import holidays

__all__ = [
    "DEFAULT_NOTICE_DAYS",
    "DEFAULT_OPENING_HOURS",
    "WorkingCalendar",
    "format_opening_hours",
    "parse_opening_hours",
]

DEFAULT_NOTICE_DAYS = 8
DEFAULT_OPENING_HOURS = "08:00-15:30"

_ONE_DAY = timedelta(days=1)
# "08:00-15:30"; an en dash or blanks around the dash are what people type, so they pass too.
_HOURS = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*[-\u2013]\s*(\d{1,2}):(\d{2})\s*$")


def parse_opening_hours(text: str) -> tuple[time, time]:
    """Read "HH:MM-HH:MM" (local time, working days) into opening and closing times.

    Raises ValueError with a message fit to follow the config key's name.
    """
    found = _HOURS.match(text)
    if found is None:
        raise ValueError(f'expected "HH:MM-HH:MM" on working days, e.g. "08:00-15:30", got {text!r}')
    h1, m1, h2, m2 = (int(part) for part in found.groups())
    try:
        opens, closes = time(h1, m1), time(h2, m2)
    except ValueError:
        raise ValueError(f"not a time of day: {text!r}") from None
    if not opens < closes:
        raise ValueError(f"opening must come before closing on the same day: {text!r}")
    return opens, closes


def format_opening_hours(opens: time, closes: time) -> str:
    """The hours as mail shows them: 08:00–15:30."""
    return f"{opens:%H:%M}\u2013{closes:%H:%M}"


class WorkingCalendar:
    """Norwegian working days, notice deadlines and opening-hours arithmetic."""

    def __init__(
        self,
        timezone: str | tzinfo = "Europe/Oslo",
        opens: time = time(8, 0),
        closes: time = time(15, 30),
        notice_days: int = DEFAULT_NOTICE_DAYS,
    ) -> None:
        # A string is the normal case; a tzinfo is accepted so tests or callers
        # that already hold a ZoneInfo do not need to round-trip through a name.
        self.tz: tzinfo = ZoneInfo(timezone) if isinstance(timezone, str) else timezone
        if opens.tzinfo is not None or closes.tzinfo is not None:
            # Opening hours are local wall-clock times in self.tz; a tz-aware
            # time would be ambiguous about which zone wins.
            raise ValueError("opens and closes must be naive wall-clock times")
        if not opens < closes:
            # Overnight shifts would make a "working day" span two dates, which
            # none of the arithmetic below is designed for.
            raise ValueError("opens must be earlier than closes")
        if notice_days < 1:
            raise ValueError("notice_days must be at least 1")
        self.opens = opens
        self.closes = closes
        self.notice_days = notice_days
        # Plain dicts per year: building a holiday set is comparatively slow and
        # every calendar query hits it, so each year is computed once. Storing a
        # plain dict (not HolidayBase) also stops the library from silently
        # expanding itself to other years behind our back. A race between two
        # threads filling the same year is harmless: both write equal values.
        self._holidays: dict[int, dict[date, str]] = {}

    @classmethod
    def with_opening_hours(cls, timezone: str, opening_hours: str) -> WorkingCalendar:
        """A calendar open during ``opening_hours`` ("08:00-15:30", as service.opening_hours holds it)."""
        opens, closes = parse_opening_hours(opening_hours)
        return cls(timezone=timezone, opens=opens, closes=closes)

    # ------------------------------------------------------------------ days

    def _holidays_for(self, year: int) -> dict[date, str]:
        cached = self._holidays.get(year)
        if cached is None:
            # language="no" gives Norwegian names for user-facing messages.
            # include_sundays is left at its default (False): it would mark every
            # Sunday as a "holiday", and weekends are handled separately below.
            source = holidays.country_holidays("NO", language="no", years=year)
            cached = {day: str(name) for day, name in source.items()}
            self._holidays[year] = cached
        return cached

    def _local_date(self, value: date | datetime) -> date:
        """Return the calendar date of ``value`` in this calendar's time zone.

        Aware datetimes are converted first (23:30 UTC may already be tomorrow
        in Oslo); naive datetimes are taken as local wall-clock time.
        """
        if isinstance(value, datetime):
            if value.tzinfo is not None and value.utcoffset() is not None:
                value = value.astimezone(self.tz)
            return value.date()
        return value

    def holiday_name(self, d: date | datetime) -> str | None:
        """Return the Norwegian name of the public holiday on ``d``, if any.

        When two holidays coincide (17 May 2027 is also Whit Monday) the names
        are joined with "; " as the holidays package does.
        """
        day = self._local_date(d)
        return self._holidays_for(day.year).get(day)

    def is_holiday(self, d: date | datetime) -> bool:
        """Return True if ``d`` is a Norwegian public holiday (any weekday)."""
        return self.holiday_name(d) is not None

    def is_working_day(self, d: date | datetime) -> bool:
        """Return True if ``d`` is Monday-Friday and not a public holiday."""
        day = self._local_date(d)
        return day.weekday() < 5 and day not in self._holidays_for(day.year)

    def next_working_day(self, d: date | datetime) -> date:
        """Return ``d`` itself if it is a working day, else the next one."""
        day = self._local_date(d)
        while not self.is_working_day(day):
            day += _ONE_DAY
        return day

    def add_working_days(self, d: date | datetime, n: int) -> date:
        """Return the ``n``-th working day after ``d`` (before it if ``n`` < 0).

        ``d`` itself is never counted, so ``add_working_days(friday, 1)`` is the
        following Monday (holidays permitting). ``n == 0`` returns ``d``
        unchanged, even when ``d`` is not a working day.
        """
        day = self._local_date(d)
        step = _ONE_DAY if n > 0 else -_ONE_DAY
        remaining = abs(n)
        while remaining:
            day += step
            if self.is_working_day(day):
                remaining -= 1
        return day

    def working_days_before(self, d: date | datetime, n: int) -> date:
        """Return the ``n``-th working day strictly before ``d`` (``n`` >= 0)."""
        if n < 0:
            raise ValueError("n must not be negative; use add_working_days")
        return self.add_working_days(d, -n)

    def working_days_between(self, start: date, end: date) -> int:
        """Count working days in the half-open range [start, end)."""
        count = 0
        day = start
        while day < end:
            if self.is_working_day(day):
                count += 1
            day += _ONE_DAY
        return count

    # --------------------------------------------------------------- notices

    def _notice_days(self, days: int | None) -> int:
        n = self.notice_days if days is None else days
        if n < 1:
            # With zero days the notice day would have to be counted and also
            # lie on or after the change day, which the rule cannot express.
            raise ValueError("days must be at least 1")
        return n

    def last_notice_day(self, change_start: date | datetime, days: int | None = None) -> date:
        """Return the latest day a notice for a change at ``change_start`` may be sent.

        This is the ``days``-th (default ``notice_days``) working day strictly
        before the change day: the notice day counts, the change day does not.
        Aware datetimes are converted to the calendar's time zone first, so a
        change at 2026-04-07T23:30Z is a change on 8 April in Oslo.
        """
        return self.working_days_before(self._local_date(change_start), self._notice_days(days))

    def earliest_change_start(self, notice_day: date | datetime, days: int | None = None) -> date:
        """Return the first calendar day a change may start if announced on ``notice_day``.

        Inverse of :meth:`last_notice_day`. A notice sent on a non-working day
        (weekend or holiday) is treated as sent on the next working day, because
        nobody is expected to read it before then; that day is then the first
        counted day. The change may start the day after the last counted working
        day, whatever kind of day that is.

        Guarantees, for every date ``d``:
        ``last_notice_day(earliest_change_start(d)) >= d`` and the result is the
        smallest date with that property.
        """
        n = self._notice_days(days)
        first_counted = self.next_working_day(notice_day)
        last_counted = self.add_working_days(first_counted, n - 1)
        return last_counted + _ONE_DAY

    # ---------------------------------------------------------- opening hours

    def _require_aware(self, at: datetime, name: str) -> datetime:
        if at.tzinfo is None or at.utcoffset() is None:
            # Guessing a zone for naive datetimes is how SLA clocks end up an
            # hour off twice a year; make the caller decide.
            raise ValueError(f"{name} must be a timezone-aware datetime")
        return at.astimezone(self.tz)

    def _opening_interval(self, day: date) -> tuple[datetime, datetime]:
        """Return the opening and closing instants of ``day``, in UTC.

        Built from local wall-clock times and then converted to UTC so that
        differences are real elapsed time. (Subtracting two aware datetimes that
        share a ZoneInfo object uses wall-clock arithmetic and would be wrong
        across a DST change.)
        """
        start = datetime.combine(day, self.opens, tzinfo=self.tz)
        end = datetime.combine(day, self.closes, tzinfo=self.tz)
        return start.astimezone(UTC), end.astimezone(UTC)

    def is_open(self, at: datetime) -> bool:
        """Return True if the centre is open at the aware datetime ``at``.

        Open means a working day and ``opens <= local time < closes``.
        """
        local = self._require_aware(at, "at")
        if not self.is_working_day(local.date()):
            return False
        return self.opens <= local.time() < self.closes

    # The name monitoring and the issue use for the same question.
    within_opening_hours = is_open

    @property
    def hours_text(self) -> str:
        """The opening hours as mail shows them (08:00–15:30)."""
        return format_opening_hours(self.opens, self.closes)

    def next_opening(self, at: datetime) -> datetime:
        """Return ``at`` if the centre is open then, else the next opening instant.

        The result is expressed in the calendar's time zone. It answers "when
        will someone start working on this?", so an already-open moment is its
        own answer.
        """
        local = self._require_aware(at, "at")
        if self.is_open(local):
            return local
        day = local.date()
        if not self.is_working_day(day) or local.time() >= self.closes:
            day = self.add_working_days(day, 1)
        return datetime.combine(day, self.opens, tzinfo=self.tz)

    def business_seconds_between(self, start: datetime, end: datetime) -> float:
        """Return the seconds of opening hours between two aware datetimes.

        Only time inside opening hours on working days counts. The result is
        antisymmetric: swapping ``start`` and ``end`` negates it.
        """
        start_utc = self._require_aware(start, "start").astimezone(UTC)
        end_utc = self._require_aware(end, "end").astimezone(UTC)
        if end_utc < start_utc:
            return -self.business_seconds_between(end, start)
        total = timedelta(0)
        day = start_utc.astimezone(self.tz).date()
        last_day = end_utc.astimezone(self.tz).date()
        while day <= last_day:
            if self.is_working_day(day):
                opened, closed = self._opening_interval(day)
                overlap = min(closed, end_utc) - max(opened, start_utc)
                if overlap > timedelta(0):
                    total += overlap
            day += _ONE_DAY
        # Summing timedeltas keeps microsecond exactness; convert only at the end.
        return total.total_seconds()

    def add_business_time(self, start: datetime, duration: timedelta) -> datetime:
        """Return the earliest instant at which ``duration`` of opening hours has passed.

        Inverse of :meth:`business_seconds_between`: for any aware ``start`` and
        non-negative ``duration``,
        ``business_seconds_between(start, add_business_time(start, duration))``
        equals ``duration.total_seconds()``. When the duration runs out exactly
        at closing time the closing instant is returned, not the next opening.
        The result is in the calendar's time zone.
        """
        if duration < timedelta(0):
            raise ValueError("duration must not be negative")
        current = self._require_aware(start, "start").astimezone(UTC)
        if duration == timedelta(0):
            return current.astimezone(self.tz)
        remaining = duration
        day = current.astimezone(self.tz).date()
        while True:
            if self.is_working_day(day):
                opened, closed = self._opening_interval(day)
                begin = max(opened, current)
                available = closed - begin
                if available >= remaining:
                    return (begin + remaining).astimezone(self.tz)
                if available > timedelta(0):
                    remaining -= available
            day += _ONE_DAY
