"""The crash matrix: `gateway serve` killed (-9) at each step of taking and sending mail, then restarted.

After every kill and restart: each message that got 250 is stored exactly once, a message that did
not is absent or stored once (its sender's retry is a duplicate), and each receipt reaches the relay
at most twice, every copy with the same Message-ID. The kill after accept is in test_failures.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.core.config import load_config
from gateway.core.crashpoints import KILLED
from tests.faults import (
    GatedRelay,
    Serve,
    all_sent,
    copies,
    inbound,
    outbox_status,
    read_db,
    receipts_by_customer,
    send,
    with_imap,
)
from tests.imapserver import dovecot_available, running_dovecot
from tests.support import REPO, free_port, mail, wait_for, write_config

KARI = "kari.nordmann@nordby-skole.example"
OLA = "ola.bakken@fjellvik.kommune.example"
SIRI = "siri.lie@fjellvik.kommune.example"


@pytest.fixture
def gated() -> Iterator[GatedRelay]:
    relay = GatedRelay().start()
    yield relay
    relay.stop()


@pytest.fixture
def setup(tmp_path: Path, gated: GatedRelay) -> tuple[Path, int, Path]:
    """(config path, SMTP port, database) for a gateway whose relay is `gated`."""
    port = free_port()
    path = write_config(tmp_path, relay_port=gated.port, smtp_port=port)
    return path, port, load_config(path).storage.database


def accept(port: int, raw: bytes) -> None:
    answer = send(port, raw)
    assert answer is not None and answer.startswith("250 "), answer


def assert_promises(db: Path, relay: GatedRelay, accepted: list[str], unanswered: list[str]) -> None:
    """What must hold after any crash and restart, once the outbox has drained."""
    stored = inbound(db)
    assert all(stored[mid] == 1 for mid in accepted), stored
    assert all(stored[mid] <= 1 for mid in unanswered), stored
    assert all(n <= 2 for n in copies(relay).values()), copies(relay)
    for customer, ids in receipts_by_customer(relay).items():
        assert len(set(ids)) == 1, f"{customer} got receipts with different Message-IDs: {ids}"
    assert set(outbox_status(db).values()) == {"sent"}


def test_kill_after_commit_before_250_then_the_retry_is_a_duplicate(
    tmp_path: Path, gated: GatedRelay, setup: tuple[Path, int, Path]
) -> None:
    """A gateway killed between its commit and the 250 keeps the message once; the sender's retry is a duplicate."""
    path, port, db = setup
    raw = mail(message_id="<after-commit@nordby-skole.example>")
    crashing = Serve(path, tmp_path / "serve.log", GATEWAY_TEST_CRASH_AT="after-commit").start()
    assert send(port, raw) is None  # the connection died before any answer
    # The intake worker process commits; it takes its serve down with SIGKILL (gateway/crashpoints.py).
    assert crashing.wait() == KILLED
    assert inbound(db) == {"<after-commit@nordby-skole.example>": 1}

    serve = Serve(path, tmp_path / "serve.log").start()
    try:
        assert send(port, raw) == "250 2.0.0 Stored as duplicate"  # the sender's MTA tries again
        wait_for(lambda: all_sent(db), timeout=30, what="the receipt and agent notice sent")
    finally:
        assert serve.stop() == 0
    assert read_db(db, "SELECT disposition FROM messages") == [("case",)]
    assert_promises(db, gated, [], ["<after-commit@nordby-skole.example>"])
    assert len(receipts_by_customer(gated)[KARI]) == 1


def test_pipe_killed_after_commit_then_the_retry_is_a_duplicate(
    tmp_path: Path, setup: tuple[Path, int, Path]
) -> None:
    """`gateway deliver` killed after its commit (the MTA sees no exit 0) stores once; the MTA's retry says duplicate."""
    path, _, db = setup
    raw = mail(message_id="<pipe-crash@nordby-skole.example>")

    def deliver(**env: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, "-m", "gateway", "--config", str(path), "deliver"],
            input=raw,
            capture_output=True,
            timeout=60,
            cwd=REPO,
            env={**os.environ, **env},
        )

    assert deliver(GATEWAY_TEST_CRASH_AT="after-commit").returncode == KILLED
    again = deliver()
    assert again.returncode == 0, again.stderr
    assert b'"outcome": "duplicate"' in again.stdout
    assert inbound(db) == {"<pipe-crash@nordby-skole.example>": 1}


def test_kill_while_the_relay_holds_data_sends_only_the_held_mail_twice(
    tmp_path: Path, gated: GatedRelay, setup: tuple[Path, int, Path]
) -> None:
    """Killed while the relay holds a DATA, the mails the relay took before it are not sent again: each 250 was recorded at once."""
    path, port, db = setup
    messages = {
        KARI: mail(message_id="<m1@nordby-skole.example>"),
        OLA: mail(sender=f"Ola <{OLA}>", subject="Skriveren virker ikke", message_id="<m2@fjellvik>"),
        SIRI: mail(sender=f"Siri <{SIRI}>", subject="Ingen nett på rådhuset", message_id="<m3@fjellvik>"),
    }
    gated.hold_data(1)  # Kari's receipt: the outbox waits on it while the others arrive
    serve = Serve(path, tmp_path / "serve.log").start()
    try:
        accept(port, messages[KARI])
        wait_for(gated.holding.is_set, what="the relay holding the first DATA")
        accept(port, messages[OLA])
        accept(port, messages[SIRI])
        held = gated.holding
        gated.hold_data(4)  # lets DATA 1 go; 2 and 3 pass; the 4th waits
        wait_for(lambda: gated.holding.is_set() and held.is_set(), what="the relay holding DATA 4")
        before = outbox_status(db)
    finally:
        serve.kill()
    relayed = set(copies(gated))
    assert len(relayed) == 3, (before, relayed)
    gated.hold_data(0)

    serve = Serve(path, tmp_path / "serve.log").start()
    try:
        wait_for(lambda: all_sent(db), timeout=30, what="every queued mail sent after the restart")
    finally:
        assert serve.stop() == 0
    assert_promises(db, gated, ["<m1@nordby-skole.example>", "<m2@fjellvik>", "<m3@fjellvik>"], [])
    sent = copies(gated)
    # Before, 250s not yet recorded in a batch went twice; now only the mail in flight could.
    assert set(sent) == set(before) and all(sent[mid] == 1 for mid in relayed), sent
    assert set(receipts_by_customer(gated)) == {KARI, OLA, SIRI}


def test_kill_after_the_relay_250_before_the_row_is_marked_sent(
    tmp_path: Path, gated: GatedRelay, setup: tuple[Path, int, Path]
) -> None:
    """A gateway that dies right after the relay's 250 sends that receipt once more after restart, same Message-ID."""
    path, port, db = setup
    gated.hold_data(1)  # the 250 to our client first; then the relay answers and we die
    crashing = Serve(path, tmp_path / "serve.log", GATEWAY_TEST_CRASH_AT="after-relay-250").start()
    try:
        accept(port, mail(message_id="<relay-250@nordby-skole.example>"))
        wait_for(gated.holding.is_set, what="the outbox sending the receipt")
        gated.hold_data(0)
        # The sender child takes its serve down with SIGKILL (gateway/crashpoints.py).
        assert crashing.wait() == KILLED
    finally:
        crashing.kill()
    (receipt,) = copies(gated)
    assert outbox_status(db)[receipt] == "queued"

    serve = Serve(path, tmp_path / "serve.log").start()
    try:
        wait_for(lambda: all_sent(db), timeout=30, what="the outbox drained after the restart")
    finally:
        assert serve.stop() == 0
    assert_promises(db, gated, ["<relay-250@nordby-skole.example>"], [])
    assert receipts_by_customer(gated)[KARI] == [receipt, receipt]


@pytest.mark.skipif(not dovecot_available(), reason="Dovecot 2.3 is not installed (tests/imapserver.py)")
def test_kill_between_imap_commit_and_move_under_serve(
    tmp_path: Path, gated: GatedRelay, setup: tuple[Path, int, Path]
) -> None:
    """`gateway serve` killed between an IMAP message's commit and its move files both messages once after restart."""
    path, _, db = setup
    with running_dovecot(tmp_path / "dovecot") as dovecot:
        with_imap(path, dovecot.host, dovecot.port, dovecot.username, dovecot.password)
        dovecot.append("INBOX", mail(message_id="<imap1@nordby-skole.example>"))
        dovecot.append("INBOX", mail(sender=f"Ola <{OLA}>", message_id="<imap2@fjellvik>"))
        # SIGKILL right after the first commit, which holds exactly the first message.
        crashing = Serve(path, tmp_path / "serve.log", GATEWAY_TEST_CRASH_AT="after-commit")
        assert crashing.start(wait_listening=False).wait() == KILLED
        assert inbound(db) == {"<imap1@nordby-skole.example>": 1}
        assert len(dovecot.folder_uids("INBOX")) == 2  # committed, not moved

        serve = Serve(path, tmp_path / "serve.log").start()
        try:
            wait_for(lambda: dovecot.folder_uids("INBOX") == [], timeout=30, what="both messages moved")
            wait_for(lambda: len(outbox_status(db)) == 4 and all_sent(db), timeout=30, what="outbox drained")
        finally:
            assert serve.stop() == 0
    assert_promises(db, gated, ["<imap1@nordby-skole.example>", "<imap2@fjellvik>"], [])
    assert {c: len(ids) for c, ids in receipts_by_customer(gated).items()} == {KARI: 1, OLA: 1}
