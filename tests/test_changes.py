"""Planned and urgent changes: the 8-working-day rule, .ics notices, delivery alerts, replies, reminders."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from datetime import datetime
from email.message import EmailMessage
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from freezegun import freeze_time
from freezegun.api import FrozenDateTimeFactory
from icalendar import Calendar

from gateway.changes import notices as change_notices
from gateway.changes.notices import alert_undelivered
from gateway.changes.plans import (
    ChangeRefused,
    cancel_change,
    complete_change,
    plan_change,
    reschedule_change,
    send_reminders,
)
from gateway.cli.main import main
from gateway.pipeline.process import process
from gateway.runtime import Runtime
from tests.support import RecordingRelay, mail

OSLO = ZoneInfo("Europe/Oslo")
NORDBY_CHANGE = "it@nordby-skole.example"
FJELLVIK_CHANGE = "it-varsling@fjellvik.kommune.example"
VIC_CHANGE = "servicedesk@vestland-college.example"
LINE_1 = {"mona@service.example", "erik@service.example"}


@pytest.fixture
def clock_at() -> Iterator[FrozenDateTimeFactory]:
    """Oslo, Tuesday 24 March 2026 09:00: the last day a change on 8 April may be announced."""
    # real_asyncio: the recording relay's event loop keeps its own clock.
    with freeze_time(datetime(2026, 3, 24, 9, 0, tzinfo=OSLO), real_asyncio=True) as frozen:
        yield frozen


def _oslo(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=OSLO)  # type: ignore[arg-type, misc]


def _plan(
    runtime: Runtime,
    orgs: list[str],
    urgent: bool = False,
    start: datetime | None = None,
    conn: sqlite3.Connection | None = None,
) -> int:
    start = start or _oslo(2026, 4, 8, 22, 0)
    return plan_change(
        runtime,
        orgs,
        start,
        start.replace(hour=23, minute=59),
        "Programvareoppgradering av svitsjer",
        "Halvårlig oppgradering av programvaren på alle svitsjer.",
        "Nettet er borte i inntil 15 minutter per bygg.",
        urgent,
        "mona",
        conn=conn,
    )


def _flush(runtime: Runtime) -> None:
    change_notices.deliverer(runtime.config, runtime.store).flush()


def _calendar(message: EmailMessage) -> Calendar:
    parts = [p for p in message.iter_attachments() if p.get_content_type() == "text/calendar"]
    assert len(parts) == 1
    # Without its charset a client reads the UTF-8 of "Halvårlig" as ASCII and garbles it.
    assert parts[0].get_content_charset() == "utf-8"
    assert parts[0].get_param("method") in ("REQUEST", "CANCEL")
    return Calendar.from_ical(parts[0].get_content())


def _show(config_path: Path, capsys: pytest.CaptureFixture[str], change_id: int) -> dict[str, object]:
    capsys.readouterr()
    assert main(["--config", str(config_path), "change", "show", str(change_id), "--json"]) == 0
    return json.loads(capsys.readouterr().out)  # type: ignore[no-any-return]


def test_change_announced_on_the_last_notice_day_is_accepted(
    runtime: Runtime, clock_at: FrozenDateTimeFactory
) -> None:
    """A change on Wednesday 8 April 2026 planned on Tuesday 24 March 2026 meets the 8-working-day rule."""
    change_id = _plan(runtime, ["nordby-skole"])
    row = runtime.store.one("SELECT status, starts_at, sequence FROM changes WHERE id = ?", (change_id,))
    assert row == {"status": "planned", "starts_at": "2026-04-08T20:00:00.000000+00:00", "sequence": 0}


def test_change_a_day_too_late_is_refused_naming_the_earliest_start(
    runtime: Runtime,
    clock_at: FrozenDateTimeFactory,
    config_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Planned on 25 March, the same change is refused, naming 9 April as the earliest start (exit 65)."""
    clock_at.move_to(_oslo(2026, 3, 25, 9, 0))
    with pytest.raises(ChangeRefused, match="2026-04-09"):
        _plan(runtime, ["nordby-skole"])
    window = ["--start", "2026-04-08 22:00", "--end", "2026-04-09 02:00"]
    text = ["--title", "Oppgradering", "--description", "Ny programvare"]
    code = main(["--config", str(config_path), "change", "plan", "--org", "nordby-skole", *window, *text])
    err = capsys.readouterr().err
    assert code == 65
    assert "earliest" in err and "Thursday 2026-04-09" in err and "--urgent" in err
    assert runtime.store.one("SELECT count(*) AS n FROM changes")["n"] == 0
    assert runtime.store.one("SELECT count(*) AS n FROM outbox")["n"] == 0


def test_plan_change_can_join_the_callers_transaction(
    runtime: Runtime, clock_at: FrozenDateTimeFactory
) -> None:
    """Agent mail plans inside the pipeline's transaction; a refusal there leaves nothing half-written."""
    with runtime.store.write() as conn:
        _plan(runtime, ["nordby-skole"], conn=conn)
        with pytest.raises(ChangeRefused, match="unknown organisation 'ukjent'"):
            _plan(runtime, ["ukjent"], conn=conn)
    counts = [runtime.store.one(f"SELECT count(*) AS n FROM {t}")["n"] for t in ("changes", "change_notices")]
    assert counts == [1, 1]


def test_notices_go_to_change_contacts_in_each_organisations_language(
    runtime: Runtime, relay: RecordingRelay, clock_at: FrozenDateTimeFactory
) -> None:
    """Each organisation's `change` contacts, and nobody else, get the notice: bokmål, or English for VIC."""
    _plan(runtime, ["nordby-skole", "fjellvik-kommune", "vestland-college"])
    _flush(runtime)
    assert sorted(r for m in relay.received for r in m.rcpt_tos) == sorted(
        [NORDBY_CHANGE, FJELLVIK_CHANGE, VIC_CHANGE]
    )
    nb = relay.to(NORDBY_CHANGE)[0]
    assert nb.message["Subject"] == (
        "[Endring 1] Planlagt endring onsdag 8. april 2026: Programvareoppgradering av svitsjer"
    )
    assert "onsdag 8. april 2026 kl. 22:00–23:59" in nb.body and "Varslingspunkt Change" in nb.body
    assert nb.body.count("8. april 2026") == 1  # a window on one day names its date once
    en = relay.to(VIC_CHANGE)[0]
    assert en.message["Subject"].startswith("[Change 1] Planned change on Wednesday 8 April 2026")
    assert "Wednesday 8 April 2026, 22:00–23:59" in en.body and "Change notification point" in en.body


def test_calendar_event_keeps_its_uid_across_reschedule_and_cancel(
    runtime: Runtime, relay: RecordingRelay, clock_at: FrozenDateTimeFactory
) -> None:
    """The .ics has TZID Europe/Oslo and the window's times; updates reuse the UID with a higher SEQUENCE."""
    change_id = _plan(runtime, ["nordby-skole"])
    reschedule_change(runtime, change_id, _oslo(2026, 4, 15, 21, 0), _oslo(2026, 4, 15, 23, 0), False, "mona")
    cancel_change(runtime, change_id, "mona")
    _flush(runtime)
    notice, update, cancel = (r.message for r in relay.to(NORDBY_CHANGE))
    calendars = [_calendar(m) for m in (notice, update, cancel)]
    events = [c.walk("VEVENT")[0] for c in calendars]
    assert [str(c["METHOD"]) for c in calendars] == ["REQUEST", "REQUEST", "CANCEL"]
    assert [str(c.walk("VTIMEZONE")[0]["TZID"]) for c in calendars] == ["Europe/Oslo"] * 3
    assert events[0]["DTSTART"].params["TZID"] == "Europe/Oslo"
    assert events[0].decoded("DTSTART") == _oslo(2026, 4, 8, 22, 0)
    assert events[0].decoded("DTEND") == _oslo(2026, 4, 8, 23, 59)
    assert events[1].decoded("DTSTART") == _oslo(2026, 4, 15, 21, 0)
    assert len({str(e["UID"]) for e in events}) == 1
    assert [int(e["SEQUENCE"]) for e in events] == [0, 1, 2]
    assert str(events[2]["STATUS"]) == "CANCELLED"
    assert str(events[0]["DESCRIPTION"]).startswith("Halvårlig oppgradering")  # UTF-8 read as such
    assert [m.get_payload()[1].get_param("method") for m in (notice, update, cancel)] == [
        "REQUEST",
        "REQUEST",
        "CANCEL",
    ]
    assert update["In-Reply-To"] == notice["Message-ID"] == cancel["In-Reply-To"]
    assert (
        "Nytt tidspunkt" in update["Subject"]
        and "onsdag 8. april 2026 kl. 22:00" in update.get_body().get_content()
    )


def test_moving_a_change_earlier_is_held_to_the_rule_but_later_is_not(
    runtime: Runtime, clock_at: FrozenDateTimeFactory
) -> None:
    """Postponing keeps the notice customers had; pulling a change inside 8 working days is refused."""
    change_id = _plan(runtime, ["nordby-skole"])
    clock_at.move_to(_oslo(2026, 4, 1, 9, 0))
    reschedule_change(runtime, change_id, _oslo(2026, 4, 9, 22, 0), _oslo(2026, 4, 9, 23, 0), False, "mona")
    with pytest.raises(ChangeRefused, match="too short notice"):
        reschedule_change(
            runtime, change_id, _oslo(2026, 4, 8, 22, 0), _oslo(2026, 4, 8, 23, 0), False, "mona"
        )


def test_urgent_change_asks_technical_contacts_and_a_reply_threads_into_the_change(
    runtime: Runtime,
    relay: RecordingRelay,
    clock_at: FrozenDateTimeFactory,
    config_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An urgent change goes to change and technical contacts at once; a reply joins the change, no case."""
    change_id = _plan(runtime, ["fjellvik-kommune"], urgent=True, start=_oslo(2026, 3, 25, 20, 0))
    _flush(runtime)
    ola = "ola.bakken@fjellvik.kommune.example"
    assert sorted(r for m in relay.received for r in m.rcpt_tos) == [
        FJELLVIK_CHANGE,
        ola,
        "siri.lie@fjellvik.kommune.example",
    ]
    notice = relay.to(ola)[0]
    assert notice.message["Subject"].startswith("[Endring 1] Hasteendring onsdag 25. mars 2026")
    assert "Du står som Teknisk ansvarlig" in notice.body
    assert "Du står som Teknisk ansvarlig" not in relay.to(FJELLVIK_CHANGE)[0].body
    reply = mail(
        sender=f"Ola Bakken <{ola}>",
        subject=f"SV: {notice.message['Subject']}",
        body="Kan dere vente til etter kl. 21? Vi har kveldsmøte i bystyret.\n",
        headers={"In-Reply-To": notice.message["Message-ID"], "References": notice.message["Message-ID"]},
    )
    result = process(runtime, reply, "test")
    assert (result.outcome, result.case_id) == ("appended", None)
    assert runtime.store.one("SELECT count(*) AS n FROM cases")["n"] == 0
    history = _show(config_path, capsys, change_id)["history"]
    replies = [e for e in history if e["action"] == "reply"]  # type: ignore[union-attr]
    assert replies[0]["actor"] == ola and "bystyret" in replies[0]["message_body"]
    _flush(runtime)
    forwarded = [m for m in relay.received if set(m.rcpt_tos) == LINE_1]
    assert len(forwarded) == 1 and "bystyret" in forwarded[0].body
    assert relay.to(ola) == [notice]  # no receipt to the technical contact


def _dsn(original: bytes, recipient: str) -> bytes:
    """A Postfix-style delivery status notification carrying the original mail's headers."""
    headers = original.split(b"\r\n\r\n", 1)[0].decode()
    boundary = "4B1C2A0D3E.1774339500/mx.nordby-skole.example"
    text = f"""\
From: MAILER-DAEMON@mx.nordby-skole.example (Mail Delivery System)
Subject: Undelivered Mail Returned to Sender
To: kontakt@service.example
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="{boundary}"
Message-Id: <20260324080500.4B1C2A0D3E@mx.nordby-skole.example>
Date: Tue, 24 Mar 2026 09:05:00 +0100 (CET)

This is a MIME-encapsulated message.

--{boundary}
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mx.nordby-skole.example.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients.

<{recipient}>: unknown user: "it"

--{boundary}
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.nordby-skole.example
X-Postfix-Queue-ID: 4B1C2A0D3E
X-Postfix-Sender: rfc822; kontakt@service.example
Arrival-Date: Tue, 24 Mar 2026 09:04:59 +0100 (CET)

Final-Recipient: rfc822; {recipient}
Original-Recipient: rfc822;{recipient}
Action: failed
Status: 5.1.1
Diagnostic-Code: X-Postfix; unknown user: "it"

--{boundary}
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers

{headers}

--{boundary}--
"""
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode()


def test_bounced_notice_alerts_line_one_agents_and_shows_undelivered(
    runtime: Runtime,
    relay: RecordingRelay,
    clock_at: FrozenDateTimeFactory,
    config_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A DSN naming a notice's Message-ID alerts every line-1 agent, and the change shows it not delivered."""
    change_id = _plan(runtime, ["nordby-skole"])
    _flush(runtime)
    notice = relay.to(NORDBY_CHANGE)[0]
    assert _show(config_path, capsys, change_id)["organizations"] == [
        {
            "id": "nordby-skole",
            "reached": True,
            "first_reached_at": "2026-03-24T08:00:00.000000+00:00",
            "in_time": True,
        }
    ]
    result = process(runtime, _dsn(notice.raw, NORDBY_CHANGE), "test")
    assert result.outcome == "ignored"
    _flush(runtime)
    alerts = [m for m in relay.received if set(m.rcpt_tos) == LINE_1]
    assert len(alerts) == 1
    # Unfolded as RFC 5322 says: a long subject may come back with the fold's leading space.
    subject = alerts[0].message["Subject"].strip()
    assert subject.startswith(f"[Endring {change_id}] IKKE LEVERT: varsel til {NORDBY_CHANGE}")
    assert notice.message["Message-ID"] in alerts[0].body
    shown = _show(config_path, capsys, change_id)
    assert shown["notices"][0]["delivery"] == "failed"  # type: ignore[index]
    assert shown["notices"][0]["error"].startswith("bounced")  # type: ignore[index]
    assert shown["organizations"][0]["reached"] is False  # type: ignore[index]
    with runtime.store.write() as conn:
        assert alert_undelivered(conn, runtime.config) == 0  # once per notice


def test_notice_refused_by_the_relay_alerts_agents_in_the_same_flush(
    runtime: Runtime, relay: RecordingRelay, clock_at: FrozenDateTimeFactory
) -> None:
    """A 550 for a notice marks it failed and the agents' alert goes out in the same outbox run."""
    _plan(runtime, ["vestland-college"])
    relay.errors.append("550 5.1.1 <servicedesk@vestland-college.example>: mailbox unavailable")
    report = change_notices.deliverer(runtime.config, runtime.store).flush()
    assert (report.failed, report.sent) == (1, 1)
    alert = relay.received[0]
    assert set(alert.rcpt_tos) == LINE_1 and "550 5.1.1" in alert.body and VIC_CHANGE in alert.body


def test_reminder_goes_once_on_the_working_day_before(
    runtime: Runtime,
    relay: RecordingRelay,
    clock_at: FrozenDateTimeFactory,
    config_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`gateway change remind` sends on Tuesday 7 April for a change on the 8th, and only once."""
    change_id = _plan(runtime, ["nordby-skole", "vestland-college"])
    _flush(runtime)
    clock_at.move_to(_oslo(2026, 4, 6, 9, 0))  # Easter Monday: the day before is still to come
    assert send_reminders(runtime) == []
    clock_at.move_to(_oslo(2026, 4, 7, 7, 0))
    assert send_reminders(runtime) == [change_id]
    assert main(["--config", str(config_path), "change", "remind"]) == 0
    assert "for 0 change(s)" in capsys.readouterr().out
    _flush(runtime)
    reminders = [
        r
        for r in relay.received
        if "Påminnelse" in r.message["Subject"] or "Reminder" in r.message["Subject"]
    ]
    assert sorted(r.rcpt_tos[0] for r in reminders) == [NORDBY_CHANGE, VIC_CHANGE]
    assert reminders[0].message["Auto-Submitted"] == "auto-generated"


def test_complete_only_after_the_window_has_begun(
    runtime: Runtime,
    relay: RecordingRelay,
    clock_at: FrozenDateTimeFactory,
    config_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A change cannot be completed before it starts; afterwards the all-clear goes out without an .ics."""
    change_id = _plan(runtime, ["nordby-skole"])
    with pytest.raises(ChangeRefused, match="has not started"):
        complete_change(runtime, change_id, "mona")
    clock_at.move_to(_oslo(2026, 4, 8, 23, 0))
    complete_change(runtime, change_id, "mona")
    _flush(runtime)
    done = relay.to(NORDBY_CHANGE)[-1].message
    assert done["Subject"] == "[Endring 1] Fullført: Programvareoppgradering av svitsjer"
    assert list(done.iter_attachments()) == []
    capsys.readouterr()
    assert main(["--config", str(config_path), "change", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(c["id"], c["status"]) for c in listed] == [(change_id, "completed")]
    assert [n["kind"] for n in listed[0]["notices"]] == ["notice", "complete"]
    assert listed[0]["starts_at"] == "2026-04-08T22:00:00+02:00"
