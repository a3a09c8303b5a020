"""NAV alerts count only when proven: DKIM, our MTA's verdict, or the dedicated intake; never a From alone."""

from __future__ import annotations

import itertools
import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dkim
import pytest

from gateway.core.config import load_config
from gateway.ops.server import Server
from tests.support import RecordingRelay, dkim_keypair, mail, smtp_send, wait_for, write_trusting_config

NAV = "nav@noc.service.example"
INTAKE = "nav-varsel@service.example"
_ids = itertools.count(1)
SENDERS = f'[monitoring]\nsenders = ["{NAV}"]\n'


@pytest.fixture(scope="module")
def key() -> tuple[bytes, bytes]:
    return dkim_keypair()


def alert(state: str, history: int, sender: str = NAV, subject: str = "Box sw-nordby-1 is down") -> bytes:
    headers = {
        "X-NAV-Alert-State": state,
        "X-NAV-Alert-Netbox": "sw-nordby-1",
        "X-NAV-Alert-History-ID": str(history),
        "X-NAV-Event-Type": "boxState",
    }
    mid = f"<{next(_ids)}.{state}.{history}@noc.service.example>"
    return mail(
        sender=sender, subject=subject, body="Box sw-nordby-1 (10.0.0.1).\n", message_id=mid, headers=headers
    )


def signed(raw: bytes, key: bytes) -> bytes:
    return dkim.sign(raw, b"nav", b"noc.service.example", key, include_headers=[b"from", b"subject"]) + raw


def serve_with(tmp: Path, relay: RecordingRelay, key: tuple[bytes, bytes], sections: str) -> Server:
    path = write_trusting_config(tmp, relay.port, {"nav._domainkey.noc.service.example": key[1]}, sections)
    srv = Server(load_config(path))
    srv.start()
    return srv


@pytest.fixture
def serve(tmp_path: Path, relay: RecordingRelay, key: tuple[bytes, bytes]) -> Iterator[Server]:
    intake = f'recipient = "{INTAKE}"\nclient_addresses = ["127.0.0.1"]\n'
    srv = serve_with(tmp_path, relay, key, SENDERS + intake)
    yield srv
    srv.stop()


def stored(srv: Server, raw: bytes, rcpt: str = "kontakt@service.example") -> tuple[int | None, str]:
    """Send over SMTP; (case, disposition) once the worker stored it."""
    assert smtp_send(srv.listener.address[1], raw, mail_from=NAV, rcpt=rcpt)[0] == 250
    mid = raw.split(b"Message-ID: ", 1)[1].split(b"\r\n", 1)[0].decode()

    def row() -> tuple[int | None, str] | None:
        with sqlite3.connect(srv.runtime.config.storage.database) as conn:
            return conn.execute(  # type: ignore[no-any-return]
                "SELECT case_id, disposition FROM messages WHERE message_id = ?", (mid,)
            ).fetchone()

    return wait_for(row, what=f"{mid} stored")  # type: ignore[no-any-return]


def cases(srv: Server) -> list[tuple[int, str, str, str]]:
    with sqlite3.connect(srv.runtime.config.storage.database) as conn:
        return conn.execute("SELECT id, requester, status, subject FROM cases ORDER BY id").fetchall()


def test_forged_alerts_open_and_resolve_nothing(serve: Server, key: tuple[bytes, bytes]) -> None:
    """Unproven "down" and "up" mails (an outsider, or NAV's From forged) change no incident; proven ones do."""
    case, _ = stored(serve, signed(alert("start", 4711), key[0]))
    assert case is not None
    assert cases(serve) == [(case, "it@nordby-skole.example", "new", "Box sw-nordby-1 is down")]
    assert stored(serve, alert("end", 4711))[1] == "held"  # NAV's From, no signature, ordinary address
    assert (
        stored(serve, alert("start", 4712, "Ola <x@evil.example>", "Passord utløper: logg inn"))[1] == "held"
    )
    assert stored(serve, alert("start", 4713, subject="Box sw-nordby-1 is down (falsk)"))[1] == "held"
    assert [row[2] for row in cases(serve)] == ["new"]  # nothing opened, nothing resolved
    assert stored(serve, alert("end", 4711), rcpt=INTAKE)[0] == case  # the dedicated intake proves it
    assert [row[2] for row in cases(serve)] == ["resolved"]


def test_the_dedicated_intake_needs_an_allowed_client(
    tmp_path: Path, relay: RecordingRelay, key: tuple[bytes, bytes]
) -> None:
    """Sent to the monitoring recipient, but from a client address not listed: not proof."""
    srv = serve_with(
        tmp_path, relay, key, SENDERS + f'recipient = "{INTAKE}"\nclient_addresses = ["192.0.2.0/24"]\n'
    )
    try:
        assert stored(srv, alert("start", 5001), rcpt=INTAKE) == (None, "held")
        assert cases(srv) == []
    finally:
        srv.stop()


def test_without_a_monitoring_sender_nav_headers_mean_nothing(
    tmp_path: Path, relay: RecordingRelay, key: tuple[bytes, bytes]
) -> None:
    """No monitoring.senders: a signed mail with NAV headers and our MTA's pass opens no incident."""
    path = write_trusting_config(tmp_path, relay.port, {"nav._domainkey.noc.service.example": key[1]})
    verdict = b"Authentication-Results: mx.service.example; dkim=pass header.d=noc.service.example\r\n"
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "--config", str(path), "deliver"],
        input=verdict + signed(alert("start", 6001), key[0]),
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["outcome"] == "held"
    with sqlite3.connect(load_config(path).storage.database) as conn:
        assert conn.execute("SELECT count(*) FROM cases").fetchone() == (0,)
