"""Confirmation codes have their own hourly budget: forged mail that used up the receipts cannot silence the owner."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.core.config import load_config
from gateway.ops.server import Server
from tests.support import RecordingRelay, mail, smtp_send, wait_for, write_config

KARI = "Kari Nordmann <kari.nordmann@nordby-skole.example>"
KARI_ADDR = "kari.nordmann@nordby-skole.example"


@pytest.fixture
def serve(tmp_path: Path, relay: RecordingRelay) -> Iterator[Server]:
    path = write_config(tmp_path, relay_port=relay.port, confirmation_limit_per_hour="2")
    srv = Server(load_config(path))
    srv.start()
    yield srv
    srv.stop()


def send(srv: Server, subject: str, body: str) -> tuple[str, str]:
    """Over SMTP, unsigned; (disposition, reason) once the worker stored it."""
    mid = f"<{uuid.uuid4().hex}@forged.example>"
    assert (
        smtp_send(srv.listener.address[1], mail(sender=KARI, subject=subject, body=body, message_id=mid))[0]
        == 250
    )

    def row() -> tuple[str, str] | None:
        with sqlite3.connect(srv.runtime.config.storage.database) as conn:
            return conn.execute(  # type: ignore[no-any-return]
                "SELECT disposition, reason FROM messages WHERE message_id = ?", (mid,)
            ).fetchone()

    return wait_for(row, what=f"{mid} stored")  # type: ignore[no-any-return]


def tokens(srv: Server) -> list[str]:
    with sqlite3.connect(srv.runtime.config.storage.database) as conn:
        return [r[0] for r in conn.execute("SELECT token FROM confirmations ORDER BY created_at")]


def test_forged_mail_cannot_use_up_the_owners_confirmation(serve: Server, relay: RecordingRelay) -> None:
    """Five forged mails exhaust the receipts; the real order's code is still sent; codes have a brake of their own."""
    for n in range(6):  # one past service.receipt_limit_per_hour (5)
        send(serve, f"Passordet ditt utløper {n}", "Logg inn her for å beholde kontoen.")
    with sqlite3.connect(serve.runtime.config.storage.database) as conn:
        suppressed = conn.execute("SELECT count(*) FROM events WHERE action = 'reply-suppressed'").fetchone()[
            0
        ]
    assert suppressed >= 1  # the receipts' brake did trip
    disposition, _ = send(serve, "Bestilling: VLAN 40 på port 7", "Kan dere flytte port 7 til VLAN 40?")
    assert disposition == "awaiting-confirmation"
    (token,) = tokens(serve)
    wait_for(lambda: [r for r in relay.to(KARI_ADDR) if token in r.body], what="the code reaching Kari")
    send(serve, "Bestilling: VLAN 41 på port 8", "Kan dere flytte port 8 til VLAN 41?")
    assert len(tokens(serve)) == 2
    _, reason = send(serve, "Bestilling: VLAN 42 på port 9", "Kan dere flytte port 9 til VLAN 42?")
    assert "no code sent" in reason
    assert len(tokens(serve)) == 2  # service.confirmation_limit_per_hour = 2
