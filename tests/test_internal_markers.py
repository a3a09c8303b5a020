"""Internal markers written carelessly keep an agent's mail internal; #eskaler text goes to 2nd line only."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import dkim
import pytest

from gateway.core.config import load_config
from gateway.ops.server import Server
from tests.support import RecordingRelay, dkim_keypair, mail, smtp_send, wait_for, write_trusting_config

KARI = "kari.nordmann@nordby-skole.example"
MONA = "Mona Sørensen <mona@service.example>"
MARKERS = [
    "# intern",
    "＃intern",
    "\u200b#intern",
    "Intern: ring kunden i morgen",
    "#\u00a0INTERN",
    "#eskaler",
]


@pytest.fixture(scope="module")
def key() -> tuple[bytes, bytes]:
    return dkim_keypair()


@pytest.fixture
def serve(tmp_path: Path, relay: RecordingRelay, key: tuple[bytes, bytes]) -> Iterator[Server]:
    srv = Server(
        load_config(write_trusting_config(tmp_path, relay.port, {"gw._domainkey.service.example": key[1]}))
    )
    srv.start()
    yield srv
    srv.stop()


def open_case(srv: Server, relay: RecordingRelay, subject: str) -> tuple[int, str]:
    """A customer's case and the Reply-To of Mona's notice for it."""
    mid = f"<{uuid.uuid4().hex}@nordby-skole.example>"
    assert smtp_send(srv.listener.address[1], mail(subject=subject, message_id=mid))[0] == 250

    def case() -> int | None:
        with sqlite3.connect(srv.runtime.config.storage.database) as conn:
            row = conn.execute("SELECT case_id FROM messages WHERE message_id = ?", (mid,)).fetchone()
        return row[0] if row else None

    case_id = wait_for(case, what="the case")
    notice = wait_for(
        lambda: [
            r for r in relay.to("mona@service.example") if f"[SSC#{case_id}]" in str(r.message["Subject"])
        ],
        what="notice to mona",
    )[0].message
    return case_id, notice["Reply-To"].addresses[0].addr_spec


@pytest.mark.parametrize("marker", MARKERS)
def test_careless_internal_markers_never_reach_the_customer(
    serve: Server, relay: RecordingRelay, key: tuple[bytes, bytes], marker: str
) -> None:
    """Whatever the marker's spelling, the agent's text reaches no one outside the centre."""
    case_id, reply_to = open_case(serve, relay, "Treg linje i 2. etasje")
    secret = f"HEMMELIG-{uuid.uuid4().hex[:10]}"
    raw = mail(
        sender=MONA, to=reply_to, subject=f"SV: [SSC#{case_id}] Treg linje", body=f"{marker}\n\n{secret}\n"
    )
    signed = (
        dkim.sign(raw, b"gw", b"service.example", key[0], include_headers=[b"from", b"to", b"subject"]) + raw
    )
    assert smtp_send(serve.listener.address[1], signed)[0] == 250
    wait_for(
        lambda: serve.runtime.store.query(
            "SELECT 1 FROM events WHERE case_id = ? AND action IN ('internal-note', 'agent-answer')",
            (case_id,),
        ),
        what="the agent's mail on the case",
    )
    leaked = serve.runtime.store.query(
        "SELECT recipients FROM outbox WHERE instr(CAST(raw AS TEXT), ?) > 0", (secret,)
    )
    assert all("service.example" in row["recipients"] and KARI not in row["recipients"] for row in leaked)
    assert KARI not in str(leaked)
    if marker == "#eskaler":  # the text goes to 2nd line, in the escalation
        assert any("andrelinje@service.example" in row["recipients"] for row in leaked), leaked
