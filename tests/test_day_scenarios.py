"""The centre's day played by its users: phones, Outlook, nynorsk, NAV, and an operator's own config."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from email import message_from_bytes
from email.policy import default
from pathlib import Path
from zoneinfo import ZoneInfo

import dkim
import pytest
from freezegun import freeze_time
from freezegun.api import FrozenDateTimeFactory

from gateway.cli.main import main
from gateway.core.config import load_config
from gateway.ops.server import Server
from gateway.store.database import open_store
from tests.support import Received, RecordingRelay, dkim_keypair, mail, smtp_send, wait_for, write_config
from tests.test_incident_notices import alert, nav_config, tick

OSLO = ZoneInfo("Europe/Oslo")
TUESDAY_MORNING = datetime(2026, 11, 24, 10, 0, tzinfo=OSLO)
CENTRE = "Campus Nett"
CENTRE_DEFAULT = "Servicesenteret"
KARI = "kari.nordmann@nordby-skole.example"  # Teknisk ansvarlig, Nordby skole (registry phone 41 23 45 67)
IT_NORDBY = "it@nordby-skole.example"  # Nordby's shared point: incidents, change and local support
OLA = "ola.bakken@fjellvik.kommune.example"  # Teknisk ansvarlig, Fjellvik
FJELLVIK_LOCAL = "brukerstotte@fjellvik.kommune.example"  # Lokalt supportpunkt, Fjellvik (NAV access)
MONA = "mona@service.example"
ON_CALL = "beredskap@service.example"
WORK = "Koble uttak 2-14 i rom 204 til svitsjen i etasjefordeleren."
Signer = Callable[[bytes], bytes]


def _operator(path: Path) -> Path:
    """An operator's own config: another name, 07:30-16:00, staff mail in English, no guide links."""
    text = path.read_text(encoding="utf-8")
    text = text.replace('name = "Servicesenteret"', f'name = "{CENTRE}"')
    text = text.replace('language = "nb"', 'language = "en"')
    text = text.replace("[storage]", 'opening_hours = "07:30-16:00"\n\n[storage]', 1)
    path.write_text(text, encoding="utf-8")
    return path


@contextmanager
def serving(path: Path, at: datetime) -> Iterator[Server]:
    """`gateway serve` (pipeline in this process) at a pinned moment; the clock ticks on from there."""
    with freeze_time(at, tick=True, real_asyncio=True):
        server = Server(load_config(path))
        server.start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture(scope="module")
def dkim_key() -> tuple[bytes, bytes]:
    return dkim_keypair()


def _signer(server: Server, dkim_key: tuple[bytes, bytes]) -> Signer:
    """Agents' mail signed by service.example, as their own mail system signs it."""
    key, record = dkim_key
    server.runtime.txt_lookup = lambda name, timeout=5: (
        record if name == b"gw._domainkey.service.example." else None
    )
    headers = [b"from", b"to", b"subject", b"message-id", b"in-reply-to"]
    return lambda raw: dkim.sign(raw, b"gw", b"service.example", key, include_headers=headers) + raw


def _send(server: Server, raw: bytes) -> None:
    assert smtp_send(server.listener.address[1], raw)[0] == 250


def _to(relay: RecordingRelay, address: str, count: int = 1) -> list[Received]:
    return wait_for(  # type: ignore[no-any-return]
        lambda: len(relay.to(address)) >= count and relay.to(address), what=f"{count} mail to {address}"
    )


def _text(received: Received) -> str:
    return received.body.replace("\r\n", "\n")


def _reads_norwegian(text: str) -> None:
    """What a Norwegian reader must never see: None, ISO or UTC times, gaps left by empty values."""
    assert "None" not in text and "UTC" not in text and "+00:00" not in text
    assert not re.search(r"\d{4}-\d\d-\d\dT", text), text
    assert not re.search(r"\S  \S", text), text


# --- an operator with a configuration of their own ------------------------------------------------


def test_operator_hours_and_name_reach_a_norwegian_receipt_and_english_staff_mail(
    tmp_path: Path, relay: RecordingRelay
) -> None:
    """At 15:45 on a Tuesday the centre is still open (07:30-16:00): the bokmål receipt names those hours
    and the centre's own name, with no link text; the agents read English."""
    path = _operator(write_config(tmp_path, relay_port=relay.port, intake_process=False))
    question = mail(
        sender=f"Kari Nordmann <{KARI}>", subject="Spørsmål om gjestenettet",
        body="Hei!\n\nHvordan fungerer gjestenettet hos dere?\n\nSendt fra min iPhone\n",
    )  # fmt: skip
    with serving(path, datetime(2026, 11, 24, 15, 45, tzinfo=OSLO)) as server:
        _send(server, question)
        receipt = _text(_to(relay, KARI)[0])
        notice = _text(_to(relay, MONA)[0])
    assert "Vi svarer så snart vi kan i åpningstiden (virkedager 07:30–16:00)." in receipt
    assert "15:30" not in receipt and "08:00" not in receipt
    assert f"Vennlig hilsen\n{CENTRE}\n" in receipt and "Servicesenteret" not in receipt
    assert "veiledning" not in receipt and "http" not in receipt
    _reads_norwegian(receipt)
    assert "Category: question · priority: normal · status: new" in notice
    assert "\n  #local <task>" in notice
    assert "Organisation: Nordby skole" in notice


@pytest.mark.parametrize(
    ("at", "called_out"),
    [
        (datetime(2026, 11, 24, 7, 45, tzinfo=OSLO), False),  # before the default 08:00, after 07:30
        (datetime(2026, 11, 24, 15, 50, tzinfo=OSLO), False),  # after the default 15:30, before 16:00
        (datetime(2026, 11, 24, 16, 5, tzinfo=OSLO), True),
    ],
)
def test_operator_hours_decide_the_on_call_alert(
    tmp_path: Path, relay: RecordingRelay, at: datetime, called_out: bool
) -> None:
    """A whole school down: the on-call is called out only outside the configured hours, and the
    receipt says which of the two happened."""
    path = _operator(write_config(tmp_path, relay_port=relay.port, intake_process=False))
    outage = mail(
        sender=f"IT Nordby <{IT_NORDBY}>", subject="Hele skolen er nede",
        body="Hei!\n\nHele skolen har mistet nettet, ingen får koblet seg på.\n\nSendt fra min iPhone\n",
    )  # fmt: skip
    with serving(path, at) as server:
        _send(server, outage)
        receipt = _text(_to(relay, IT_NORDBY)[0])
        alerts = server.runtime.store.one("SELECT count(*) AS n FROM outbox WHERE kind = 'alert'")["n"]
        alert_mail = _to(relay, ON_CALL)[0] if called_out else None
    assert alerts == (1 if called_out else 0)
    if alert_mail is not None:
        assert "beredskapsvakten\ner varslet" in receipt
        body = _text(alert_mail)
        assert "Phone: 22 33 44 50" in body and "Hele skolen har mistet nettet" in body
        assert "Tuesday 24 November 2026 at 16:05" in body
    else:
        assert "Feilen er registrert som kritisk, og vi ser på den nå." in receipt
    assert "telefonnummer" not in receipt and "navn på virksomheten" not in receipt
    _reads_norwegian(receipt)


def test_iphone_html_outage_at_night_keeps_the_customers_text(tmp_path: Path, relay: RecordingRelay) -> None:
    """An HTML-only iPhone mail from an Exchange-style "Nordmann, Kari" on a Saturday night: the on-call
    reads her words and the registry's phone, and the receipt asks nothing the registry knows."""
    path = write_config(tmp_path, relay_port=relay.port, intake_process=False)
    raw = mail(
        sender=f'"Nordmann, Kari" <{KARI}>', subject="Nettet er nede",
        body='<html><body><div dir="ltr">Hele skolen er uten nett!&nbsp;Ingen f&aring;r koblet seg'
        ' p&aring;.</div><div><br><div dir="ltr">Sendt fra min iPhone</div></div></body></html>\n',
    ).replace(b"Content-Type: text/plain", b"Content-Type: text/html")  # fmt: skip
    with serving(path, datetime(2026, 11, 28, 2, 30, tzinfo=OSLO)) as server:
        _send(server, raw)
        receipt = _text(_to(relay, KARI)[0])
        body = _text(_to(relay, ON_CALL)[0])
    assert "Hele skolen er uten nett! Ingen får koblet seg på." in body
    assert "Telefon: 41 23 45 67" in body and "lørdag 28. november 2026 kl. 02:30" in body
    assert "<div" not in body and "&aring;" not in body
    assert "beredskapsvakten\ner varslet" in receipt
    assert "telefonnummer" not in receipt and "kontaktperson" not in receipt
    assert "navn på virksomheten" not in receipt
    _reads_norwegian(receipt)


# --- an agent on a phone asks for local work -------------------------------------------------------


def _open_and_reply(server: Server, relay: RecordingRelay, signer: Signer, answer: str) -> None:
    """Ola reports a fault; Mona answers the agents' notice from her phone, top-posted over the quote."""
    _send(
        server,
        mail(
            sender=f"Ola Bakken <{OLA}>",
            subject="Ingen nett i rom 204",
            body="PC-en i rom 204 har ikke nett.\n",
        ),
    )
    notice = wait_for(lambda: [r for r in relay.to(MONA) if r.message["Reply-To"]], what="notice")[0]
    quoted = "\n".join(f"> {line}" for line in _text(notice).splitlines()[:4])
    body = f"{answer}\n\nDen 24. nov. 2026 kl. 10:00 skrev {CENTRE_DEFAULT} <kontakt@service.example>:\n\n{quoted}\n"
    reply = mail(
        sender=f"Mona Sørensen <{MONA}>", to=notice.message["Reply-To"].addresses[0].addr_spec,
        subject=f"SV: {notice.message['Subject']}", body=body,
        headers={"In-Reply-To": notice.message["Message-ID"]},
    )  # fmt: skip
    _send(server, signer(reply))


@pytest.mark.parametrize(
    "answer",
    [
        f"# lokalt\n{WORK}\n\nSendt fra min iPhone",
        f"#Lokalt: {WORK}\n\nSendt fra min iPhone",
        f"＃lokalt {WORK}\n\n-- \nMona Sørensen\n{CENTRE_DEFAULT}",
        f"#LOKALT - {WORK}\n\nSent from my iPhone",
        f"#lokalt arbeid: {WORK}\n\nSendt fra min iPhone",
        f"#Lokalt arbeid\n\n{WORK}\n\nSendt fra min iPhone",
        f"#status venter\n#lokalt\n{WORK}\n\nSendt fra min iPhone",
    ],
    ids=["space", "colon", "full-width", "upper-dash", "arbeid-colon", "arbeid-line", "after-status"],
)
def test_lokalt_from_a_phone_sends_just_the_work(
    tmp_path: Path, relay: RecordingRelay, dkim_key: tuple[bytes, bytes], answer: str
) -> None:
    """However a phone writes `#lokalt`, the Lokalt supportpunkt gets the work itself: no command word,
    no "arbeid:", no client signature, no quoted notice; and the requester gets nothing of it."""
    path = write_config(tmp_path, relay_port=relay.port, intake_process=False)
    with serving(path, TUESDAY_MORNING) as server:
        _open_and_reply(server, relay, _signer(server, dkim_key), answer)
        asked = _text(_to(relay, FJELLVIK_LOCAL)[0])
        kinds = [r["kind"] for r in server.runtime.store.query("SELECT kind FROM outbox")]
    request = asked.split("lokalt arbeid i sak SSC#1:\n\n", 1)[1].split("\n\nSvar på denne e-posten", 1)[0]
    assert request == WORK
    assert "answer" not in kinds
    _reads_norwegian(asked)


def test_the_agents_notice_tells_of_lokalt(tmp_path: Path, relay: RecordingRelay) -> None:
    """An agent reading a new case on a phone learns there that `#lokalt` asks the Lokalt supportpunkt."""
    path = write_config(tmp_path, relay_port=relay.port, intake_process=False)
    with serving(path, TUESDAY_MORNING) as server:
        _send(
            server,
            mail(
                sender=f"Ola Bakken <{OLA}>",
                subject="Ingen nett i rom 204",
                body="PC-en i rom 204 har ikke nett.\n",
            ),
        )
        notice = _text(_to(relay, MONA)[0])
    assert "\n  #lokalt <oppgave>" in notice and "Lokalt supportpunkt" in notice


# --- self-service and VLANs ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        # Nynorsk from a phone, a clear port VLAN request: self-service.
        ("Hei!\nKan de endre VLAN på port 14 i rom 204 til VLAN 30?\nHelsing Brukarstøtta\n\nSendt frå min iPhone\n", "self-service"),
        # A fault after their own VLAN change in NAV: an incident with a receipt, never self-service.
        ("Hei,\n\netter at vi endret VLAN på port 14 i rom 204 i NAV i går, får ikke PC-en nett lenger.\n", "receipt"),
        ("Heile skulen har mista nettet sidan i morgon tidleg, ingen får kopla seg på VLAN 30.\n", "receipt"),
        # A question about how to do it: a case for a person.
        ("Hvordan endrer vi VLAN på en port i NAV? Vi finner ikke menyen.\n", "receipt"),
        # A fault that also asks for a VLAN change: the fault wins.
        ("Ingen på port 14 eller 15 i rom 204 har nett. Kan dere endre VLAN på dem til 30 så de kommer opp igjen?\n", "receipt"),
    ],
    ids=["nynorsk-order", "fault-after-change", "nynorsk-outage", "how-to", "fault-and-order"],
)  # fmt: skip
def test_vlan_words_answered_by_what_is_asked(
    tmp_path: Path, relay: RecordingRelay, body: str, kind: str
) -> None:
    """Fjellvik's Lokalt supportpunkt (NAV access): only a clear port VLAN order is self-service."""
    path = write_config(tmp_path, relay_port=relay.port, intake_process=False)
    with serving(path, TUESDAY_MORNING) as server:
        _send(server, mail(sender=f"Brukerstøtte Fjellvik <{FJELLVIK_LOCAL}>", subject="VLAN", body=body))
        answer = _to(relay, FJELLVIK_LOCAL)[0]
        store = server.runtime.store
        fired = store.query("SELECT detail FROM events WHERE action = 'rule-fired'")
        kinds = [r["kind"] for r in store.query("SELECT kind FROM outbox WHERE kind != 'agent-notify'")]
    assert kinds == [kind]
    assert ({"detail": "vlan-self-service"} in fired) == (kind == "self-service")
    _reads_norwegian(_text(answer))


# --- monitoring, under an operator's own config -----------------------------------------------------


@pytest.fixture
def nav_serve(tmp_path: Path, relay: RecordingRelay) -> Iterator[tuple[Server, FrozenDateTimeFactory]]:
    """NAV trusted, the operator's config, serve on a Saturday night."""
    path = _operator(nav_config(tmp_path, relay.port))
    # tick=True: the waits below read a clock that moves, so a missing mail fails instead of hanging.
    with freeze_time(datetime(2026, 11, 28, 3, 10, tzinfo=OSLO), tick=True, real_asyncio=True) as frozen:
        server = Server(load_config(path))
        server.start()
        try:
            yield server, frozen
        finally:
            server.stop()


def test_night_link_alerts_on_a_critical_router_give_one_norwegian_notice(
    nav_serve: tuple[Server, FrozenDateTimeFactory], relay: RecordingRelay
) -> None:
    """A link alert, then the box, on Fjellvik's core router at night: one bokmål notice to the
    Varslingspunkt Incidents and Teknisk ansvarlig, signed with the centre's name, then one all-clear."""
    server, clock_at = nav_serve
    alert(server, "start", "rtr-fjv-core", 9001, "linkState")
    clock_at.tick(timedelta(minutes=2))
    alert(server, "start", "rtr-fjv-core", 9002, "boxState")
    clock_at.tick(timedelta(minutes=4))
    tick(server)
    tick(server)
    notice = _to(relay, OLA)[0]
    agents = _text(_to(relay, MONA)[0])
    clock_at.tick(timedelta(minutes=30))
    alert(server, "end", "rtr-fjv-core", 9001, "linkState")
    tick(server)
    alert(server, "end", "rtr-fjv-core", 9002)
    tick(server)
    mails = _to(relay, "it-varsling@fjellvik.kommune.example", 2)
    kinds = [
        r["kind"] for r in server.runtime.store.query("SELECT kind FROM outbox WHERE kind LIKE 'incident-%'")
    ]
    assert kinds == ["incident-notice", "incident-resolved"]
    body = _text(notice)
    assert notice.message["Subject"].endswith(": Feil meldt på rtr-fjv-core")
    assert "Oppdaget:   lørdag 28. november 2026 kl. 03:10" in body and "Berørt utstyr: rtr-fjv-core." in body
    assert f"Vennlig hilsen\n{CENTRE}\n" in body
    _reads_norwegian(body)
    resolved = _text(mails[1])
    assert "er løst (lørdag 28. november 2026 kl. 03:46)" in resolved
    _reads_norwegian(resolved)
    assert "Category: incident" in agents and "Organisation: Fjellvik kommune" in agents


def test_customer_answer_to_an_all_clear_reopens_and_is_read(
    nav_serve: tuple[Server, FrozenDateTimeFactory], relay: RecordingRelay
) -> None:
    """Nordby answers the all-clear from a phone ("still down in bygg B rom 12"): the case reopens, and
    the agents are not told that the organisation or the place is missing."""
    server, clock_at = nav_serve
    alert(server, "start", "sw-nordby-1", 9101)
    clock_at.tick(timedelta(minutes=6))
    tick(server)
    clock_at.tick(timedelta(minutes=10))
    alert(server, "end", "sw-nordby-1", 9101)
    tick(server)
    resolved = _to(relay, IT_NORDBY, 2)[1]
    answer = mail(
        sender=f"IT Nordby <{IT_NORDBY}>", subject=f"SV: {resolved.message['Subject']}",
        body="Hei,\n\ndet er fortsatt ingen nett i bygg B rom 12.\n\nSendt fra min iPhone\n\n"
        "> Den 28. nov. 2026 kl. 03:26 skrev Campus Nett <kontakt@service.example>:\n> hendelsen er løst\n",
        headers={"In-Reply-To": resolved.message["Message-ID"]},
    )  # fmt: skip
    _send(server, answer)
    follow_up = wait_for(
        lambda: [r for r in relay.to(MONA) if "Customer wrote again" in str(r.message["Subject"])],
        what="the agents' follow-up notice",
    )[0]
    status = server.runtime.store.one("SELECT status FROM cases WHERE id = 1")["status"]
    assert status == "open"
    body = _text(follow_up)
    assert "fortsatt ingen nett i bygg B rom 12" in body
    missing = body.split("Missing before escalation:", 1)[-1].split("\n--\n", 1)[0]
    assert "the organisation's name" not in missing
    assert "where: building" not in missing


# --- words in the agents' digest ----------------------------------------------------------------------


def test_failed_local_work_mail_is_named_in_norwegian_in_the_digest(
    tmp_path: Path, relay: RecordingRelay, dkim_key: tuple[bytes, bytes]
) -> None:
    """The Lokalt supportpunkt's server refuses the local-work mail; next morning's bokmål digest
    names it as Norwegian words, not the outbox's kind."""
    path = write_config(tmp_path, relay_port=relay.port, intake_process=False)
    with serving(path, TUESDAY_MORNING) as server:
        signer = _signer(server, dkim_key)
        _send(
            server,
            mail(
                sender=f"Ola Bakken <{OLA}>",
                subject="Ingen nett i rom 204",
                body="PC-en i rom 204 har ikke nett.\n",
            ),
        )
        notice = wait_for(lambda: [r for r in relay.to(MONA) if r.message["Reply-To"]], what="notice")[0]
        wait_for(lambda: relay.to(OLA), what="the receipt")
        relay.errors.append("550 5.1.1 no such mailbox")
        reply = mail(
            sender=f"Mona Sørensen <{MONA}>", to=notice.message["Reply-To"].addresses[0].addr_spec,
            subject=f"SV: {notice.message['Subject']}", body=f"#lokalt\n{WORK}\n",
            headers={"In-Reply-To": notice.message["Message-ID"]},
        )  # fmt: skip
        _send(server, signer(reply))
        store = server.runtime.store
        wait_for(
            lambda: store.query("SELECT 1 FROM outbox WHERE kind = 'local-work' AND status = 'failed'"),
            what="the refused local-work mail",
        )
    with freeze_time(datetime(2026, 11, 25, 7, 0, tzinfo=OSLO)):
        assert main(["--config", str(path), "digest", "--period", "daily", "--to", MONA]) == 0
    store = open_store(load_config(path).storage)
    raw = bytes(store.one("SELECT raw FROM outbox WHERE kind LIKE 'digest-%'")["raw"])
    store.close()
    message = message_from_bytes(raw, policy=default)
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    line = next(line for line in text.splitlines() if FJELLVIK_LOCAL in line)
    assert "local-work" not in line and "lokalt arbeid" in line, line
    assert ">local-work<" not in html
