"""Digests for agents and customers: periods, targets, idempotence, isolation, language and HTML."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from pathlib import Path
from typing import cast
from zoneinfo import ZoneInfo

import pytest
from freezegun import freeze_time
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.cli.main import main
from gateway.core import clock
from gateway.core.config import ConfigError, load_config
from gateway.core.workdays import WorkingCalendar
from gateway.reports.digest import build
from gateway.reports.figures import AgentFigures, Figures, OpeningHours, latest_period
from gateway.runtime import Runtime
from gateway.store.database import Store, open_store
from tests.digest_support import (
    add_case,
    add_change,
    add_event,
    add_failed_mail,
    add_message,
    add_quarantined,
    digest_config,
    many_organisations,
)

OSLO = ZoneInfo("Europe/Oslo")


def oslo(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=OSLO)  # type: ignore[misc]


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    return digest_config(tmp_path)


@pytest.fixture
def store(config_file: Path) -> Iterator[Store]:
    opened = open_store(load_config(config_file).storage)
    yield opened
    opened.close()


def agent_figures(config_file: Path, now: datetime, kind: str = "daily") -> AgentFigures:
    runtime = Runtime(load_config(config_file))
    try:
        with freeze_time(now):
            period = latest_period(kind, clock.now(), runtime.calendar)
            figures = Figures(runtime.config, runtime.store, runtime.registry(), runtime.calendar)
            return figures.agents(period, clock.now())
    finally:
        runtime.close()


def digest(config_file: Path, now: datetime, *args: str) -> int:
    with freeze_time(now):
        return main(["--config", str(config_file), "digest", *args])


def queued(store: Store) -> list[EmailMessage]:
    rows = store.query("SELECT raw FROM outbox WHERE kind LIKE 'digest-%' ORDER BY id")
    return [cast(EmailMessage, message_from_bytes(bytes(r["raw"]), policy=default)) for r in rows]


def part(message: EmailMessage, subtype: str) -> str:
    body = message.get_body((subtype,))
    assert body is not None, f"no text/{subtype} part"
    return cast(str, body.get_content())


def breached(figures: AgentFigures) -> set[tuple[str, str]]:
    return {(b.case.subject, b.target) for b in figures.breaches}


def test_periods_follow_oslo_calendar_days_and_iso_weeks() -> None:
    """Daily is yesterday and weekly last Monday to Sunday, both in Oslo time, across midnight UTC and DST."""
    calendar = WorkingCalendar("Europe/Oslo")
    # 00:30 on Tuesday in Oslo is still Monday in UTC: yesterday is Monday in Oslo.
    daily = latest_period("daily", oslo(2026, 11, 24, 0, 30), calendar)
    assert (daily.first_day.isoformat(), daily.last_day.isoformat()) == ("2026-11-23", "2026-11-23")
    weekly = latest_period("weekly", oslo(2026, 11, 30, 0, 30), calendar)
    assert (weekly.first_day.isoformat(), weekly.last_day.isoformat()) == ("2026-11-23", "2026-11-29")
    assert latest_period("weekly", oslo(2026, 11, 29, 23, 30), calendar).first_day.isoformat() == "2026-11-16"
    # The day the clocks go back has 25 hours.
    autumn = latest_period("daily", oslo(2026, 10, 26, 6, 0), calendar)
    assert (autumn.end - autumn.start).total_seconds() == 25 * 3600


def test_normal_case_from_friday_afternoon_is_not_late_on_monday_morning(
    config_file: Path, store: Store
) -> None:
    """Four opening hours from Friday 15:00 run out Monday 11:30: the weekend does not count."""
    add_case(store, "Fredagssak", oslo(2026, 11, 20, 15, 0))
    assert breached(agent_figures(config_file, oslo(2026, 11, 23, 8, 30))) == set()
    assert breached(agent_figures(config_file, oslo(2026, 11, 23, 11, 29))) == set()
    assert breached(agent_figures(config_file, oslo(2026, 11, 23, 11, 31))) == {
        ("Fredagssak", "first-response")
    }


def test_easter_holidays_do_not_count_towards_targets(config_file: Path, store: Store) -> None:
    """A case from Wednesday before Easter has used two opening hours by Tuesday after it."""
    add_case(store, "Før påske", oslo(2026, 4, 1, 14, 0))
    figures = agent_figures(config_file, oslo(2026, 4, 7, 8, 30))
    assert breached(figures) == set()
    figures = agent_figures(config_file, oslo(2026, 4, 7, 10, 31))
    assert [(b.target, round(b.elapsed_hours, 2)) for b in figures.breaches] == [("first-response", 4.02)]


def test_critical_cases_count_round_the_clock(config_file: Path, store: Store) -> None:
    """A critical case opened on Saturday night is late after 30 minutes; a normal one is not."""
    add_case(store, "Kritisk lørdag", oslo(2026, 11, 21, 22, 0), priority="critical")
    add_case(store, "Vanlig lørdag", oslo(2026, 11, 21, 22, 0))
    assert breached(agent_figures(config_file, oslo(2026, 11, 21, 22, 45))) == {
        ("Kritisk lørdag", "first-response")
    }
    late = breached(agent_figures(config_file, oslo(2026, 11, 22, 2, 30)))
    assert late == {("Kritisk lørdag", "first-response"), ("Kritisk lørdag", "resolution")}


@settings(max_examples=200, deadline=None)
@given(
    start=st.datetimes(datetime(2025, 12, 1), datetime(2026, 12, 31), timezones=st.just(OSLO)),
    span=st.timedeltas(timedelta(0), timedelta(days=60)),
)
def test_summed_opening_hours_match_the_calendar(start: datetime, span: timedelta) -> None:
    """Opening hours summed per whole day equal the calendar's own count, across DST and holidays."""
    calendar = WorkingCalendar("Europe/Oslo")
    hours = OpeningHours(calendar, date(2026, 3, 1))  # spans start before and after the origin
    expected = calendar.business_seconds_between(start, start + span)
    assert hours.between(start, start + span) == pytest.approx(expected, abs=1e-6)


def test_targets_come_from_config(tmp_path: Path) -> None:
    """A [targets] table in the config moves the deadline for that priority."""
    path = digest_config(tmp_path)
    path.write_text(
        path.read_text() + "\n[targets]\nnormal = { first_response_minutes = 30 }\n", encoding="utf-8"
    )
    opened = open_store(load_config(path).storage)
    add_case(opened, "Kort frist", oslo(2026, 11, 23, 9, 0))
    opened.close()
    assert breached(agent_figures(path, oslo(2026, 11, 23, 9, 45))) == {("Kort frist", "first-response")}
    path.write_text(path.read_text() + "urgent = { resolution_hours = 1 }\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"targets\.urgent: unknown priority"):
        load_config(path)


def test_same_period_twice_sends_once(
    config_file: Path, store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    """The second run for a period queues nothing and says the digest was already sent."""
    add_case(store, "Nettet er tregt", oslo(2026, 11, 23, 9, 0))
    assert digest(config_file, oslo(2026, 11, 24, 6, 0), "--period", "daily") == 0
    assert "queued daily digest for 2026-11-23" in capsys.readouterr().out
    assert digest(config_file, oslo(2026, 11, 24, 7, 0), "--period", "daily") == 0
    assert "already sent" in capsys.readouterr().out
    mails = queued(store)
    assert len(mails) == 1
    assert {a.addr_spec for a in mails[0]["To"].addresses} == {"mona@service.example", "erik@service.example"}


def test_missed_day_catches_up_once(
    config_file: Path, store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    """After a day without cron the next runs send the latest day once, not one digest per missed day."""
    digest(config_file, oslo(2026, 11, 24, 6, 0), "--period", "daily")
    # No run on Wednesday 25th; Thursday's first run sends Wednesday's digest, the next one nothing.
    digest(config_file, oslo(2026, 11, 26, 9, 0), "--period", "daily")
    digest(config_file, oslo(2026, 11, 26, 10, 0), "--period", "daily")
    sent = store.query("SELECT period_start FROM digests_sent WHERE audience = 'agents' ORDER BY id")
    assert [r["period_start"] for r in sent] == ["2026-11-23", "2026-11-25"]
    assert len(queued(store)) == 2
    assert capsys.readouterr().out.count("already sent") == 1


def test_weekly_and_daily_are_recorded_apart(config_file: Path, store: Store) -> None:
    """A Monday runs both the daily and the weekly digest; neither blocks the other."""
    digest(config_file, oslo(2026, 11, 30, 6, 0), "--period", "daily")
    digest(config_file, oslo(2026, 11, 30, 6, 0), "--period", "weekly")
    rows = store.query("SELECT period, period_start, period_end FROM digests_sent ORDER BY id")
    assert [tuple(r.values()) for r in rows] == [
        ("daily", "2026-11-29", "2026-11-29"),
        ("weekly", "2026-11-23", "2026-11-29"),
    ]


def test_dry_run_prints_and_records_nothing(
    config_file: Path, store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    """--dry-run shows recipients, subject and text, and leaves no outbox row or record behind."""
    add_case(store, "Trådløst nett faller ut", oslo(2026, 11, 23, 9, 0))
    assert digest(config_file, oslo(2026, 11, 24, 6, 0), "--period", "daily", "--dry-run") == 0
    out = capsys.readouterr().out
    assert "To: erik@service.example, mona@service.example" in out
    assert "Subject: Daglig oversikt mandag 23. november 2026" in out
    assert "Trådløst nett faller ut" in out
    assert queued(store) == []
    assert store.query("SELECT * FROM digests_sent") == []


def test_digest_to_an_address_is_recorded_for_that_address(config_file: Path, store: Store) -> None:
    """--to ADDRESS sends the agents' digest there, once, independently of the agents' own."""
    digest(config_file, oslo(2026, 11, 24, 6, 0), "--period", "daily", "--to", "Leder@Service.example")
    digest(config_file, oslo(2026, 11, 24, 6, 5), "--period", "daily", "--to", "leder@service.example")
    digest(config_file, oslo(2026, 11, 24, 6, 10), "--period", "daily")
    assert [m["To"] for m in queued(store)] == [
        "leder@service.example",
        "erik@service.example, mona@service.example",
    ]


def test_agents_digest_counts_what_needs_attention(config_file: Path, store: Store) -> None:
    """Missing information, quarantine, held mail, bounces and unsent change notices all reach the digest."""
    asked = add_case(store, "Mangler MAC-adresse", oslo(2026, 11, 23, 9, 0), status="pending")
    add_event(store, asked, "asked-missing", oslo(2026, 11, 23, 9, 1))
    answered = add_case(store, "Har svart", oslo(2026, 11, 23, 9, 0))
    add_event(store, answered, "asked-missing", oslo(2026, 11, 23, 9, 1))
    add_message(store, oslo(2026, 11, 23, 12, 0), case_id=answered)
    add_message(store, oslo(2026, 11, 23, 12, 0), disposition="held")
    add_quarantined(store, oslo(2026, 11, 23, 13, 0))
    add_failed_mail(store, oslo(2026, 11, 23, 14, 0), "borte@nordby-skole.example", "bounced: no such user")
    add_failed_mail(store, oslo(2026, 11, 23, 14, 0), "feil@nordby-skole.example", "550 rejected")
    add_change(store, ["nordby-skole"], "Oppgradering", oslo(2026, 12, 3, 22, 0), oslo(2026, 12, 4, 2, 0))
    figures = agent_figures(config_file, oslo(2026, 11, 24, 6, 0))
    assert [c.subject for c in figures.awaiting_information] == ["Mangler MAC-adresse"]
    assert (figures.held, figures.held_waiting, figures.quarantined, figures.quarantine_waiting) == (
        1,
        1,
        1,
        1,
    )
    assert (figures.bounces, figures.failed) == (1, 1)
    assert [(c.title, c.notice) for c in figures.changes.unsent_notices] == [("Oppgradering", "none")]
    assert figures.totals == {"new": 0, "open": 1, "pending": 1}


def test_digest_works_without_change_tables(config_file: Path, store: Store) -> None:
    """A store without the change tables still gets a digest, saying the register is not in use."""
    for table in ("change_events", "change_notices", "change_organizations", "monitoring_alerts", "changes"):
        store.conn.execute(f"DROP TABLE IF EXISTS {table}")
    figures = agent_figures(config_file, oslo(2026, 11, 24, 6, 0))
    assert not figures.changes.available
    runtime = Runtime(load_config(config_file))
    with freeze_time(oslo(2026, 11, 24, 6, 0)):
        (mail,), _ = build(runtime, figures.period, "agents", clock.now())
    runtime.close()
    assert "Endringsregisteret er ikke tatt i bruk ennå." in mail.text


def test_customer_digests_never_show_another_organisations_cases(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Thirty organisations with cases each: every digest holds exactly its own organisation's cases."""
    config_file = digest_config(tmp_path, registry=many_organisations(tmp_path, 30))
    store = open_store(load_config(config_file).storage)
    own: dict[str, set[int]] = {}
    for n in range(30):
        for k in range(n % 4 + 1):
            case = add_case(
                store,
                f"Sak {k} for org-{n:02d}",
                oslo(2026, 11, 20, 9, k),
                organization=f"org-{n:02d}",
                status="pending" if k == 1 else "open",
            )
            own.setdefault(f"support@org{n:02d}.example", set()).add(case)
    every_case = set().union(*own.values())
    digest(config_file, oslo(2026, 11, 24, 6, 0), "--period", "daily", "--to", "customers")
    mails = queued(store)
    store.close()
    assert len(mails) == 30
    for mail in mails:
        (address,) = [a.addr_spec for a in mail["To"].addresses]
        org = address.split("@")[1].removesuffix(".example")
        for text in (part(mail, "plain"), part(mail, "html")):
            tags = {int(t) for t in re.findall(r"SSC#(\d+)", text)} & every_case
            assert tags == own[address], address
            subjects = set(re.findall(r"Sak \d for (org-\d\d)", text))
            assert subjects == {f"org-{org[3:]}"}


def test_each_recipient_gets_their_own_language(tmp_path: Path) -> None:
    """Customers get their organisation's language; agents get the service language."""
    config_file = digest_config(tmp_path, registry=many_organisations(tmp_path, 3))
    english = config_file.read_text(encoding="utf-8").replace('language = "nb"', 'language = "en"', 1)
    config_file.write_text(english, encoding="utf-8")
    store = open_store(load_config(config_file).storage)
    for n in range(3):
        add_case(store, f"Sak {n}", oslo(2026, 11, 23, 9, 0), organization=f"org-{n:02d}")
    digest(config_file, oslo(2026, 11, 24, 6, 0), "--period", "daily", "--to", "customers")
    digest(config_file, oslo(2026, 11, 24, 6, 0), "--period", "daily")
    subjects = {str(m["To"]): str(m["Subject"]) for m in queued(store)}
    store.close()
    assert subjects["support@org00.example"].startswith("Overview of Organisasjon 00's cases")
    assert subjects["support@org01.example"].startswith("Oversikt over sakene til Organisasjon 01")
    assert subjects["erik@service.example, mona@service.example"] == "Daily overview Monday 23 November 2026"


def test_html_part_escapes_subjects_and_text_part_keeps_them(config_file: Path, store: Store) -> None:
    """A subject with <script> is escaped in the HTML part; both parts sit in multipart/alternative."""
    add_case(store, 'Nettet er nede <script>alert("x")</script>', oslo(2026, 11, 23, 9, 0))
    digest(config_file, oslo(2026, 11, 24, 6, 0), "--period", "daily")
    digest(config_file, oslo(2026, 11, 24, 6, 0), "--period", "daily", "--to", "customers")
    mails = queued(store)
    assert len(mails) == 2
    for mail in mails:
        assert mail.get_content_type() == "multipart/alternative"
        assert [p.get_content_type() for p in mail.iter_parts()] == ["text/plain", "text/html"]
        assert mail["Auto-Submitted"] == "auto-generated"
        html = part(mail, "html")
        assert "<script>" not in html
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
        assert '<script>alert("x")</script>' in part(mail, "plain")


def test_digest_html_renders_in_chromium(config_file: Path, store: Store, tmp_path: Path) -> None:
    """The agents' and a customer's HTML render in headless Chromium to a real screenshot."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (bash .ci/install-chromium installs it as root)")
    first = add_case(store, "Trådløst nett faller ut i bygg 3", oslo(2026, 11, 20, 15, 0))
    add_event(store, first, "asked-missing", oslo(2026, 11, 20, 15, 1))
    add_case(store, "Kritisk: campus uten nett", oslo(2026, 11, 23, 22, 0), priority="critical")
    add_case(store, "Skriver får ikke IP", oslo(2026, 11, 23, 10, 0), status="pending", category="question")
    add_case(
        store, "Løst sak", oslo(2026, 11, 23, 9, 0), status="resolved", resolved=oslo(2026, 11, 23, 11, 0)
    )
    add_change(
        store, ["nordby-skole"], "Programvareoppgradering", oslo(2026, 12, 3, 22, 0), oslo(2026, 12, 4, 2, 0)
    )
    runtime = Runtime(load_config(config_file))
    with freeze_time(oslo(2026, 11, 24, 6, 0)):
        period = latest_period("daily", clock.now(), runtime.calendar)
        agents, _ = build(runtime, period, "agents", clock.now())
        customers, _ = build(runtime, period, "customers", clock.now())
    runtime.close()
    for name, mail in (("agents", agents[0]), ("customer", customers[0])):
        page, png = tmp_path / f"{name}.html", tmp_path / f"{name}.png"
        page.write_text(mail.html, encoding="utf-8")
        subprocess.run(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={tmp_path / 'chromium-profile'}",
                f"--screenshot={png}",
                "--window-size=800,1400",
                page.as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        assert png.exists() and png.stat().st_size > 20_000, f"{png} looks empty"
