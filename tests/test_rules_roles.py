"""The shipped rules and roles, through `process`, with authenticated and forged senders."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dkim
import pytest
from freezegun import freeze_time

from gateway.core.config import load_config
from gateway.flow.context import Result
from gateway.outbox.queue import Deliverer
from gateway.pipeline.process import process
from gateway.rules.engine import RuleError, load_rules
from gateway.runtime import Runtime
from tests.support import RecordingRelay, dkim_keypair, mail, write_config

KARI = "Kari Nordmann <kari.nordmann@nordby-skole.example>"  # Teknisk ansvarlig, Nordby skole
IT_NORDBY = "IT Nordby <it@nordby-skole.example>"  # incidents, change, local-support
AUTHSERV = "mx.service.example"
PASS_AR = {
    "Authentication-Results": f"{AUTHSERV}; dkim=pass header.d=nordby-skole.example;"
    " dmarc=pass header.from=nordby-skole.example"
}
# A Tuesday in November, 10:00 in Oslo: opening hours.
OPEN = "2026-11-24 09:00:00"


@pytest.fixture
def rt(tmp_path: Path, relay: RecordingRelay) -> Iterator[Runtime]:
    path = write_config(tmp_path, relay_port=relay.port)
    path.write_text(path.read_text() + f"\n[auth]\nauthserv_id = '{AUTHSERV}'\n")
    runtime = Runtime(load_config(path))
    yield runtime
    runtime.close()


def _outbox(rt: Runtime) -> list[dict[str, object]]:
    # Mail to the customer side only; agents' notifications are tested in test_agents.py.
    return rt.store.query("SELECT kind, recipients, raw FROM outbox WHERE kind != 'agent-notify' ORDER BY id")


def _body(row: dict[str, object]) -> str:
    from email import message_from_bytes
    from email.policy import default

    msg = message_from_bytes(bytes(row["raw"]), policy=default)  # type: ignore[arg-type]
    return str(msg["Subject"]) + "\n" + msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]


@freeze_time(OPEN)
@pytest.mark.parametrize(
    ("sender", "subject", "body", "headers", "outcome", "category", "reply_kind"),
    [
        (
            KARI,
            "Bestilling: ny VLAN på port 12",
            "Kan dere flytte port 12 i bygg A til VLAN 30?",
            PASS_AR,
            "opened",
            "change",
            "receipt",
        ),
        (
            IT_NORDBY,
            "Endring i brannmur",
            "Hei, kan dere åpne port 443 inn til skolens server?",
            {},
            "refused",
            None,
            "change-not-allowed",
        ),
        (
            "Ole Elev <ole.elev@nordby-skole.example>",
            "Wifi funker ikke",
            "Hei! Jeg får ikke koblet meg på wifi på klasserommet.",
            {},
            "refused",
            None,
            "end-user-redirect",
        ),
        (
            IT_NORDBY,
            "Trenger ny svitsj",
            "Vi trenger en ny svitsj til bygg B, 48 porter. Kan vi bestille?",
            {},
            "refused",
            None,
            "equipment-shop",
        ),
        (
            IT_NORDBY,
            "Spørsmål om faktura",
            "Hvem kan vi spørre om fakturaen for oktober?",
            {},
            "opened",
            "admin",  # issue 18: invoice mail opens an admin case
            "receipt",
        ),
        (
            "Servicedesk <servicedesk@vestland-college.example>",
            "Network down in library",
            "Since 09:15 nobody in the library gets a network connection.",
            {},
            "opened",
            "incident",
            "receipt",
        ),
        (
            '"Teknisk ansvarlig" <kari.nordmann@evil.example>',
            "Bestilling av endring",
            "Kan dere åpne brannmuren for 10.0.0.5?",
            {},
            "held",
            None,
            None,
        ),
    ],
    ids=[
        "change-from-technical",
        "change-from-non-technical",
        "end-user",
        "equipment",
        "question",
        "english-incident",
        "display-name-spoof",
    ],
)
def test_rule_table(
    rt: Runtime,
    sender: str,
    subject: str,
    body: str,
    headers: dict[str, str],
    outcome: str,
    category: str | None,
    reply_kind: str | None,
) -> None:
    """Each kind of mail from DOMAIN.md ends the way the shipped rules promise."""
    result = process(rt, mail(sender=sender, subject=subject, body=body, headers=headers), "pipe")
    assert result.outcome == outcome, result.reason
    cases = rt.store.query("SELECT category FROM cases")
    assert [c["category"] for c in cases] == ([category] if category else [])
    assert [r["kind"] for r in _outbox(rt)] == ([reply_kind] if reply_kind else [])


@freeze_time(OPEN)
def test_change_refusal_names_the_technical_contacts(rt: Runtime) -> None:
    """A non-technical contact's order is answered with who may order, and kept as a record."""
    process(rt, mail(sender=IT_NORDBY, subject="Bestilling", body="Kan dere endre VLAN på port 3?"), "pipe")
    text = _body(_outbox(rt)[0])
    assert "Teknisk ansvarlig" in text and "kari.nordmann@nordby-skole.example" in text
    assert "41 23 45 67" in text
    kept = rt.store.one("SELECT disposition, reason FROM messages")
    assert kept["disposition"] == "refused" and "change-not-allowed" in kept["reason"]


@freeze_time(OPEN)
def test_end_user_is_pointed_to_local_support(rt: Runtime) -> None:
    """An end user gets their own Lokalt supportpunkt's address and phone, and no case."""
    process(rt, mail(sender="ola@fjellvik.kommune.example", subject="PC-en er treg"), "pipe")
    text = _body(_outbox(rt)[0])
    assert "brukerstotte@fjellvik.kommune.example" in text and "75 10 20 00" in text
    assert rt.store.query("SELECT id FROM cases") == []


@pytest.mark.parametrize(
    ("moment", "priority", "alerted"),
    [
        ("2026-11-28 20:00:00", "critical", True),  # Saturday evening
        ("2026-05-14 08:00:00", "critical", True),  # Ascension Day (Kristi himmelfartsdag), a Thursday
        ("2026-05-17 10:00:00", "critical", True),  # Constitution Day, a Sunday
        ("2026-11-24 05:30:00", "critical", True),  # Tuesday 06:30 in Oslo, before opening
        # Issue 18: an outage is critical in opening hours too; the desk is staffed, so no call-out.
        ("2026-11-24 10:00:00", "critical", False),  # Tuesday 11:00 in Oslo, open
    ],
)
def test_critical_outside_opening_hours_alerts_on_call(
    rt: Runtime, moment: str, priority: str, alerted: bool
) -> None:
    """'Hele bygget er nede' outside opening hours is critical and alerts the on-call at once."""
    with freeze_time(moment):
        result = process(
            rt,
            mail(
                sender=IT_NORDBY, subject="KRITISK: hele bygget er nede", body="Ingen har nett i hele bygget."
            ),
            "pipe",
        )
    case = rt.store.one("SELECT priority, category FROM cases WHERE id = ?", (result.case_id,))
    assert case == {"priority": priority, "category": "incident"}
    alerts = [r for r in _outbox(rt) if r["kind"] == "alert"]
    assert bool(alerts) == alerted
    if alerted:
        assert alerts[0]["recipients"] == '["beredskap@service.example"]'


@freeze_time(OPEN)
def test_missing_escalation_information_is_asked_once_and_completed(rt: Runtime) -> None:
    """An incident lacking details gets one request listing them; the answer threads back and completes it."""
    first = process(
        rt,
        mail(
            sender=IT_NORDBY,
            subject="Nettet er ustabilt",
            body="Hei, nettet på skolen er ustabilt.\n\nSendt fra min iPhone",
        ),
        "pipe",
    )
    receipt = _body(_outbox(rt)[0])
    assert "MAC-adressen" in receipt and "romnummer" in receipt
    asked = rt.store.query("SELECT field FROM case_fields WHERE state = 'asked' ORDER BY field")
    assert {"mac", "location", "device"} <= {r["field"] for r in asked}
    receipt_id = rt.store.one("SELECT message_id FROM outbox")["message_id"]
    answer = (
        "Det gjelder bygg B, rom 204. Det startet i dag kl 08:30, flere elever på trådløst (eduroam)\n"
        "mister forbindelsen hvert par minutter. Brukernavn ola@nordby-skole.example.\n"
        "Windows 11 laptop, MAC 3c:22:fb:12:ab:cd. Vi har restartet maskinen og sjekket NAV.\n"
        "Ring meg på 22 33 44 50."
    )
    second = process(
        rt,
        mail(
            sender=IT_NORDBY,
            subject="SV: Nettet er ustabilt",
            body=answer,
            headers={"In-Reply-To": receipt_id},
        ),
        "pipe",
    )
    assert second.outcome == "appended" and second.case_id == first.case_id
    actions = [e["action"] for e in rt.store.query("SELECT action FROM events WHERE case_id = 1")]
    assert "escalation-info-added" in actions and "escalation-info-complete" in actions
    assert actions.count("asked-missing") == 1
    third = process(
        rt,
        mail(
            sender=IT_NORDBY,
            subject="SV: Nettet er ustabilt",
            body="Fortsatt ustabilt.",
            headers={"In-Reply-To": receipt_id},
        ),
        "pipe",
    )
    assert third.outcome == "appended"
    assert [r["kind"] for r in _outbox(rt)] == ["receipt"]  # never asked twice


@pytest.mark.parametrize(
    "text",
    [
        "Eduroam virker ikke",
        "Gjestenettet er nede i bygg 3 rom 210 siden i dag, ring 91234567",
        "WiFi borte på MacBook, prøvd restart. Hele klassen er rammet, ingen kommer på nett i det hele tatt nå",
        "",
    ],
)
@freeze_time(OPEN)
def test_first_questions_equal_what_the_stored_case_lacks(rt: Runtime, text: str) -> None:
    """The new-case shortcut asks exactly what reading the stored case back says is missing."""
    from gateway.cases import case_fields

    result = process(rt, mail(sender=KARI, subject="Nettet er nede", body=text), "pipe")
    assert result.outcome == "opened" and result.case_id is not None
    rows = rt.store.query(
        "SELECT field FROM case_fields WHERE case_id = ? AND state = 'asked'", (result.case_id,)
    )
    general = [f.key for f in case_fields.still_missing(rt.store.conn, result.case_id)]
    assert sorted(r["field"] for r in rows) == sorted(general)
    assert general  # every text above leaves something to ask
    (notice_row,) = rt.store.query("SELECT raw FROM outbox WHERE kind = 'agent-notify'")
    notice = _body(notice_row)
    labels = [f.nb for f in case_fields.still_missing(rt.store.conn, result.case_id)]
    assert "Mangler før eskalering: " + ", ".join(labels) in notice.replace("\n", " ")


@freeze_time(OPEN)
def test_attached_netinfo_log_counts(rt: Runtime) -> None:
    """A netinfo.log attachment supplies the MAC, device and troubleshooting fields."""
    from email.message import EmailMessage

    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = IT_NORDBY, "kontakt@service.example", "Feil på nettet"
    msg["Message-ID"] = "<netinfo@nordby-skole.example>"
    msg.set_content("Hei, en bruker har problemer med nettet, se vedlagt logg.")
    msg.add_attachment(b"ipconfig /all ...", maintype="text", subtype="plain", filename="netinfo.log")
    process(rt, msg.as_bytes(), "pipe")
    present = rt.store.query("SELECT field, evidence FROM case_fields WHERE state = 'present'")
    by_field = {r["field"]: r["evidence"] for r in present}
    assert by_field["mac"] == by_field["device"] == by_field["troubleshooting"] == "netinfo.log"


@freeze_time(OPEN)
def test_forged_authentication_results_above_the_real_one_is_not_trusted(rt: Runtime) -> None:
    """Two Authentication-Results with our authserv-id cannot be told apart, so neither is trusted."""
    forged = {"Authentication-Results": f"{AUTHSERV}; dmarc=pass header.from=nordby-skole.example"}
    raw = mail(
        sender=KARI,
        subject="Bestilling av endring",
        body="Kan dere åpne port 22 i brannmuren?",
        headers=forged,
    )
    real = f"Authentication-Results: {AUTHSERV}; dmarc=fail header.from=nordby-skole.example\r\n".encode()
    # The forged header (from the sender) sits above the one "our MTA" added last.
    result = process(rt, raw.replace(b"\r\n\r\n", b"\r\n" + real + b"\r\n", 1), "pipe")
    assert result.outcome == "held" and "awaiting confirmation" in result.reason
    assert rt.store.query("SELECT id FROM cases") == []
    assert [r["kind"] for r in _outbox(rt)] == ["change-confirm"]


@freeze_time(OPEN)
def test_authentication_results_from_other_servers_are_ignored(rt: Runtime) -> None:
    """A DMARC pass from someone else's authserv-id is no evidence."""
    other = {"Authentication-Results": "mx.evil.example; dmarc=pass header.from=nordby-skole.example"}
    result = process(
        rt, mail(sender=KARI, subject="Endring", body="Kan dere endre VLAN?", headers=other), "pipe"
    )
    assert result.outcome == "held"


@freeze_time(OPEN)
def test_unauthenticated_technical_order_opens_after_confirmation_reply(rt: Runtime) -> None:
    """The confirmation code replied from the same address opens the change; a wrong code does not."""
    order = mail(
        sender=KARI,
        subject="Bestilling: åpne port 8443",
        body="Kan dere åpne port 8443 inn til bygg A?",
        message_id="<order@nordby-skole.example>",
    )
    assert process(rt, order, "pipe").outcome == "held"
    confirm_mail = _outbox(rt)[0]
    token = rt.store.one("SELECT token FROM confirmations")["token"]
    assert token in _body(confirm_mail)
    process(rt, mail(sender=KARI, subject="SV: Bekreft", body="Koden er ABCD-EFGH"), "pipe")
    spoofed = process(rt, mail(sender="x@evil.example", subject="SV: Bekreft", body=f"Kode: {token}"), "pipe")
    assert spoofed.outcome == "held"
    assert rt.store.query("SELECT id FROM cases WHERE category = 'change'") == []
    confirmed = process(
        rt, mail(sender=KARI, subject="SV: Bekreft bestillingen", body=f"Bekreftet: {token}"), "pipe"
    )
    assert confirmed.outcome == "opened"
    case = rt.store.one("SELECT category, subject FROM cases WHERE id = ?", (confirmed.case_id,))
    assert case == {"category": "change", "subject": "Bestilling: åpne port 8443"}
    process(rt, mail(sender=KARI, subject="SV: Bekreft", body=f"Bekreftet igjen: {token}"), "pipe")
    changes = rt.store.query("SELECT id FROM cases WHERE category = 'change'")
    assert changes == [{"id": confirmed.case_id}]  # a used code opens nothing a second time


def _keypair() -> tuple[bytes, bytes]:
    return dkim_keypair()


@freeze_time(OPEN)
def test_dkim_signed_order_over_smtp_is_authenticated(rt: Runtime) -> None:
    """On SMTP intake we verify DKIM ourselves; an aligned valid signature lets the order through."""
    key, record = _keypair()
    rt.txt_lookup = lambda name, timeout=5: (
        record if name == b"sel1._domainkey.nordby-skole.example." else None
    )
    raw = mail(
        sender=KARI, subject="Bestilling: VLAN 40 på port 7", body="Kan dere flytte port 7 til VLAN 40?"
    )
    signed = (
        dkim.sign(
            raw,
            b"sel1",
            b"nordby-skole.example",
            key,
            include_headers=[b"from", b"to", b"subject", b"message-id", b"date"],
        )
        + raw
    )
    result = process(rt, signed, "smtp")
    assert result.outcome == "opened", result.reason
    events = rt.store.query("SELECT detail FROM events WHERE action = 'rule-fired'")
    assert {"detail": "change-order-from-technical"} in events
    second = mail(sender=KARI, subject="Bestilling: VLAN 41", body="Kan dere flytte port 8 til VLAN 41?")
    resigned = dkim.sign(second, b"sel1", b"nordby-skole.example", key, include_headers=[b"from", b"subject"])
    tampered = (resigned + second).replace(b"VLAN 41?", b"VLAN 99?")
    assert process(rt, tampered, "smtp").outcome == "held"


@freeze_time(OPEN)
def test_dkim_from_another_domain_does_not_align(rt: Runtime) -> None:
    """A valid signature by a domain other than the From domain is not authentication."""
    key, record = _keypair()
    rt.txt_lookup = lambda name, timeout=5: record if name == b"s._domainkey.evil.example." else None
    raw = mail(sender=KARI, subject="Endring", body="Kan dere endre VLAN på port 2?")
    signed = dkim.sign(raw, b"s", b"evil.example", key, include_headers=[b"from", b"subject"]) + raw
    assert process(rt, signed, "smtp").outcome == "held"


def test_unsigned_mail_is_not_handed_to_dkim(rt: Runtime) -> None:
    """No DKIM-Signature header: no verification (and no key lookup), and the reason says so."""
    from gateway.mail.auth import authenticate
    from gateway.mail.message import parse

    def no_lookup(name: bytes, timeout: float = 5) -> bytes | None:
        raise AssertionError(f"looked up {name!r} for a mail without a signature")

    unsigned = parse(mail(sender=KARI, subject="Bestilling: VLAN 40", body="Port 7 til VLAN 40"))
    verdict = authenticate(unsigned, "smtp", "", True, no_lookup)
    assert (verdict.authenticated, verdict.reason) == (False, "no DKIM signature")
    key, record = _keypair()
    raw = mail(sender=KARI, subject="Bestilling: VLAN 40", body="Port 7 til VLAN 40")
    signed = (
        dkim.sign(raw, b"sel1", b"nordby-skole.example", key, include_headers=[b"from", b"subject"]) + raw
    )
    looked_up: list[bytes] = []

    def lookup(name: bytes, timeout: float = 5) -> bytes | None:
        looked_up.append(name)
        return record

    assert authenticate(parse(signed), "smtp", "", True, lookup).authenticated
    assert looked_up == [b"sel1._domainkey.nordby-skole.example."]


@freeze_time(OPEN)
def test_more_than_one_from_is_held(rt: Runtime) -> None:
    """A message with two From headers cannot be attributed and is held for an agent."""
    raw = mail(sender=IT_NORDBY, subject="Nettet er nede").replace(
        b"To:", b"From: kari.nordmann@nordby-skole.example\r\nTo:", 1
    )
    result: Result = process(rt, raw, "pipe")
    assert result.outcome == "held" and result.reason == "several-from-headers"


def test_auto_reply_never_answered_even_by_rules(rt: Runtime) -> None:
    """An auto-reply from a contact neither opens a case nor gets an answer."""
    process(
        rt,
        mail(
            sender=IT_NORDBY,
            subject="Automatisk svar: Nettet er nede",
            headers={"Auto-Submitted": "auto-replied"},
        ),
        "pipe",
    )
    assert rt.store.query("SELECT id FROM cases") == [] and _outbox(rt) == []
    assert Deliverer(rt.config, rt.store).flush().sent == 0


def test_receipt_limit_per_hour_survives_restart(tmp_path: Path, relay: RecordingRelay) -> None:
    """After N receipts in an hour a sender gets no more, also after a restart; an hour later again."""
    path = write_config(tmp_path, relay_port=relay.port, receipt_limit_per_hour="2")
    with freeze_time("2026-11-24 09:00:00"):
        first = Runtime(load_config(path))
        for n in range(2):
            process(first, mail(sender=IT_NORDBY, subject=f"Spørsmål {n}"), "pipe")
        first.close()
    with freeze_time("2026-11-24 09:30:00"):
        second = Runtime(load_config(path))
        process(second, mail(sender=IT_NORDBY, subject="Spørsmål 3"), "pipe")
        assert second.store.one("SELECT count(*) AS n FROM outbox WHERE kind = 'receipt'")["n"] == 2
        suppressed = second.store.query("SELECT reason FROM events WHERE action = 'reply-suppressed'")
        assert "already had 2 automatic replies" in suppressed[0]["reason"]
    with freeze_time("2026-11-24 10:31:00"):
        process(second, mail(sender=IT_NORDBY, subject="Spørsmål 4"), "pipe")
        assert second.store.one("SELECT count(*) AS n FROM outbox WHERE kind = 'receipt'")["n"] == 3
        second.close()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[rule]]\nname = "Bad Name"\nthen = { stop = true }\n', "name must be kebab-case"),
        (
            '[[rule]]\nname = "a"\nwhen = { colour = "red" }\nthen = { stop = true }\n',
            "when.colour: unknown condition",
        ),
        ('[[rule]]\nname = "a"\nthen = { category = "party" }\n', "then.category: unknown value"),
        ('[[rule]]\nname = "a"\nwhen = { subject = "(" }\nthen = { stop = true }\n', "bad pattern"),
        ('[[rule]]\nname = "a"\nthen = { reply = "no-such-template" }\n', "no template 'no-such-template'"),
        (
            '[[rule]]\nname = "a"\nwhen = { predicate = "nope" }\nthen = { stop = true }\n',
            "unknown predicate",
        ),
        (
            '[[rule]]\nname = "a"\nthen = { stop = true }\n[[rule]]\nname = "a"\nthen = { stop = true }\n',
            "name already used",
        ),
    ],
)
def test_broken_rule_file_names_file_rule_and_reason(tmp_path: Path, text: str, message: str) -> None:
    """A rule file that cannot be used fails at load with its file name, the rule and the reason."""
    (tmp_path / "50-local.toml").write_text(text)
    with pytest.raises(RuleError) as caught:
        load_rules(tmp_path, templates={"receipt"})
    assert str(caught.value).startswith("50-local.toml rule ")
    assert message in str(caught.value)
