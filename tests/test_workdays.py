"""Tests for gateway.workdays: Norwegian working days, notice deadlines, opening hours."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import holidays
import pytest

from gateway.core.workdays import WorkingCalendar

OSLO = ZoneInfo("Europe/Oslo")
FULL_DAY = 7.5 * 3600  # 08:00-15:30


def oslo(y: int, m: int, d: int, hh: int = 0, mm: int = 0, ss: int = 0) -> datetime:
    return datetime(y, m, d, hh, mm, ss, tzinfo=OSLO)


def days(start: date, end: date) -> Iterator[date]:
    """Yield every date in [start, end]."""
    day = start
    while day <= end:
        yield day
        day += timedelta(days=1)


@pytest.fixture(scope="module")
def cal() -> WorkingCalendar:
    return WorkingCalendar()


# --------------------------------------------------------------------- holidays

# Easter Sunday worked out by hand and cross-checked against an almanac; the
# movable holidays below are derived from these by hand (-3, -2, +1, +39, +50).
EASTER_SUNDAY = {
    2025: date(2025, 4, 20),
    2026: date(2026, 4, 5),
    2027: date(2027, 3, 28),
    2028: date(2028, 4, 16),
}

PUBLIC_HOLIDAYS = [
    # 2025
    (date(2025, 1, 1), "Første nyttårsdag"),
    (date(2025, 4, 17), "Skjærtorsdag"),
    (date(2025, 4, 18), "Langfredag"),
    (date(2025, 4, 21), "Andre påskedag"),
    (date(2025, 5, 1), "Arbeidernes dag"),
    (date(2025, 5, 17), "Grunnlovsdag"),
    (date(2025, 5, 29), "Kristi himmelfartsdag"),
    (date(2025, 6, 9), "Andre pinsedag"),
    (date(2025, 12, 25), "Første juledag"),
    (date(2025, 12, 26), "Andre juledag"),
    # 2026
    (date(2026, 1, 1), "Første nyttårsdag"),
    (date(2026, 4, 2), "Skjærtorsdag"),
    (date(2026, 4, 3), "Langfredag"),
    (date(2026, 4, 6), "Andre påskedag"),
    (date(2026, 5, 1), "Arbeidernes dag"),
    (date(2026, 5, 14), "Kristi himmelfartsdag"),
    (date(2026, 5, 17), "Grunnlovsdag"),
    (date(2026, 5, 25), "Andre pinsedag"),
    (date(2026, 12, 25), "Første juledag"),
    (date(2026, 12, 26), "Andre juledag"),
    # 2027: Whit Monday and Constitution Day coincide on 17 May
    (date(2027, 1, 1), "Første nyttårsdag"),
    (date(2027, 3, 25), "Skjærtorsdag"),
    (date(2027, 3, 26), "Langfredag"),
    (date(2027, 3, 29), "Andre påskedag"),
    (date(2027, 5, 1), "Arbeidernes dag"),
    (date(2027, 5, 6), "Kristi himmelfartsdag"),
    (date(2027, 5, 17), "Andre pinsedag"),
    (date(2027, 5, 17), "Grunnlovsdag"),
    (date(2027, 12, 25), "Første juledag"),
    (date(2027, 12, 26), "Andre juledag"),
    # 2028
    (date(2028, 1, 1), "Første nyttårsdag"),
    (date(2028, 4, 13), "Skjærtorsdag"),
    (date(2028, 4, 14), "Langfredag"),
    (date(2028, 4, 17), "Andre påskedag"),
    (date(2028, 5, 1), "Arbeidernes dag"),
    (date(2028, 5, 17), "Grunnlovsdag"),
    (date(2028, 5, 25), "Kristi himmelfartsdag"),
    (date(2028, 6, 5), "Andre pinsedag"),
    (date(2028, 12, 25), "Første juledag"),
    (date(2028, 12, 26), "Andre juledag"),
]


def _computus(year: int) -> date:
    """Anonymous Gregorian (Meeus/Jones/Butcher) Easter algorithm."""
    a = year % 19
    b, c = divmod(year, 100)
    d, e = divmod(b, 4)
    f = (b + 8) // 25
    g = (b - f + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = divmod(c, 4)
    l_ = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * l_) // 451
    month, day = divmod(h + l_ - 7 * m + 114, 31)
    return date(year, month, day + 1)


@pytest.mark.parametrize(("year", "easter"), sorted(EASTER_SUNDAY.items()))
def test_easter_table_matches_independent_computus(year: int, easter: date) -> None:
    """The hand-written Easter Sunday dates agree with an independent computus."""
    assert _computus(year) == easter
    assert easter.weekday() == 6


@pytest.mark.parametrize(("year", "easter"), sorted(EASTER_SUNDAY.items()))
def test_movable_holidays_follow_easter(cal: WorkingCalendar, year: int, easter: date) -> None:
    """Maundy Thursday to Whit Monday sit at fixed offsets from Easter Sunday."""
    offsets = {
        -3: "Skjærtorsdag",
        -2: "Langfredag",
        1: "Andre påskedag",
        39: "Kristi himmelfartsdag",
        50: "Andre pinsedag",
    }
    for offset, name in offsets.items():
        day = easter + timedelta(days=offset)
        assert (day, name) in PUBLIC_HOLIDAYS
        assert name in (cal.holiday_name(day) or "")


@pytest.mark.parametrize(("day", "name"), PUBLIC_HOLIDAYS)
def test_public_holidays_are_not_working_days(cal: WorkingCalendar, day: date, name: str) -> None:
    """Each Norwegian public holiday is a non-working day and carries its Norwegian name."""
    assert not cal.is_working_day(day)
    assert cal.is_holiday(day)
    found = cal.holiday_name(day)
    assert found is not None
    assert name in found.split("; ")


def test_holiday_table_is_complete(cal: WorkingCalendar) -> None:
    """Apart from Easter and Whit Sunday, the table lists every public holiday in 2025-2028."""
    listed = {day for day, _ in PUBLIC_HOLIDAYS}
    sundays = set(EASTER_SUNDAY.values()) | {e + timedelta(days=49) for e in EASTER_SUNDAY.values()}
    found = {day for day in days(date(2025, 1, 1), date(2028, 12, 31)) if cal.is_holiday(day)}
    assert found == listed | sundays


@pytest.mark.parametrize(
    ("day", "working"),
    [
        (date(2025, 12, 24), True),  # Wednesday
        (date(2025, 12, 31), True),  # Wednesday
        (date(2026, 12, 24), True),  # Thursday
        (date(2026, 12, 31), True),  # Thursday
        (date(2027, 12, 24), True),  # Friday
        (date(2027, 12, 31), True),  # Friday
        (date(2028, 12, 24), False),  # Sunday
        (date(2028, 12, 31), False),  # Sunday
    ],
)
def test_christmas_and_new_years_eve_are_working_days_on_weekdays(
    cal: WorkingCalendar, day: date, working: bool
) -> None:
    """24 and 31 December are not holidays: working days exactly when weekdays."""
    assert cal.holiday_name(day) is None
    assert cal.is_working_day(day) is working
    assert (day.weekday() < 5) is working


@pytest.mark.parametrize(
    ("day", "working"),
    [
        (date(2026, 3, 27), True),  # Friday
        (date(2026, 3, 28), False),  # Saturday
        (date(2026, 3, 29), False),  # Sunday
        (date(2026, 3, 30), True),  # Monday
        (date(2026, 4, 1), True),  # Wednesday before Easter
        (date(2026, 4, 4), False),  # Easter Saturday
        (date(2026, 4, 5), False),  # Easter Sunday
        (date(2026, 4, 7), True),  # Tuesday after Easter Monday
        (date(2026, 5, 15), True),  # Friday after Ascension Day
        (date(2026, 5, 23), False),  # Whitsun Eve, a Saturday
    ],
)
def test_weekends_and_ordinary_weekdays(cal: WorkingCalendar, day: date, working: bool) -> None:
    """Saturdays and Sundays are never working days; ordinary weekdays always are."""
    assert cal.is_working_day(day) is working


def test_sundays_are_not_reported_as_holidays(cal: WorkingCalendar) -> None:
    """Ordinary Sundays are weekend days, not named holidays (include_sundays is not used)."""
    assert cal.holiday_name(date(2026, 3, 29)) is None
    assert not cal.is_working_day(date(2026, 3, 29))


def test_holiday_sets_are_cached_per_year(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each year's holiday set is built once per calendar and then reused."""
    calls: list[Any] = []
    real = holidays.country_holidays

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs.get("years"))
        return real(*args, **kwargs)

    monkeypatch.setattr(holidays, "country_holidays", counting)
    fresh = WorkingCalendar()
    for day in days(date(2026, 1, 1), date(2027, 12, 31)):
        fresh.is_working_day(day)
    assert calls == [2026, 2027]


# ---------------------------------------------------------------- day arithmetic


@pytest.mark.parametrize(
    ("start", "n", "expected"),
    [
        (date(2026, 3, 27), 1, date(2026, 3, 30)),  # Friday -> Monday
        (date(2026, 3, 28), 1, date(2026, 3, 30)),  # Saturday -> Monday
        (date(2026, 4, 1), 1, date(2026, 4, 7)),  # over Easter
        (date(2026, 4, 7), -1, date(2026, 4, 1)),  # back over Easter
        (date(2026, 3, 30), -1, date(2026, 3, 27)),  # Monday -> Friday
        (date(2026, 3, 28), 0, date(2026, 3, 28)),  # zero leaves the day alone
        (date(2026, 12, 23), 3, date(2026, 12, 29)),  # 24th, (25, 26, 27 off), 28th, 29th
        (date(2026, 3, 23), 10, date(2026, 4, 9)),
    ],
)
def test_add_working_days(cal: WorkingCalendar, start: date, n: int, expected: date) -> None:
    """add_working_days skips weekends and holidays and never counts the start day."""
    assert cal.add_working_days(start, n) == expected


def test_working_days_before_matches_negative_add(cal: WorkingCalendar) -> None:
    """working_days_before(d, n) is add_working_days(d, -n) and rejects negative n."""
    assert cal.working_days_before(date(2026, 4, 8), 8) == date(2026, 3, 24)
    assert cal.working_days_before(date(2026, 4, 8), 0) == date(2026, 4, 8)
    with pytest.raises(ValueError):
        cal.working_days_before(date(2026, 4, 8), -1)


# ---------------------------------------------------------------------- notices


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        # The reference example: 24-27, 30, 31 March, 1 and 7 April are the 8.
        (date(2026, 4, 8), date(2026, 3, 24)),
        # Change on an ordinary Monday.
        (date(2026, 3, 16), date(2026, 3, 4)),
        # Change on a Saturday: only working days before it count.
        (date(2026, 3, 28), date(2026, 3, 18)),
        # Right after Easter Monday.
        (date(2025, 4, 22), date(2025, 4, 7)),
        (date(2026, 4, 7), date(2026, 3, 23)),
        (date(2027, 3, 30), date(2027, 3, 15)),
        (date(2028, 4, 18), date(2028, 4, 3)),
        # Right after Ascension Day (Thursday).
        (date(2026, 5, 15), date(2026, 5, 4)),
        # Right after Whit Monday (Ascension Day also inside the window).
        (date(2026, 5, 26), date(2026, 5, 12)),
        # Right after 17 May 2027 (Whit Monday as well).
        (date(2027, 5, 18), date(2027, 5, 4)),
        # Right after 17 May 2028 (a Wednesday).
        (date(2028, 5, 18), date(2028, 5, 5)),
        # Right after New Year's Day 2027; 24 and 31 December count.
        (date(2027, 1, 4), date(2026, 12, 21)),
    ],
)
def test_last_notice_day(cal: WorkingCalendar, change: date, expected: date) -> None:
    """The latest notice day is the 8th working day strictly before the change day."""
    assert cal.last_notice_day(change) == expected
    assert cal.working_days_between(expected, change) == 8


@pytest.mark.parametrize(
    ("days_", "expected"),
    [(1, date(2026, 4, 7)), (2, date(2026, 4, 1)), (8, date(2026, 3, 24))],
)
def test_last_notice_day_with_explicit_days(cal: WorkingCalendar, days_: int, expected: date) -> None:
    """An explicit days argument overrides the calendar's default notice period."""
    assert cal.last_notice_day(date(2026, 4, 8), days=days_) == expected


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        # 22:30 UTC on 7 April is 00:30 on 8 April in Oslo (CEST).
        (datetime(2026, 4, 7, 22, 30, tzinfo=UTC), date(2026, 3, 24)),
        (datetime(2026, 4, 7, 21, 59, tzinfo=UTC), date(2026, 3, 23)),
        (oslo(2026, 4, 8, 0, 30), date(2026, 3, 24)),
        # Naive datetimes are local wall-clock time.
        (datetime(2026, 4, 8, 0, 30), date(2026, 3, 24)),
    ],
)
def test_last_notice_day_converts_datetimes_to_local_date(
    cal: WorkingCalendar, change: datetime, expected: date
) -> None:
    """Aware change times are converted to Europe/Oslo before the change day is taken."""
    assert cal.last_notice_day(change) == expected


@pytest.mark.parametrize("bad", [0, -1])
def test_notice_days_must_be_positive(cal: WorkingCalendar, bad: int) -> None:
    """A notice period of less than one working day is rejected."""
    with pytest.raises(ValueError):
        cal.last_notice_day(date(2026, 4, 8), days=bad)
    with pytest.raises(ValueError):
        cal.earliest_change_start(date(2026, 4, 8), days=bad)
    with pytest.raises(ValueError):
        WorkingCalendar(notice_days=bad)


@pytest.mark.parametrize(
    ("notice", "expected"),
    [
        (date(2026, 3, 24), date(2026, 4, 8)),  # inverse of the reference example
        (date(2026, 4, 1), date(2026, 4, 16)),  # 1, 7-10, 13-15 April
        # Weekend notice counts from Monday 23 March; the 8th day is 1 April.
        (date(2026, 3, 21), date(2026, 4, 2)),
        # Notice on Good Friday counts from Tuesday 7 April.
        (date(2026, 4, 3), date(2026, 4, 17)),
        # 21-24 and 28-31 December are the 8; changes from 1 to 4 January 2027
        # all share the 21 December deadline, so the earliest is New Year's Day.
        (date(2026, 12, 21), date(2027, 1, 1)),
    ],
)
def test_earliest_change_start(cal: WorkingCalendar, notice: date, expected: date) -> None:
    """The earliest change day follows the 8th counted day, counted from the next working day."""
    assert cal.earliest_change_start(notice) == expected


@pytest.mark.parametrize("year", [2026, 2027, 2028])
def test_notice_round_trip_over_every_day(cal: WorkingCalendar, year: int) -> None:
    """earliest_change_start(d) is the smallest change day with last_notice_day >= d."""
    one = timedelta(days=1)
    for d in days(date(year, 1, 1), date(year, 12, 31)):
        start = cal.earliest_change_start(d)
        assert cal.last_notice_day(start) >= d
        assert cal.last_notice_day(start - one) < d
        # A notice sent on a working day is exactly the deadline for that change.
        if cal.is_working_day(d):
            assert cal.last_notice_day(start) == d
        # And the other direction: the deadline for a change on d allows d.
        notice = cal.last_notice_day(d)
        assert cal.is_working_day(notice)
        assert cal.working_days_between(notice, d) == 8
        assert cal.earliest_change_start(notice) <= d


# ---------------------------------------------------------------- opening hours


@pytest.mark.parametrize(
    ("at", "is_open"),
    [
        (oslo(2026, 3, 23, 7, 59), False),
        (oslo(2026, 3, 23, 8, 0), True),
        (oslo(2026, 3, 23, 15, 29), True),
        (oslo(2026, 3, 23, 15, 29, 59), True),
        (oslo(2026, 3, 23, 15, 30), False),
        (oslo(2026, 3, 28, 10, 0), False),  # Saturday
        (oslo(2028, 5, 17, 10, 0), False),  # 17 May on a Wednesday
        (oslo(2027, 5, 17, 10, 0), False),  # 17 May on a Monday
        (oslo(2026, 4, 2, 10, 0), False),  # Maundy Thursday
        (oslo(2026, 12, 24, 10, 0), True),  # Christmas Eve on a Thursday
        # UTC inputs: 07:00Z is 08:00 CET in winter, 06:00Z is 08:00 CEST.
        (datetime(2026, 3, 23, 6, 59, tzinfo=UTC), False),
        (datetime(2026, 3, 23, 7, 0, tzinfo=UTC), True),
        (datetime(2026, 3, 30, 5, 59, tzinfo=UTC), False),
        (datetime(2026, 3, 30, 6, 0, tzinfo=UTC), True),
        (datetime(2026, 3, 30, 13, 29, tzinfo=UTC), True),
        (datetime(2026, 3, 30, 13, 30, tzinfo=UTC), False),
    ],
)
def test_is_open(cal: WorkingCalendar, at: datetime, is_open: bool) -> None:
    """Opening hours are 08:00 inclusive to 15:30 exclusive, Oslo time, on working days only."""
    assert cal.is_open(at) is is_open


def test_naive_datetimes_are_rejected(cal: WorkingCalendar) -> None:
    """Opening-hours functions refuse naive datetimes rather than guess a zone."""
    naive = datetime(2026, 3, 23, 9, 0)
    with pytest.raises(ValueError):
        cal.is_open(naive)
    with pytest.raises(ValueError):
        cal.next_opening(naive)
    with pytest.raises(ValueError):
        cal.business_seconds_between(naive, oslo(2026, 3, 23, 10))
    with pytest.raises(ValueError):
        cal.add_business_time(naive, timedelta(hours=1))


def test_custom_opening_hours_are_validated() -> None:
    """A calendar with other hours uses them, and closing must come after opening."""
    late = WorkingCalendar(opens=time(9, 0), closes=time(17, 0))
    assert not late.is_open(oslo(2026, 3, 23, 8, 30))
    assert late.is_open(oslo(2026, 3, 23, 16, 30))
    with pytest.raises(ValueError):
        WorkingCalendar(opens=time(16, 0), closes=time(8, 0))


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        (oslo(2026, 3, 23, 7, 0), oslo(2026, 3, 23, 8, 0)),  # before opening
        (oslo(2026, 3, 23, 10, 0), oslo(2026, 3, 23, 10, 0)),  # already open
        (oslo(2026, 3, 23, 15, 30), oslo(2026, 3, 24, 8, 0)),  # at closing
        (oslo(2026, 3, 27, 16, 0), oslo(2026, 3, 30, 8, 0)),  # Friday, over DST
        (oslo(2026, 3, 28, 12, 0), oslo(2026, 3, 30, 8, 0)),  # Saturday
        (oslo(2026, 4, 1, 15, 45), oslo(2026, 4, 7, 8, 0)),  # over Easter
        (oslo(2028, 5, 16, 18, 0), oslo(2028, 5, 18, 8, 0)),  # over 17 May
        (datetime(2026, 3, 29, 23, 0, tzinfo=UTC), oslo(2026, 3, 30, 8, 0)),
    ],
)
def test_next_opening(cal: WorkingCalendar, at: datetime, expected: datetime) -> None:
    """next_opening returns the moment itself when open, else the next 08:00 on a working day."""
    result = cal.next_opening(at)
    assert result == expected
    assert result.utcoffset() == expected.utcoffset()


def test_dst_fixture_dates_are_the_switch_days() -> None:
    """The DST test dates really are the last Sundays of March and October 2026."""
    assert oslo(2026, 3, 29, 1, 0).utcoffset() == timedelta(hours=1)
    assert oslo(2026, 3, 29, 4, 0).utcoffset() == timedelta(hours=2)
    assert oslo(2026, 10, 25, 1, 0).utcoffset() == timedelta(hours=2)
    assert oslo(2026, 10, 25, 4, 0).utcoffset() == timedelta(hours=1)
    for last_sunday in (date(2026, 3, 29), date(2026, 10, 25)):
        assert last_sunday.weekday() == 6
        assert (last_sunday + timedelta(days=7)).month != last_sunday.month


@pytest.mark.parametrize(
    ("start", "end", "seconds"),
    [
        (oslo(2026, 3, 23, 9, 0), oslo(2026, 3, 23, 10, 0), 3600),
        (oslo(2026, 3, 23, 7, 0), oslo(2026, 3, 23, 17, 0), FULL_DAY),
        (oslo(2026, 3, 28, 9, 0), oslo(2026, 3, 29, 17, 0), 0),  # weekend only
        # Across a weekend: 30 min on Friday, 1 h on Monday.
        (oslo(2026, 3, 20, 15, 0), oslo(2026, 3, 23, 9, 0), 5400),
        (oslo(2026, 3, 16, 8, 0), oslo(2026, 3, 23, 8, 0), 5 * FULL_DAY),
        # Across Easter 2026: Wednesday 1 April to Tuesday 7 April.
        (oslo(2026, 4, 1, 15, 0), oslo(2026, 4, 7, 9, 0), 5400),
        (oslo(2026, 4, 1, 8, 0), oslo(2026, 4, 8, 8, 0), 2 * FULL_DAY),
        # Over the spring DST switch (Sun 29 March): 14:00Z is 15:00 CET,
        # 07:00Z is 09:00 CEST.
        (
            datetime(2026, 3, 27, 14, 0, tzinfo=UTC),
            datetime(2026, 3, 30, 7, 0, tzinfo=UTC),
            5400,
        ),
        # A week spanning the spring switch is 7 days minus an hour of real
        # time but still five full business days.
        (oslo(2026, 3, 23, 8, 0), oslo(2026, 3, 30, 8, 0), 5 * FULL_DAY),
        # Over the autumn DST switch (Sun 25 October): 13:00Z is 15:00 CEST,
        # 08:00Z is 09:00 CET.
        (
            datetime(2026, 10, 23, 13, 0, tzinfo=UTC),
            datetime(2026, 10, 26, 8, 0, tzinfo=UTC),
            5400,
        ),
        (oslo(2026, 10, 19, 8, 0), oslo(2026, 10, 26, 8, 0), 5 * FULL_DAY),
        # Mixed zones on either end.
        (datetime(2026, 3, 23, 7, 0, tzinfo=UTC), oslo(2026, 3, 23, 9, 0), 3600),
    ],
)
def test_business_seconds_between(
    cal: WorkingCalendar, start: datetime, end: datetime, seconds: float
) -> None:
    """Only opening hours on working days count, measured in real seconds across DST changes."""
    assert cal.business_seconds_between(start, end) == seconds
    assert cal.business_seconds_between(end, start) == -seconds


@pytest.mark.parametrize(
    ("start", "duration", "expected"),
    [
        (oslo(2026, 3, 23, 9, 0), timedelta(hours=1), oslo(2026, 3, 23, 10, 0)),
        (oslo(2026, 3, 23, 15, 0), timedelta(hours=1), oslo(2026, 3, 24, 8, 30)),
        # Exactly to closing time stays on the same day.
        (oslo(2026, 3, 23, 8, 0), timedelta(hours=7.5), oslo(2026, 3, 23, 15, 30)),
        (oslo(2026, 3, 16, 8, 0), timedelta(hours=37.5), oslo(2026, 3, 20, 15, 30)),
        # Starting on a weekend begins counting at Monday's opening.
        (oslo(2026, 3, 21, 10, 0), timedelta(hours=1), oslo(2026, 3, 23, 9, 0)),
        (oslo(2026, 3, 21, 10, 0), timedelta(0), oslo(2026, 3, 21, 10, 0)),
        # Over Easter.
        (oslo(2026, 4, 1, 15, 0), timedelta(hours=1), oslo(2026, 4, 7, 8, 30)),
        # Over both DST switches.
        (oslo(2026, 3, 27, 15, 0), timedelta(hours=1), oslo(2026, 3, 30, 8, 30)),
        (oslo(2026, 10, 23, 15, 0), timedelta(hours=1), oslo(2026, 10, 26, 8, 30)),
        (
            datetime(2026, 3, 27, 14, 0, tzinfo=UTC),
            timedelta(hours=1),
            datetime(2026, 3, 30, 6, 30, tzinfo=UTC),
        ),
    ],
)
def test_add_business_time(
    cal: WorkingCalendar, start: datetime, duration: timedelta, expected: datetime
) -> None:
    """add_business_time returns the earliest Oslo instant with that opening time elapsed."""
    result = cal.add_business_time(start, duration)
    assert result == expected
    assert result.utcoffset() == expected.astimezone(OSLO).utcoffset()


def test_add_business_time_rejects_negative_durations(cal: WorkingCalendar) -> None:
    """A negative duration is an error rather than a silent backwards walk."""
    with pytest.raises(ValueError):
        cal.add_business_time(oslo(2026, 3, 23, 9), timedelta(seconds=-1))


DURATIONS = [
    timedelta(0),
    timedelta(seconds=1),
    timedelta(minutes=30),
    timedelta(hours=7, minutes=30),
    timedelta(hours=8),
    timedelta(hours=40),
    timedelta(days=3, minutes=7),
]

WINDOWS = [
    (oslo(2026, 3, 18), oslo(2026, 4, 10)),  # spring DST and Easter 2026
    (oslo(2026, 10, 21), oslo(2026, 10, 29)),  # autumn DST
    (oslo(2026, 12, 20), oslo(2027, 1, 6)),  # Christmas and New Year
    (oslo(2027, 5, 4), oslo(2027, 5, 20)),  # Ascension, 17 May / Whit Monday
]


@pytest.mark.parametrize(("window_start", "window_end"), WINDOWS)
@pytest.mark.parametrize("duration", DURATIONS)
def test_add_business_time_inverts_business_seconds(
    cal: WorkingCalendar,
    window_start: datetime,
    window_end: datetime,
    duration: timedelta,
) -> None:
    """business_seconds_between(s, add_business_time(s, d)) == d from any start time."""
    # A 97-minute step walks through every time of day, including closed hours.
    start = window_start
    while start < window_end:
        end = cal.add_business_time(start, duration)
        assert cal.business_seconds_between(start, end) == duration.total_seconds()
        assert end >= start
        # Earliest such instant: any positive duration ends inside opening
        # hours or exactly at closing time.
        if duration:
            assert cal.is_open(end - timedelta(microseconds=1))
        start += timedelta(minutes=97)


@pytest.mark.parametrize(("window_start", "window_end"), WINDOWS)
def test_business_seconds_inverts_add_business_time(
    cal: WorkingCalendar, window_start: datetime, window_end: datetime
) -> None:
    """Adding the business time between s and an open instant e lands exactly on e."""
    start = window_start + timedelta(hours=11)
    end = window_start
    while end < window_end:
        if end >= start and cal.is_open(end):
            elapsed = timedelta(seconds=cal.business_seconds_between(start, end))
            assert cal.add_business_time(start, elapsed) == end
        end += timedelta(minutes=53)
