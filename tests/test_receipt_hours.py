"""Receipts and on-call alerts that say the right thing about opening hours, guides and the 24/7 line."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from freezegun import freeze_time

from gateway.core.config import ConfigError, load_config
from gateway.ops.server import Server
from gateway.runtime import Runtime
from tests.support import Received, RecordingRelay, mail, smtp_send, wait_for, write_config

OSLO = ZoneInfo("Europe/Oslo")
SATURDAY_NIGHT = datetime(2026, 11, 28, 2, 30, tzinfo=OSLO)
TUESDAY_MORNING = datetime(2026, 11, 24, 11, 0, tzinfo=OSLO)
TUESDAY_EVENING = datetime(2026, 11, 24, 18, 30, tzinfo=OSLO)
IT_NORDBY = "IT Nordby <it@nordby-skole.example>"  # registry phone 22 33 44 50
ANNE = "Anne Moe <anne.moe@fjellvik.kommune.example>"  # registered, no phone in the registry
VIC = "VIC Service Desk <servicedesk@vestland-college.example>"  # an English-speaking organisation
OUTAGE = ("KRITISK: hele bygget er nede", "Ingen har nett i hele bygget.\n")
ON_CALL = "beredskap@service.example"
GUIDES = {
    "escalation_guide_url": '"https://hjelp.service.example/eskalering"',
    "troubleshooting_guide_url": '"https://hjelp.service.example/feilsoking"',
}


@contextmanager
def serving(tmp: Path, relay: RecordingRelay, at: datetime, **service: str) -> Iterator[Server]:
    """`gateway serve` at a pinned moment (the clock seam ticks on from there)."""
    path = write_config(tmp, relay_port=relay.port, intake_process=False, **service)
    with freeze_time(at, tick=True, real_asyncio=True):
        server = Server(load_config(path))
        server.start()
        try:
            yield server
        finally:
            server.stop()


def _send(server: Server, relay: RecordingRelay, sender: str, subject: str, body: str) -> Received:
    """Send one report over SMTP and return the receipt the relay got for it."""
    address = re.search(r"<(.+)>", sender).group(1)  # type: ignore[union-attr]
    assert smtp_send(server.listener.address[1], mail(sender=sender, subject=subject, body=body))[0] == 250
    return wait_for(lambda: relay.to(address), what=f"the receipt to {address}")[0]  # type: ignore[no-any-return]


def _text(received: Received) -> str:
    return received.body.replace("\r\n", "\n")


def _clean(text: str) -> None:
    assert "None" not in text and "\n\n\n" not in text and "  " not in text.replace("\n  - ", "\n")


def test_critical_report_at_night_alerts_the_on_call_and_the_receipt_says_so(
    tmp_path: Path, relay: RecordingRelay
) -> None:
    """A Saturday-night outage: the receipt says the on-call is alerted and still asks what is missing."""
    with serving(tmp_path, relay, SATURDAY_NIGHT) as server:
        receipt = _send(server, relay, IT_NORDBY, *OUTAGE)
        alert = wait_for(lambda: relay.to(ON_CALL), what="the on-call alert")[0]
    body = _text(receipt)
    assert "beredskapsvakten\ner varslet" in body
    assert "i åpningstiden" not in body
    assert "  - når feilen oppstod" in body and "  - MAC-adressen til enheten" in body
    assert "Kritiske feil tar vi imot hele døgnet på telefon 73 55 79 00." in body
    _clean(body)
    assert "Telefon: 22 33 44 50" in _text(alert)
    reply_to = str(alert.message["Reply-To"])
    assert re.fullmatch(r"kontakt\+ssc1\.[0-9a-f]{10}@service\.example", reply_to)


def test_on_call_answers_to_the_reply_to_land_in_the_case(tmp_path: Path, relay: RecordingRelay) -> None:
    """The on-call's answer to the alert's Reply-To is threaded into the case, not a new one."""
    with serving(tmp_path, relay, SATURDAY_NIGHT) as server:
        _send(server, relay, IT_NORDBY, *OUTAGE)
        alert = wait_for(lambda: relay.to(ON_CALL), what="the on-call alert")[0]
        answer = mail(
            sender=f"Vakt <{ON_CALL}>", subject="Re: " + str(alert.message["Subject"]),
            body="Jeg ser på det nå.\n", to=str(alert.message["Reply-To"]),
        )  # fmt: skip
        port = server.listener.address[1]
        assert smtp_send(port, answer, rcpt=str(alert.message["Reply-To"]))[0] == 250
        store = server.runtime.store
        rows = store.query("SELECT case_id FROM messages WHERE direction = 'in' ORDER BY id")
        cases = store.one("SELECT count(*) AS n FROM cases")["n"]
    assert [r["case_id"] for r in rows] == [1, 1]
    assert cases == 1


def test_the_same_report_in_opening_hours_calls_nobody_out(tmp_path: Path, relay: RecordingRelay) -> None:
    """A Tuesday-morning outage is critical, the desk takes it now, and no on-call alert goes out."""
    with serving(tmp_path, relay, TUESDAY_MORNING) as server:
        body = _text(_send(server, relay, IT_NORDBY, *OUTAGE))
        assert server.runtime.store.one("SELECT count(*) AS n FROM outbox WHERE kind = 'alert'")["n"] == 0
    assert "Feilen er registrert som kritisk, og vi ser på den nå." in body
    assert "beredskapsvakt" not in body
    _clean(body)


def test_configured_opening_hours_decide_and_show(tmp_path: Path, relay: RecordingRelay) -> None:
    """With service.opening_hours 08:00-20:00, 18:30 on a Tuesday is in hours: no call-out, a normal answer."""
    hours = {"opening_hours": '"08:00-20:00"'}
    with serving(tmp_path, relay, TUESDAY_EVENING, **hours) as server:
        receipt = _send(
            server, relay, IT_NORDBY, "Spørsmål om gjestenettet", "Hvordan fungerer gjestenettet?\n"
        )
        _send(server, relay, "Kari Nordmann <kari.nordmann@nordby-skole.example>", *OUTAGE)
        assert server.runtime.store.one("SELECT count(*) AS n FROM outbox WHERE kind = 'alert'")["n"] == 0
    assert "(virkedager 08:00–20:00)" in _text(receipt)
    assert "15:30" not in _text(receipt)


def test_guide_links_appear_where_missing_information_is_asked(tmp_path: Path, relay: RecordingRelay) -> None:
    """Configured guides are linked under the questions; the troubleshooting guide only when that is asked."""
    with serving(tmp_path, relay, TUESDAY_MORNING, **GUIDES) as server:
        asked = _text(_send(server, relay, IT_NORDBY, "Treigt nett", "Nettet er tregt på rom 204 i dag.\n"))
        told = _text(_send(
            server, relay, "Kari Nordmann <kari.nordmann@nordby-skole.example>", "Ustabilt nett",
            "Vi har startet PC-en på nytt og pinget ruteren, men nettet faller ut i bygg A rom 12.\n",
        ))  # fmt: skip
    assert "veiledningen om eskaleringsinformasjon:\nhttps://hjelp.service.example/eskalering" in asked
    assert "grunnleggende feilsøkingen:\nhttps://hjelp.service.example/feilsoking" in asked
    assert "https://hjelp.service.example/eskalering" in told
    assert "feilsoking" not in told  # the troubleshooting was done, so its guide is not offered
    _clean(asked)


def test_without_guides_the_receipt_asks_cleanly(tmp_path: Path, relay: RecordingRelay) -> None:
    """No guide configured: the questions stand alone, with no link text, no 'None', no gaps."""
    with serving(tmp_path, relay, TUESDAY_MORNING) as server:
        body = _text(_send(server, relay, IT_NORDBY, "Treigt nett", "Nettet er tregt på rom 204 i dag.\n"))
    assert "  - MAC-adressen til enheten" in body
    assert "veiledning" not in body and "http" not in body
    _clean(body)


def test_what_the_registry_knows_is_never_asked(tmp_path: Path, relay: RecordingRelay) -> None:
    """A registered contact is never asked for the organisation or their name; without a phone, only that."""
    with serving(tmp_path, relay, TUESDAY_MORNING) as server:
        known_phone = _text(
            _send(server, relay, IT_NORDBY, "Treigt nett", "Nettet er tregt på rom 204 i dag.\n")
        )
        no_phone = _text(_send(server, relay, ANNE, "Treigt nett", "Nettet er tregt på rådhuset i dag.\n"))
    for body in (known_phone, no_phone):
        assert "navn på virksomheten" not in body and "kontaktperson" not in body
    assert "telefonnummer" not in known_phone
    assert "  - et telefonnummer vi kan nå deg på" in no_phone


def test_on_call_alert_carries_a_phone_found_in_the_mail(tmp_path: Path, relay: RecordingRelay) -> None:
    """A reporter the registry has no phone for: the alert shows the number they wrote in the mail."""
    with serving(tmp_path, relay, SATURDAY_NIGHT) as server:
        body = OUTAGE[1] + "Ring meg på 913 45 678.\n"
        receipt = _text(_send(server, relay, ANNE, OUTAGE[0], body))
        alert = wait_for(lambda: relay.to(ON_CALL), what="the on-call alert")[0]
    assert "Telefon: 91 34 56 78" in _text(alert)
    assert "telefonnummer vi kan nå deg på" not in receipt


def test_every_receipt_names_the_24_7_line(tmp_path: Path, relay: RecordingRelay) -> None:
    """A question (not an incident) still tells the customer where critical faults are taken around the clock."""
    line = {"critical_phone": '"73 55 79 01"', "critical_phone_key": '"1"'}
    with serving(tmp_path, relay, TUESDAY_MORNING, **line) as server:
        body = _text(
            _send(server, relay, IT_NORDBY, "Spørsmål om gjestenettet", "Hvordan fungerer gjestenettet?\n")
        )
        category = server.runtime.store.one("SELECT category FROM cases")["category"]
    assert category == "question"
    assert (
        "Kritiske feil tar vi imot hele døgnet på telefon 73 55 79 01 (utenfor åpningstid: tast 1)." in body
    )
    _clean(body)


def test_english_receipt_at_night_says_the_on_call_is_alerted(tmp_path: Path, relay: RecordingRelay) -> None:
    """An English-speaking organisation's night-time outage gets the same care in English."""
    with serving(tmp_path, relay, SATURDAY_NIGHT, **GUIDES) as server:
        body = _text(
            _send(
                server,
                relay,
                VIC,
                "CRITICAL: the whole building is down",
                "Nobody has network in the whole building.\n",
            )
        )
    assert "the on-call\nengineer has been alerted" in body
    assert "guide to escalation information:\nhttps://hjelp.service.example/eskalering" in body
    assert "Critical faults are taken around the clock on 73 55 79 00." in body
    assert "the organisation's name" not in body and "a contact person" not in body
    _clean(body)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("opening_hours", '"8-16"', 'expected "HH:MM-HH:MM"'),
        ("opening_hours", '"16:00-08:00"', "opening must come before closing"),
        ("opening_hours", '"08:00-25:00"', "not a time of day"),
        ("opening_hours", "8", "expected a string"),
        ("escalation_guide_url", '"hjelp.example/guide"', "expected an http:// or https:// address"),
        ("troubleshooting_guide_url", '"https://x.example/a b"', "expected an http:// or https:// address"),
        ("critical_phone_key", '"12"', "one phone key"),
    ],
)
def test_service_keys_are_validated_by_name(tmp_path: Path, key: str, value: str, message: str) -> None:
    """A bad opening-hours, guide or phone-key value is refused with the key's name in the error."""
    path = write_config(tmp_path, **{key: value})
    with pytest.raises(ConfigError, match=rf"^service\.{key}: .*{re.escape(message)}"):
        load_config(path)


def test_opening_hours_are_the_one_open_question(tmp_path: Path) -> None:
    """runtime.is_open, within_opening_hours and target time all follow service.opening_hours, holidays included."""
    runtime = Runtime(load_config(write_config(tmp_path, opening_hours='"07:30 – 17:00"')))
    try:
        calendar = runtime.calendar
        assert runtime.is_open(datetime(2026, 11, 24, 7, 30, tzinfo=OSLO))
        assert not runtime.is_open(datetime(2026, 11, 24, 17, 0, tzinfo=OSLO))
        assert calendar.within_opening_hours(datetime(2026, 11, 24, 16, 59, tzinfo=OSLO))
        assert not calendar.within_opening_hours(datetime(2026, 12, 25, 10, 0, tzinfo=OSLO))  # Christmas Day
        assert calendar.hours_text == "07:30–17:00"
        # Response targets count the same hours: one working day is 9.5 hours of opening time.
        monday, tuesday = datetime(2026, 11, 23, tzinfo=OSLO), datetime(2026, 11, 24, tzinfo=OSLO)
        assert calendar.business_seconds_between(monday, tuesday) == 9.5 * 3600
    finally:
        runtime.close()
