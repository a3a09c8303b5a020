"""Reply headers thread only for those who may write to the case; answers copy only its organisation's contacts."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import dkim
import pytest

from gateway.core.config import load_config
from gateway.ops.server import Server
from tests.support import RecordingRelay, dkim_keypair, mail, smtp_send, wait_for, write_trusting_config

KARI = "Kari Nordmann <kari.nordmann@nordby-skole.example>"
MONA = "Mona Sørensen <mona@service.example>"


@pytest.fixture(scope="module")
def key() -> tuple[bytes, bytes]:
    return dkim_keypair()


@pytest.fixture
def serve(tmp_path: Path, relay: RecordingRelay, key: tuple[bytes, bytes]) -> Iterator[Server]:
    path = write_trusting_config(tmp_path, relay.port, {"gw._domainkey.service.example": key[1]})
    srv = Server(load_config(path))
    srv.start()
    yield srv
    srv.stop()


def stored(serve: Server, message_id: str) -> tuple[int | None, str]:
    """(case, disposition) of an inbound message once serve's worker has stored it."""

    def row() -> tuple[int | None, str] | None:
        with sqlite3.connect(serve.runtime.config.storage.database) as conn:
            return conn.execute(  # type: ignore[no-any-return]
                "SELECT case_id, disposition FROM messages WHERE message_id = ?", (message_id,)
            ).fetchone()

    return wait_for(row, what=f"{message_id} stored")  # type: ignore[no-any-return]


def send(
    serve: Server, sender: str, message_id: str, headers: dict[str, str], subject: str = "SV: Skriver"
) -> None:
    raw = mail(sender=sender, subject=subject, body="Se under.\n", message_id=message_id, headers=headers)
    assert smtp_send(serve.listener.address[1], raw)[0] == 250


def test_only_those_who_may_write_thread_by_reply_headers(
    serve: Server, relay: RecordingRelay, key: tuple[bytes, bytes]
) -> None:
    """A stranger or another organisation naming the customer's Message-ID does not join, reopen or get copied."""
    first = "<q1@nordby-skole.example>"
    send(
        serve,
        KARI,
        first,
        {"Cc": "per.hansen@nordby-skole.example, venn@gmail.example"},
        "Skriveren er borte",
    )
    case, _ = stored(serve, first)
    assert case is not None
    reply = {"In-Reply-To": first, "References": first, "Cc": "angriper@evil.example"}
    send(serve, "Ukjent <x@evil.example>", "<s1@evil.example>", reply)
    assert stored(serve, "<s1@evil.example>") == (None, "held")
    send(serve, "Ola Bakken <ola.bakken@fjellvik.kommune.example>", "<o1@fjellvik.kommune.example>", reply)
    other, _ = stored(serve, "<o1@fjellvik.kommune.example>")
    assert other not in (None, case)  # another organisation's contact opens its own case
    send(
        serve,
        "Per Hansen <per.hansen@nordby-skole.example>",
        "<p1@nordby-skole.example>",
        {"In-Reply-To": first},
    )
    assert stored(serve, "<p1@nordby-skole.example>") == (case, "case")  # the control: a contact joins

    notice = wait_for(
        lambda: [r for r in relay.to("mona@service.example") if f"[SSC#{case}]" in str(r.message["Subject"])],
        what="notice to mona",
    )[0].message
    answer = mail(
        sender=MONA,
        to=notice["Reply-To"].addresses[0].addr_spec,
        subject=f"SV: {notice['Subject']}",
        body="Hei!\n\nSkriveren er tilbake.\n\nMona\n",
        headers={"In-Reply-To": notice["Message-ID"]},
    )
    signed = dkim.sign(
        answer, b"gw", b"service.example", key[0], include_headers=[b"from", b"to", b"subject"]
    )
    assert smtp_send(serve.listener.address[1], signed + answer)[0] == 250
    got = wait_for(
        lambda: [r for r in relay.received if "Skriveren er tilbake" in r.body], what="the answer"
    )[0]
    assert sorted(got.rcpt_tos) == ["kari.nordmann@nordby-skole.example", "per.hansen@nordby-skole.example"]
    assert str(got.message["Cc"]) == "per.hansen@nordby-skole.example"
