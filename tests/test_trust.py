"""Trust only what was proven: forged verdicts, replayed signatures and loose alignment, at the real intake."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dkim
import pytest

from gateway.core.config import load_config
from gateway.mail.auth import aligned
from gateway.ops.server import Server
from tests.support import RecordingRelay, dkim_keypair, mail, smtp_send, wait_for, write_trusting_config

KARI = "Kari Nordmann <kari.nordmann@nordby-skole.example>"
ORDER = "Bestilling: VLAN 40 på port 7"
OURS = "mx.service.example"
SIGNED = [b"from", b"to", b"subject", b"message-id", b"date"]


@pytest.fixture(scope="module")
def key() -> tuple[bytes, bytes]:
    return dkim_keypair()


@pytest.fixture
def config_path(tmp_path: Path, relay: RecordingRelay, key: tuple[bytes, bytes]) -> Path:
    keys = {"sel1._domainkey.nordby-skole.example": key[1], "s._domainkey.example": key[1]}
    return write_trusting_config(tmp_path, relay.port, keys)


@pytest.fixture
def serve(config_path: Path) -> Iterator[Server]:
    """`gateway serve` with its intake pipeline in a worker process (the default)."""
    srv = Server(load_config(config_path))
    assert srv.runtime.config.smtp.intake_process
    srv.start()
    yield srv
    srv.stop()


def sign(raw: bytes, key: bytes, domain: bytes = b"nordby-skole.example", **options: object) -> bytes:
    selector = b"s" if domain == b"example" else b"sel1"
    return dkim.sign(raw, selector, domain, key, include_headers=SIGNED, **options) + raw  # type: ignore[arg-type]


def deliver(config_path: Path, raw: bytes) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "--config", str(config_path), "deliver"],
        input=raw,
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def changes(config_path: Path) -> list[str]:
    with sqlite3.connect(load_config(config_path).storage.database) as conn:
        return [row[0] for row in conn.execute("SELECT subject FROM cases WHERE category = 'change'")]


def outcome_over_smtp(serve: Server, raw: bytes) -> dict[str, str]:
    """Send through serve's listener and wait until the worker has stored the message."""
    message_id = raw.split(b"Message-ID: ", 1)[1].split(b"\r\n", 1)[0].decode()
    code, _ = smtp_send(serve.listener.address[1], raw)
    assert code == 250
    db = serve.runtime.config.storage.database

    def stored() -> dict[str, str] | None:
        with sqlite3.connect(db) as conn:
            row = conn.execute(
                "SELECT disposition, reason FROM messages WHERE message_id = ?", (message_id,)
            ).fetchone()
        return {"disposition": row[0], "reason": row[1]} if row else None

    return wait_for(stored, what=f"{message_id} stored")  # type: ignore[no-any-return]


def with_results(raw: bytes, *values: str) -> bytes:
    return b"".join(f"Authentication-Results: {v}\r\n".encode() for v in values) + raw


DMARC_PASS = f"{OURS}; dmarc=pass header.from=nordby-skole.example"


@pytest.mark.parametrize(
    ("results", "trusted"),
    [
        ([DMARC_PASS], True),  # the control: our MTA's verdict on top is trusted
        ([f"{OURS}; spf=none smtp.helo=[192.0.2.1]", DMARC_PASS], False),  # ours unreadable on top
        ([DMARC_PASS, f"{OURS}; spf=none smtp.helo=[192.0.2.1]"], False),  # a second claim below
        ([f"{OURS}; spf=none smtp.helo=[192.0.2.1]"], False),  # only an unreadable one
        (["other.example; dkim=none", DMARC_PASS], False),  # not ours on top: a forged one below
    ],
)
def test_pipe_trusts_only_our_topmost_readable_authentication_results(
    config_path: Path, results: list[str], trusted: bool
) -> None:
    """Through `gateway deliver`, an order counts as proven only by one readable verdict of ours on top."""
    answer = deliver(
        config_path, with_results(mail(sender=KARI, subject=ORDER, body="Port 7 til VLAN 40."), *results)
    )
    if trusted:
        assert (answer["outcome"], changes(config_path)) == ("opened", [ORDER])
    else:
        assert answer["outcome"] == "held" and "awaiting confirmation" in str(answer["reason"])
        assert changes(config_path) == []


def test_serve_worker_opens_a_genuinely_signed_order(serve: Server, key: tuple[bytes, bytes]) -> None:
    """The keys file reaches serve's worker process: a genuine signature by the From domain is proof."""
    raw = sign(mail(sender=KARI, subject=ORDER, body="Port 7 til VLAN 40, takk."), key[0])
    assert outcome_over_smtp(serve, raw)["disposition"] == "case"
    assert changes(serve.runtime.config.source) == [ORDER]  # type: ignore[arg-type]


def test_serve_refuses_a_replayed_signature_with_a_subject_on_top(
    serve: Server, key: tuple[bytes, bytes]
) -> None:
    """A Subject added above a genuinely signed mail is not covered: the order waits for a code."""
    genuine = sign(mail(sender=KARI, subject="Ukesrapport", body="Alt i orden denne uka."), key[0])
    replayed = "Subject: Bestilling: åpne port 3389 i brannmuren\r\n".encode() + genuine
    stored = outcome_over_smtp(serve, replayed)
    assert stored["disposition"] == "awaiting-confirmation" and "more than one subject" in stored["reason"]
    assert changes(serve.runtime.config.source) == []  # type: ignore[arg-type]


def test_serve_refuses_text_appended_beyond_the_signed_length(
    serve: Server, key: tuple[bytes, bytes]
) -> None:
    """A signature with l= covers only that much body: appended text makes the mail unproven."""
    raw = mail(sender=KARI, subject=ORDER, body="Port 7 til VLAN 40.\n")
    signed = sign(raw, key[0], length=True) + "Og åpne port 3389 også.\r\n".encode()
    stored = outcome_over_smtp(serve, signed)
    assert stored["disposition"] == "awaiting-confirmation" and "beyond l=" in stored["reason"]
    assert changes(serve.runtime.config.source) == []  # type: ignore[arg-type]


def test_serve_does_not_align_a_public_suffix_signer(serve: Server, key: tuple[bytes, bytes]) -> None:
    """A valid signature by d=example is not proof for nordby-skole.example (organisational domains differ)."""
    raw = sign(mail(sender=KARI, subject=ORDER, body="Port 7 til VLAN 40."), key[0], domain=b"example")
    stored = outcome_over_smtp(serve, raw)
    assert stored["disposition"] == "awaiting-confirmation" and "not aligned" in stored["reason"]
    assert changes(serve.runtime.config.source) == []  # type: ignore[arg-type]


def test_alignment_is_by_organisational_domain() -> None:
    """Relaxed alignment means the same organisational domain from the public suffix list, nothing looser."""
    assert aligned("mail.nordby-skole.example", "nordby-skole.example")
    assert aligned("nordby-skole.example", "it.nordby-skole.example")
    assert not aligned("example", "nordby-skole.example")
    assert not aligned("kommune.no", "fjellvik.kommune.no")
    assert aligned("mx.fjellvik.kommune.no", "fjellvik.kommune.no")
    assert not aligned("co.uk", "college.co.uk")


@pytest.mark.parametrize("second", ["Kari Nordmann <kari.nordmann@nordby-skole.example>", "<<<@@", ""])
def test_pipe_holds_a_mail_with_two_from_headers(config_path: Path, second: str) -> None:
    """Two From headers are held as several-from-headers, even when the second does not parse."""
    raw = mail(sender=KARI, subject="Nettet er nede", body="Rom 204 har ikke nett.")
    answer = deliver(config_path, raw.replace(b"\r\nTo: ", f"\r\nFrom: {second}\r\nTo: ".encode(), 1))
    assert answer["outcome"] == "held" and "several-from" in str(answer["reason"]), answer
