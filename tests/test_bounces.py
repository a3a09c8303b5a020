"""Bounces are tied to the outgoing mail they report: it is marked failed, and no case or reply follows."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from gateway.ops.server import Server
from gateway.pipeline.process import process
from gateway.runtime import Runtime
from tests.corpus import CORPUS, REPORTS
from tests.support import RecordingRelay, mail, smtp_send, wait_for

KARI = "kari.nordmann@nordby-skole.example"
DAEMON = "MAILER-DAEMON@mx.nordby-skole.example"


def _report(returned_type: str, returned: bytes, action: str = "failed", status: str = "5.1.1") -> bytes:
    """An RFC 3464 delivery status notification returning `returned` as a part of `returned_type`."""
    return b"\r\n".join(
        [
            f"From: Mail Delivery System <{DAEMON}>".encode(),
            b"To: kontakt@service.example",
            b"Subject: Undelivered Mail Returned to Sender",
            b"Message-ID: <dsn-1@mx.nordby-skole.example>",
            b"Auto-Submitted: auto-replied",
            b"MIME-Version: 1.0",
            b'Content-Type: multipart/report; report-type=delivery-status; boundary="dsn"',
            b"",
            b"--dsn",
            b"Content-Type: text/plain",
            b"",
            b"Your message could not be delivered.",
            b"",
            b"--dsn",
            b"Content-Type: message/delivery-status",
            b"",
            b"Reporting-MTA: dns; mx.nordby-skole.example",
            b"",
            f"Final-Recipient: rfc822; {KARI}".encode(),
            f"Action: {action}".encode(),
            f"Status: {status}".encode(),
            b"",
            b"--dsn",
            f"Content-Type: {returned_type}".encode(),
            b"",
            returned,
            b"--dsn--",
            b"",
        ]
    )


def _headers(raw: bytes) -> bytes:
    return raw.partition(b"\r\n\r\n")[0] + b"\r\n"


def full_message(receipt: bytes) -> bytes:
    return _report("message/rfc822", receipt)


def returned_headers(receipt: bytes) -> bytes:
    return _report("text/rfc822-headers", _headers(receipt))


def broken_report(receipt: bytes) -> bytes:
    """No report-type, Message-ID folded onto its own line, the end boundary missing."""
    folded = _headers(receipt).replace(b"Message-ID: ", b"Message-ID:\r\n\t")
    report = _report("text/rfc822-headers", folded).replace(b"; report-type=delivery-status", b"")
    return report.replace(b"--dsn--\r\n", b"")


def plain_text_bounce(receipt: bytes) -> bytes:
    """Exchange-style: no report at all, the receipt's subject quoted, its headers in the text."""
    subject = next(line for line in _headers(receipt).split(b"\r\n") if line.startswith(b"Subject:"))
    return b"\r\n".join(
        [
            f"From: {DAEMON}".encode(),
            b"To: kontakt@service.example",
            b"Subject: Undeliverable: " + subject.removeprefix(b"Subject: "),
            b"Content-Type: text/plain; charset=utf-8",
            b"",
            b"Delivery has failed to these recipients or groups:",
            KARI.encode(),
            b"",
            b"Original message headers:",
            _headers(receipt),
        ]
    )


FAILURES: dict[str, Callable[[bytes], bytes]] = {
    "message-rfc822": full_message,
    "text-rfc822-headers": returned_headers,
    "broken-report": broken_report,
    "plain-text-bounce": plain_text_bounce,
}
NOT_FAILURES: dict[str, Callable[[bytes], bytes]] = {
    "delayed": lambda receipt: _report("message/rfc822", receipt, "delayed", "4.4.7"),
    "delivered": lambda receipt: _report("text/rfc822-headers", _headers(receipt), "delivered", "2.0.0"),
}


def _sent_receipt(server: Server, relay: RecordingRelay) -> tuple[bytes, str]:
    """Kari writes in; the receipt goes out through the relay; its raw bytes and Message-ID."""
    assert smtp_send(server.listener.address[1], mail())[0] == 250
    received = wait_for(lambda: relay.to(KARI), what="the receipt at the relay")[0]
    store = server.runtime.store
    wait_for(lambda: store.one("SELECT status FROM outbox")["status"] == "sent", what="receipt marked sent")
    return received.raw, received.message["Message-ID"]


def _state(server: Server) -> dict[str, int]:
    return dict(
        server.runtime.store.one(
            "SELECT (SELECT count(*) FROM cases) AS cases, (SELECT count(*) FROM outbox) AS outbox,"
            " (SELECT count(*) FROM messages WHERE direction = 'in') AS inbound"
        )
    )


@pytest.mark.parametrize("shape", sorted(FAILURES))
def test_bounce_marks_the_receipt_failed(shape: str, server: Server, relay: RecordingRelay) -> None:
    """A bounce naming the receipt's Message-ID marks that outbox row failed; no case, no new mail."""
    receipt, message_id = _sent_receipt(server, relay)
    before = _state(server)
    code, text = smtp_send(server.listener.address[1], FAILURES[shape](receipt), mail_from="")
    assert (code, text) == (250, b"2.0.0 Stored as ignored")
    row = server.runtime.store.one(
        "SELECT status, last_error FROM outbox WHERE message_id = ?", (message_id,)
    )
    assert row["status"] == "failed" and row["last_error"].startswith("bounced: ")
    assert _state(server) == before | {"inbound": before["inbound"] + 1}
    history = server.runtime.store.one("SELECT detail FROM events WHERE action = 'delivery-failed'")
    assert history == {"detail": message_id}


@pytest.mark.parametrize("shape", sorted(NOT_FAILURES))
def test_delay_or_success_report_leaves_the_receipt_sent(
    shape: str, server: Server, relay: RecordingRelay
) -> None:
    """A report that delivery is delayed or done is stored and ignored, and the receipt stays sent."""
    receipt, message_id = _sent_receipt(server, relay)
    before = _state(server)
    code, text = smtp_send(server.listener.address[1], NOT_FAILURES[shape](receipt), mail_from="")
    assert (code, text) == (250, b"2.0.0 Stored as ignored")
    row = server.runtime.store.one("SELECT status FROM outbox WHERE message_id = ?", (message_id,))
    assert row["status"] == "sent"
    assert _state(server) == before | {"inbound": before["inbound"] + 1}


def test_bounce_for_mail_we_never_sent_changes_nothing(runtime: Runtime) -> None:
    """A bounce naming a Message-ID that is not ours is stored and ignored; nothing else happens."""
    stranger = mail(message_id="<not-ours@elsewhere.example>")
    result = process(runtime, full_message(stranger), "smtp", envelope_from="")
    assert result.outcome == "ignored"
    counts = runtime.store.one(
        "SELECT (SELECT count(*) FROM cases) AS cases, (SELECT count(*) FROM outbox) AS outbox,"
        " (SELECT count(*) FROM events) AS events"
    )
    assert counts == {"cases": 0, "outbox": 0, "events": 0}


CORPUS_REPORTS = sorted(name for name in REPORTS if (CORPUS / name).is_file())


@pytest.mark.skipif(not CORPUS_REPORTS, reason="../shared/corpus is not checked out")
@pytest.mark.parametrize("name", CORPUS_REPORTS or ["(no corpus)"])
def test_corpus_report_from_a_contact_gets_no_case_and_no_reply(name: str, runtime: Runtime) -> None:
    """A malformed corpus report, even re-sent From a registered contact, opens nothing and gets no answer."""
    raw = (CORPUS / name).read_bytes().removeprefix(b"\xef\xbb\xbf")
    header, gap, body = raw.partition(b"\n\n")
    kept = [line for line in header.split(b"\n") if not line.lower().startswith(b"from:")]
    forged = b"\n".join([f"From: Kari Nordmann <{KARI}>".encode(), *kept]) + gap + body
    result = process(runtime, forged, "pipe")
    assert result.outcome == "ignored", result
    counts = runtime.store.one(
        "SELECT (SELECT count(*) FROM cases) AS cases, (SELECT count(*) FROM outbox) AS outbox"
    )
    assert counts == {"cases": 0, "outbox": 0}
