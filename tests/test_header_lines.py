"""Outgoing header lines: none over 998 octets, and every header decodes back to the text we meant."""

from __future__ import annotations

import base64
from email import message_from_bytes
from email.header import decode_header, make_header
from email.message import EmailMessage
from email.policy import compat32, default
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gateway.core.config import Config, load_config
from gateway.ops.server import Server
from gateway.outbox.headers import one_line
from gateway.outbox.queue import Outgoing, compose
from tests.support import RecordingRelay, mail, smtp_send, wait_for, write_config

KARI = "kari.nordmann@nordby-skole.example"

# Text a stranger may put in a subject, a name or a file name: any characters, and long runs
# without a space (the unbroken word that once made a 3,001-octet line).
TEXT = st.one_of(
    st.text(max_size=300),
    st.text(alphabet="aæ =?-_.\"'<>,;:()\\", max_size=3000),
    st.builds(lambda word, times: word * times, st.text(min_size=1, max_size=20), st.integers(1, 400)),
)


@pytest.fixture(scope="module")
def composing(tmp_path_factory: pytest.TempPathFactory) -> Config:
    return load_config(write_config(Path(tmp_path_factory.mktemp("headers"))))


def _lines_fit(raw: bytes) -> None:
    longest = max(raw.split(b"\r\n"), key=len)
    assert len(longest) <= 998, longest[:120]


def _display_name(raw: bytes, message: EmailMessage) -> str:
    """The From name as RFC 2047 reads it (the email package puts a space between encoded-words)."""
    head = raw.split(b"\r\n\r\n", 1)[0].decode("ascii").replace("\r\n ", " ").replace("\r\n\t", "\t")
    value = next(line for line in head.split("\r\n") if line.startswith("From: "))[6:]
    phrase = value.rsplit(" <", 1)[0].strip()
    if phrase.startswith("=?"):
        return str(make_header(decode_header(phrase)))
    return str(message["From"].addresses[0].display_name)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(subject=TEXT, name=TEXT)
@example(subject="".join(f"=?utf-8?b?{'QUFB' * 14}?=" for _ in range(50)), name="x")
@example(subject="y" * 1200, name="Servicesenteret")
@example(subject="", name="")
def test_plain_mail_headers_fit_and_decode_back(composing: Config, subject: str, name: str) -> None:
    """A text mail's Subject and From name decode to the text given, with every line ≤ 998 octets."""
    _, raw = compose(
        composing, Outgoing("receipt", ["kari@nordby-skole.example"], subject, "hei", from_name=name)
    )
    _lines_fit(raw)
    message = message_from_bytes(raw, policy=default)
    assert message["Subject"] == one_line(subject)
    assert _display_name(raw, message) == one_line(name or composing.service.name)
    assert message["From"].addresses[0].addr_spec == composing.service.address


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(subject=TEXT, name=TEXT, filename=TEXT.filter(lambda text: one_line(text) != ""))
@example(subject="z" * 3000, name="æ" * 600, filename="v" * 3000 + ".pdf")
def test_mail_with_an_attachment_fits_and_decodes_back(
    composing: Config, subject: str, name: str, filename: str
) -> None:
    """With an attachment, Subject, From name and file name decode back and every line fits."""
    mail = Outgoing(
        "notice",
        ["agent@service.example"],
        subject,
        "se vedlegg",
        from_name=name,
        attachments=[(filename, "application/pdf", b"%PDF-1.4")],
    )
    _, raw = compose(composing, mail)
    _lines_fit(raw)
    message = message_from_bytes(raw, policy=default)
    assert isinstance(message, EmailMessage)
    assert message["Subject"] == one_line(subject)
    assert _display_name(raw, message) == one_line(name or composing.service.name)
    # compat32 reads RFC 2231 as written; the default policy strips a name's enclosing <>.
    (_, attachment) = message_from_bytes(raw, policy=compat32).get_payload()
    assert attachment.get_filename() == one_line(filename)


def test_a_subject_of_fifty_encoded_words_still_reaches_customer_and_agents(
    server: Server, relay: RecordingRelay
) -> None:
    """A 3,000-character subject word in 50 encoded-words gives a delivered receipt and agent notice."""
    word = "nettverksfeil" * 230  # 2,990 characters, no space
    chunks = [word[i : i + 60] for i in range(0, len(word), 60)]
    subject = "\r\n ".join(f"=?utf-8?b?{base64.b64encode(c.encode()).decode()}?=" for c in chunks)
    assert len(chunks) == 50
    code, text = smtp_send(server.listener.address[1], mail(subject=subject))
    assert code == 250, text
    kinds = wait_for(
        lambda: _sent_kinds(server) if len(relay.received) >= 2 else None, what="receipt and notice sent"
    )
    assert {"receipt", "agent-notify"} <= kinds
    for received in relay.received:
        _lines_fit(received.raw)
    (receipt,) = relay.to(KARI)
    # The sender is not authenticated, so the receipt echoes a shortened subject (issue 17);
    # the agents, who see the case, get the whole word, folded.
    assert word[:40] in receipt.message["Subject"]
    staff = [r for r in relay.received if KARI not in r.rcpt_tos]
    assert any(word in str(r.message["Subject"]) for r in staff)


def _sent_kinds(server: Server) -> set[str] | None:
    rows = server.runtime.store.query("SELECT kind, status FROM outbox")
    if any(row["status"] != "sent" for row in rows):
        return None
    return {str(row["kind"]) for row in rows}


def test_no_automatic_mail_to_an_address_longer_than_smtp_allows(server: Server) -> None:
    """A 1,200-octet local part at a customer's domain, folded at its dots: held, no line past 998 queued."""
    # Every line it arrives in is short: the dots of an obsolete local part may be folded around.
    local = "\r\n .".join(["x" * 60] * 20)  # read as 20 runs joined by dots: 1,219 octets
    code, text = smtp_send(server.listener.address[1], mail(sender=f"Ola <{local}@nordby-skole.example>"))
    assert code == 250, text
    for row in server.runtime.store.query("SELECT raw FROM outbox"):
        _lines_fit(row["raw"])
    (stored,) = server.runtime.store.query("SELECT from_addr FROM messages")
    assert stored["from_addr"] == ""  # no mailbox: RFC 5321 4.5.3.1.3 allows 256 octets for the path
