"""Agents and 2nd line work cases by replying to mail: answers, notes, commands, escalation, lifecycle."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from email import message_from_bytes
from email.policy import default
from pathlib import Path

import dkim
import pytest
from freezegun import freeze_time
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.cases import casework
from gateway.core.config import load_config
from gateway.ops.server import Server
from gateway.pipeline.process import process
from gateway.runtime import Runtime
from tests.support import RecordingRelay, dkim_keypair, mail, smtp_send, wait_for, write_config

CUSTOMER = "IT Nordby <it@nordby-skole.example>"
CUSTOMER_ADDR = "it@nordby-skole.example"
MONA = "Mona Sørensen <mona@service.example>"
SECOND_LINE = "Campus 2. linje <andrelinje@service.example>"


@pytest.fixture
def config_path(tmp_path: Path, relay: RecordingRelay) -> Path:
    """serve's pipeline in this process: the tests below give its Runtime an offline DKIM key."""
    return write_config(tmp_path, relay_port=relay.port, intake_process=False)


@pytest.fixture(scope="module")
def dkim_key() -> tuple[bytes, bytes]:
    return dkim_keypair()


Signer = Callable[[bytes], bytes]


def _signer(runtime: Runtime, dkim_key: tuple[bytes, bytes]) -> Signer:
    """Agents' mail is DKIM-signed by service.example, as their own mail system would do."""
    key, record = dkim_key
    runtime.txt_lookup = lambda name, timeout=5: record if name == b"gw._domainkey.service.example." else None

    def sign(raw: bytes) -> bytes:
        return (
            dkim.sign(
                raw,
                b"gw",
                b"service.example",
                key,
                include_headers=[b"from", b"to", b"subject", b"message-id", b"in-reply-to"],
            )
            + raw
        )

    return sign


@pytest.fixture
def signed(server: Server, dkim_key: tuple[bytes, bytes]) -> Signer:
    return _signer(server.runtime, dkim_key)


@pytest.fixture
def rt(tmp_path: Path, relay: RecordingRelay, dkim_key: tuple[bytes, bytes]) -> Iterator[Runtime]:
    runtime = Runtime(load_config(write_config(tmp_path, relay_port=relay.port)))
    runtime.sign = _signer(runtime, dkim_key)  # type: ignore[attr-defined]
    yield runtime
    runtime.close()


def _notice_for(relay: RecordingRelay, agent: str) -> object:
    return wait_for(lambda: [r for r in relay.to(agent) if r.message["Reply-To"]], what=f"notice to {agent}")[
        -1
    ]


def test_agent_answer_reaches_customer_from_service_address_without_quotes(
    server: Server, relay: RecordingRelay, signed: Signer
) -> None:
    """An agent's reply to the notification reaches the customer, threaded, from us, without the quotes."""
    port = server.listener.address[1]
    smtp_send(
        port,
        mail(sender=CUSTOMER, subject="Skriveren finner ikke nettet", message_id="<q1@nordby-skole.example>"),
    )
    notice = _notice_for(relay, "mona@service.example").message  # type: ignore[attr-defined]
    assert notice["Subject"].startswith("[SSC#1]")
    reply_to = notice["Reply-To"].addresses[0].addr_spec
    assert reply_to.startswith("kontakt+ssc1.")
    answer = (
        f"Hei!\n\nVi har åpnet for skriveren nå.\n\nMona\n\nFra: Servicesenteret <kontakt@service.example>\n"
        f"Sendt: tirsdag 24. november 2026 10:00\nTil: Mona\nEmne: {notice['Subject']}\n\nHEMMELIG SITAT\n"
    )
    raw = mail(
        sender=MONA,
        to=reply_to,
        subject=f"SV: {notice['Subject']}",
        body=answer,
        headers={"In-Reply-To": notice["Message-ID"]},
    )
    assert smtp_send(port, signed(raw))[0] == 250
    got = wait_for(lambda: [r for r in relay.to(CUSTOMER_ADDR) if "Vi har åpnet" in r.body], what="answer")[0]
    msg = got.message
    assert msg["From"].addresses[0].addr_spec == "kontakt@service.example"
    assert "Mona Sørensen" in str(msg["From"])
    assert msg["In-Reply-To"] == "<q1@nordby-skole.example>"
    assert "[SSC#1]" in msg["Subject"]
    assert "HEMMELIG SITAT" not in got.body
    assert "mona@service.example" not in got.raw.decode("utf-8", "replace")
    first = server.runtime.store.one("SELECT first_response_at, status FROM cases WHERE id = 1")
    assert first["first_response_at"] is not None and first["status"] == "open"


REPLY_SHAPES = st.tuples(
    st.sampled_from(["", "\n", "\n\n", "   \n"]),
    st.sampled_from(["#intern", "#INTERN", "#intern   ", "#internal", "  #Intern"]),
    st.lists(
        st.sampled_from(["#status venter", "#prioritet høy", "#kategori hendelse", "#tildel erik"]),
        max_size=2,
    ),
    st.sampled_from(["", "> kunden skrev noe\n", "\nFra: Kari\nSendt: i dag\n\ngammelt sitat\n"]),
    st.booleans(),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shape=REPLY_SHAPES)
def test_internal_note_never_reaches_the_customer(
    rt: Runtime, shape: tuple[str, str, list[str], str, bool]
) -> None:
    """Whatever shape an agent's #intern reply takes, no mail to anyone outside the centre carries it."""
    lead, marker, others, quote, marker_first = shape
    secret = f"INTERNAL-{uuid.uuid4().hex[:12]}"
    commands = [marker, *others] if marker_first else [*others, marker]
    result = process(rt, mail(sender=CUSTOMER, subject="Treg linje"), "pipe")
    case_id = result.case_id
    body = lead + "\n".join(commands) + f"\n\nNotat: {secret} er passordet til svitsjen.\n" + quote
    raw = mail(sender=MONA, subject=f"SV: [SSC#{case_id}] Treg linje", body=body)
    process(rt, rt.sign(raw), "smtp")  # type: ignore[attr-defined]
    leaked = rt.store.query(
        "SELECT kind, recipients FROM outbox WHERE instr(CAST(raw AS TEXT), ?) > 0", (secret,)
    )
    outsiders = [
        r for r in leaked if not all(a.endswith("@service.example") for a in json.loads(r["recipients"]))
    ]
    assert outsiders == []
    note = rt.store.one("SELECT internal FROM messages WHERE instr(body, ?) > 0", (secret,))
    assert note == {"internal": 1}


def _case(rt: Runtime, case_id: int = 1) -> dict[str, object]:
    return rt.store.one("SELECT status, priority, category, owner, queue FROM cases WHERE id = ?", (case_id,))


def _last(rt: Runtime, kind: str) -> str:
    row = rt.store.one("SELECT raw FROM outbox WHERE kind = ? ORDER BY id DESC LIMIT 1", (kind,))
    msg = message_from_bytes(bytes(row["raw"]), policy=default)
    return str(msg["Subject"]) + "\n" + msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]


def _agent(rt: Runtime, body: str, case_id: int = 1, sender: str = MONA, sign: bool = True) -> None:
    raw = mail(sender=sender, subject=f"SV: [SSC#{case_id}] sak", body=body)
    process(rt, rt.sign(raw) if sign else raw, "smtp")  # type: ignore[attr-defined]


def test_commands_apply_together_and_are_confirmed(rt: Runtime) -> None:
    """Several commands apply in one go and the agent gets exactly what changed."""
    process(rt, mail(sender=CUSTOMER, subject="Spørsmål om trådløsnettet"), "pipe")
    _agent(rt, "#status venter\n#prioritet kritisk\n#tildel erik\n#kategori endring\n")
    assert _case(rt) == {
        "status": "pending",
        "priority": "critical",
        "category": "change",
        "owner": "erik@service.example",
        "queue": "first-line",
    }
    confirmation = _last(rt, "command-result")
    for change in (
        "status: ny -> venter på kunden",
        "prioritet: normal -> kritisk",
        "ansvarlig: - -> erik@service.example",
        "kategori: hendelse -> endring",  # issue 18: the default mail reports a fault
    ):
        assert change in confirmation
    assert rt.store.query("SELECT id FROM outbox WHERE kind = 'answer'") == []


def test_a_bad_command_line_applies_nothing_and_is_named(rt: Runtime) -> None:
    """One bad line stops the whole mail: nothing changes and the error names that line."""
    process(rt, mail(sender=CUSTOMER, subject="Spørsmål"), "pipe")
    _agent(rt, "#status venter\n#prioritet superviktig\n\nHei, vi ser på det.")
    assert _case(rt)["status"] == "new" and _case(rt)["priority"] == "normal"
    error = _last(rt, "command-result")
    assert "IKKE utført" in error and "#prioritet superviktig" in error
    assert "ukjent verdi «superviktig»; bruk en av: kritisk, høy, normal, lav" in error
    assert "unknown" not in error
    assert rt.store.query("SELECT id FROM outbox WHERE kind = 'answer'") == []


def test_customer_writing_commands_changes_nothing(rt: Runtime) -> None:
    """A customer (or anyone not an agent) writing `#status løst` only adds a message."""
    first = process(rt, mail(sender=CUSTOMER, subject="Nettet er tregt"), "pipe")
    process(
        rt,
        mail(
            sender=CUSTOMER,
            subject=f"SV: [SSC#{first.case_id}] Nettet er tregt",
            body="#status løst\n#prioritet kritisk\n",
        ),
        "pipe",
    )
    assert _case(rt)["status"] == "new" and _case(rt)["priority"] == "normal"


def test_unauthenticated_agent_mail_is_not_obeyed(rt: Runtime) -> None:
    """Mail from an agent's address without DKIM proof is held, and its commands are ignored."""
    process(rt, mail(sender=CUSTOMER, subject="Spørsmål"), "pipe")
    _agent(rt, "#status løst\nFerdig.", sign=False)
    assert _case(rt)["status"] == "new"
    held = rt.store.one("SELECT disposition, case_id FROM messages WHERE from_addr = 'mona@service.example'")
    assert held == {"disposition": "held", "case_id": None}


def test_escalation_round_trip_through_second_line(rt: Runtime) -> None:
    """#eskaler sends the case to 2nd line with a warning about gaps; their answer comes back as a note."""
    process(rt, mail(sender=CUSTOMER, subject="Nettet er ustabilt", body="Nettet er ustabilt i dag."), "pipe")
    _agent(rt, "#eskaler\n#intern\nSender videre.")
    escalation = _last(rt, "escalation")
    assert "Eskalert til 2. linje" in escalation and "Nettet er ustabilt i dag." in escalation
    confirmation = _last(rt, "command-result")
    assert (
        "eskalert til andrelinje@service.example" in confirmation
        and "ADVARSEL: dette mangler" in confirmation
    )
    assert _case(rt)["queue"] == "second-line"
    escalation_id = rt.store.one("SELECT message_id FROM outbox WHERE kind = 'escalation'")["message_id"]
    answer = mail(
        sender=SECOND_LINE,
        subject="SV: [SSC#1] Eskalert",
        body="Porten var feilkonfigurert, rettet.",
        headers={"In-Reply-To": escalation_id},
    )
    process(rt, rt.sign(answer), "smtp")  # type: ignore[attr-defined]
    note = rt.store.one("SELECT internal FROM messages WHERE from_addr = 'andrelinje@service.example'")
    assert note == {"internal": 1}
    assert "Svar fra 2. linje" in _last(rt, "agent-notify")
    assert rt.store.query("SELECT id FROM outbox WHERE kind = 'answer'") == []
    direct = mail(
        sender=SECOND_LINE,
        subject="SV: [SSC#1] Eskalert",
        body="#svar\nHei, dette er nå rettet.",
        headers={"In-Reply-To": escalation_id},
    )
    process(rt, rt.sign(direct), "smtp")  # type: ignore[attr-defined]
    assert "Hei, dette er nå rettet." in _last(rt, "answer")


def test_answers_copy_same_organisation_cc_but_not_outsiders(rt: Runtime) -> None:
    """People in Cc who are contacts of the same organisation get the answer; others do not."""
    raw = mail(
        sender=CUSTOMER,
        subject="Spørsmål om kontrakt",
        headers={"Cc": "per.hansen@nordby-skole.example, leverandor@vendor.example"},
    )
    process(rt, raw, "pipe")
    _agent(rt, "Hei, kontrakten gjelder til 2027.")
    row = rt.store.one("SELECT recipients FROM outbox WHERE kind = 'answer'")
    assert row["recipients"] == '["it@nordby-skole.example", "per.hansen@nordby-skole.example"]'


def test_forged_reply_address_does_not_thread(rt: Runtime) -> None:
    """A per-case address with a wrong MAC is not accepted as a way into the case."""
    process(rt, mail(sender=CUSTOMER, subject="Spørsmål"), "pipe")
    forged = mail(sender=CUSTOMER, to="kontakt+ssc1.0000000000@service.example", subject="Hei")
    result = process(rt, forged, "pipe")
    assert (result.outcome, result.case_id) == ("opened", 2)  # a case of its own, not case 1


def test_reopen_close_and_follow_up_timing(rt: Runtime) -> None:
    """Resolved reopens on a reply; resolved closes after M days; a reply long after closing opens a linked case."""
    with freeze_time("2026-11-02 09:00:00"):
        process(
            rt, mail(sender=CUSTOMER, subject="Linja er nede", message_id="<c1@nordby-skole.example>"), "pipe"
        )
        _agent(rt, "#status løst\nDet er fikset.")
    with freeze_time("2026-11-03 09:00:00"):
        process(rt, mail(sender=CUSTOMER, subject="SV: [SSC#1] Linja er nede", body="Nede igjen!"), "pipe")
        assert _case(rt)["status"] == "open"
        _agent(rt, "#status løst\nFikset på nytt.")
    with freeze_time("2026-11-09 09:00:00"):
        assert casework.close_resolved(rt) == []  # six days: not yet
    with freeze_time("2026-11-10 09:00:01"):
        assert casework.close_resolved(rt) == [1]
        assert _case(rt)["status"] == "closed"
    with freeze_time("2026-11-20 09:00:00"):  # ten days after closing: inside the 14-day window
        process(rt, mail(sender=CUSTOMER, subject="SV: [SSC#1] Linja er nede", body="Igjen."), "pipe")
        assert _case(rt)["status"] == "open"
        _agent(rt, "#status lukket\nLukker.")
    with freeze_time("2026-12-20 09:00:00"):
        result = process(
            rt, mail(sender=CUSTOMER, subject="SV: [SSC#1] Linja er nede", body="Nede nå."), "pipe"
        )
        assert result.outcome == "opened" and result.case_id == 2
        linked = rt.store.one("SELECT linked_case FROM cases WHERE id = 2")
        assert linked == {"linked_case": 1}


def _answers(rt: Runtime) -> list[str]:
    rows = rt.store.query("SELECT raw FROM outbox WHERE kind = 'answer' ORDER BY id")
    return [
        message_from_bytes(bytes(r["raw"]), policy=default).get_body(("plain",)).get_content()  # type: ignore[union-attr]
        for r in rows
    ]


def test_answer_written_under_the_quote_is_relayed(rt: Runtime) -> None:
    """An agent who answers below the quoted mail has that answer relayed, not an empty mail."""
    process(rt, mail(sender=CUSTOMER, subject="Skriveren på rom 204"), "pipe")
    _agent(rt, "Den 03.03.2025 10:01, skrev IT Nordby:\n> Skriveren svarer ikke.\n\nSkriveren er startet på nytt nå.\n")
    answers = _answers(rt)
    assert len(answers) == 1 and "Skriveren er startet på nytt nå." in answers[0]
    assert "Skriveren svarer ikke." not in answers[0]
    assert rt.store.query("SELECT id FROM outbox WHERE kind = 'command-result'") == []


def test_answer_that_is_all_quote_goes_whole_and_the_agent_is_told(rt: Runtime) -> None:
    """When cutting the quote leaves nothing, the whole text is relayed and the confirmation says so."""
    process(rt, mail(sender=CUSTOMER, subject="Skriveren på rom 204"), "pipe")
    _agent(rt, "> Skriveren svarer ikke.\n> Kan dere se på den?\n")
    answers = _answers(rt)
    assert len(answers) == 1 and "Skriveren svarer ikke." in answers[0]
    confirmation = _last(rt, "command-result")
    assert "Vi fant ingen ny tekst over sitatet" in confirmation
    assert "Endret i sak" not in confirmation
