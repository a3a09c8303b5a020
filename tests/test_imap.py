"""IMAP intake against a real private Dovecot: drain, IDLE, crashes, restarts, locks and dry runs."""

from __future__ import annotations

import io
import json
import logging
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import gateway.intake.imap_drain
import gateway.pipeline.steps
from gateway.core.config import Config, load_config
from gateway.flow.context import Result
from gateway.intake.imap import FetchWorker, fetch_once
from gateway.intake.imap_mailbox import Mailbox, mailbox_name
from gateway.intake.mailbox_lock import MailboxLock
from gateway.ops.server import Server
from gateway.pipeline.process import Item
from gateway.store.database import Store, open_store
from tests.imapserver import Dovecot, dovecot_available, running_dovecot
from tests.support import REPO, RecordingRelay, mail, wait_for

pytestmark = pytest.mark.skipif(
    not dovecot_available(),
    reason="Dovecot 2.3 is not installed (run .ci/install-dovecot as root to install it)",
)

KARI = "kari.nordmann@nordby-skole.example"
OLA = "ola.bakken@fjellvik.kommune.example"
SIRI = "siri.lie@fjellvik.kommune.example"
STRANGER = "m@evil.example"


@pytest.fixture
def dovecot(tmp_path: Path) -> Iterator[Dovecot]:
    with running_dovecot(tmp_path / "dovecot") as server:
        yield server


def with_imap(config_path: Path, server: Dovecot, storage: str = "", **imap: Any) -> Config:
    """Point the test config at the private Dovecot (plain IMAP on loopback) and load it."""
    values: dict[str, Any] = {
        "host": server.host,
        "port": server.port,
        "ssl": "none",
        "username": server.username,
        "password": server.password,
        "timeout": 10.0,
        **imap,
    }
    text = config_path.read_text(encoding="utf-8")
    if storage:
        text = text.replace("[storage]\n", f"[storage]\n{storage}\n", 1)
    text += "\n[imap]\n" + "".join(f"{key} = {json.dumps(value)}\n" for key, value in values.items())
    config_path.write_text(text, encoding="utf-8")
    return load_config(config_path)


def backlog() -> list[bytes]:
    """Three registered contacts, a stranger and an auto-reply, as they would sit in the INBOX."""
    return [
        mail(message_id="<b1@nordby-skole.example>"),
        mail(sender=f"Ola Bakken <{OLA}>", subject="Skriveren virker ikke", message_id="<b2@fjellvik>"),
        mail(sender=f"Mallory <{STRANGER}>", subject="Hei", message_id="<b3@evil.example>"),
        mail(
            sender=f"Ola Bakken <{OLA}>",
            subject="Fravær: Skriveren virker ikke",
            message_id="<b4@fjellvik>",
            headers={"Auto-Submitted": "auto-replied"},
        ),
        mail(sender=f"Siri Lie <{SIRI}>", subject="Ingen nett på rådhuset", message_id="<b5@fjellvik>"),
    ]


def receipts(relay: RecordingRelay) -> Counter[str]:
    """Receipts at the relay per customer address (agent notifications left out)."""
    found: Counter[str] = Counter()
    for received in relay.received:
        if received.message["Auto-Submitted"] == "auto-replied":
            found.update(received.rcpt_tos)
    return found


def marks(server: Dovecot, folder: str) -> dict[int, frozenset[str]]:
    """{uid: the flags a fetch could wrongly set}; \\Recent is Dovecot's own business."""
    return {uid: flags & {"\\Seen", "\\Deleted"} for uid, flags in server.folder_flags(folder).items()}


def count(store: Store, sql: str) -> int:
    return int(store.conn.execute(sql).fetchone()[0])


def run_fetch(config_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`gateway fetch` as cron would run it, in its own process."""
    return subprocess.run(
        [sys.executable, "-m", "gateway", "--config", str(config_path), "fetch", *args],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


class TtyBuffer(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_backlog_drains_into_cases_with_receipts(
    config_path: Path, dovecot: Dovecot, relay: RecordingRelay, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mixed backlog drains in batches into cases and receipts, and the INBOX ends empty."""
    (config_path.parent / "imap.secret").write_text(dovecot.password + "\n")
    config = with_imap(config_path, dovecot, password="wrong", password_file="imap.secret", batch_size=2)
    uids = [dovecot.append("INBOX", raw) for raw in backlog()]
    terminal = TtyBuffer()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert fetch_once(config) == 0
    assert dovecot.folder_uids("INBOX") == []
    assert len(dovecot.folder_uids("Processed")) == len(uids)
    assert "\rfetched 2/5" in terminal.getvalue() and "\rfetched 5/5" in terminal.getvalue()
    store = open_store(config.storage)
    cases = store.query("SELECT requester FROM cases ORDER BY id")
    assert [c["requester"] for c in cases] == [KARI, OLA, SIRI]
    assert receipts(relay) == Counter({KARI: 1, OLA: 1, SIRI: 1})
    seen = store.query("SELECT uid, outcome FROM imap_seen ORDER BY uid")
    assert [s["outcome"] for s in seen] == ["opened", "opened", "held", "ignored", "opened"]
    assert set(marks(dovecot, "Processed").values()) == {frozenset()}


def test_mail_arriving_during_idle_is_processed_without_polling(config_path: Path, dovecot: Dovecot) -> None:
    """With IDLE a new message is taken within seconds although the poll interval is ten minutes."""
    config = with_imap(config_path, dovecot, poll_seconds=600.0)
    stored: list[Result] = []
    stop = threading.Event()
    worker = FetchWorker(config, on_stored=stored.append, stop=stop)
    worker.start()
    try:
        wait_for(worker.waiting.is_set, what="the fetcher to enter IDLE")
        dovecot.append("INBOX", mail(message_id="<idle@nordby-skole.example>"))
        wait_for(lambda: stored, timeout=10, what="the message to be processed")
        assert stored[0].outcome == "opened"
        wait_for(lambda: dovecot.folder_uids("INBOX") == [], what="the message to be moved")
        assert worker.drains == 2
    finally:
        began = time.monotonic()
        stop.set()
        worker.join(timeout=10)
    assert not worker.is_alive() and time.monotonic() - began < 3


def test_kill_between_commit_and_move_makes_no_duplicate(
    config_path: Path, dovecot: Dovecot, relay: RecordingRelay
) -> None:
    """A fetcher killed (SIGKILL) right after its first commit leaves no duplicate case or receipt."""
    with_imap(config_path, dovecot)
    for raw in backlog()[:2]:
        dovecot.append("INBOX", raw)
    crashed = run_fetch(config_path, GATEWAY_TEST_CRASH_AT="after-commit")
    assert crashed.returncode == -9, crashed.stderr
    assert len(dovecot.folder_uids("INBOX")) == 2
    store = Store(load_config(config_path).storage.database)
    assert count(store, "SELECT count(*) FROM cases") == 1
    assert count(store, "SELECT count(*) FROM imap_seen") == 0

    again = run_fetch(config_path)
    assert again.returncode == 0, again.stderr
    assert dovecot.folder_uids("INBOX") == []
    assert count(store, "SELECT count(*) FROM cases") == 2
    assert count(store, "SELECT count(*) FROM messages WHERE direction = 'in'") == 2
    outcomes = [r["outcome"] for r in store.query("SELECT outcome FROM imap_seen ORDER BY uid")]
    assert outcomes == ["duplicate", "opened"]
    assert receipts(relay) == Counter({KARI: 1, OLA: 1})


def test_server_restart_reconnects_and_continues(
    config_path: Path, dovecot: Dovecot, caplog: pytest.LogCaptureFixture
) -> None:
    """When Dovecot restarts under an idling fetcher it logs, reconnects and takes new mail."""
    config = with_imap(config_path, dovecot, poll_seconds=600.0)
    stored: list[Result] = []
    stop = threading.Event()
    worker = FetchWorker(config, on_stored=stored.append, stop=stop, retry_initial=0.1, retry_max=0.5)
    caplog.set_level(logging.INFO, logger="gateway.imap")
    worker.start()
    try:
        dovecot.append("INBOX", mail(message_id="<before@nordby-skole.example>"))
        wait_for(lambda: len(stored) == 1 and worker.waiting.is_set(), what="first message, then IDLE")
        dovecot.restart()
        dovecot.append("INBOX", mail(message_id="<after@nordby-skole.example>"))
        wait_for(lambda: len(stored) == 2, timeout=15, what="the message appended after the restart")
        assert [r.outcome for r in stored] == ["opened", "opened"]
        wait_for(lambda: dovecot.folder_uids("INBOX") == [], what="the INBOX to empty")
    finally:
        stop.set()
        worker.join(timeout=10)
    messages = [r.getMessage() for r in caplog.records]
    assert any("lost" in m and "reconnecting" in m for m in messages), messages
    assert any(m.startswith("imap: reconnected") for m in messages), messages


def test_changed_uidvalidity_makes_no_duplicates(
    config_path: Path, dovecot: Dovecot, relay: RecordingRelay
) -> None:
    """The same messages met again under a new UIDVALIDITY are recognised and filed, not reprocessed."""
    config = with_imap(config_path, dovecot)
    without_id = b"From: Kari Nordmann <" + KARI.encode() + b">\r\nSubject: Uten id\r\n\r\nHei\r\n"
    messages = [*backlog()[:2], without_id]
    for raw in messages:
        dovecot.append("INBOX", raw)
    assert fetch_once(config) == 0
    before = dovecot.uidvalidity("INBOX")
    for raw in messages:
        dovecot.append("INBOX", raw)
    assert dovecot.change_uidvalidity("INBOX") != before
    assert fetch_once(config) == 0
    store = open_store(config.storage)
    assert count(store, "SELECT count(*) FROM cases") == 3
    assert count(store, "SELECT count(*) FROM messages WHERE direction = 'in'") == 3
    again = store.query("SELECT outcome FROM imap_seen WHERE uidvalidity != ?", (before,))
    assert [r["outcome"] for r in again] == ["duplicate"] * 3
    assert dovecot.folder_uids("INBOX") == [] and len(dovecot.folder_uids("Processed")) == 6
    assert receipts(relay) == Counter({KARI: 2, OLA: 1})


def test_poison_message_is_quarantined_once_and_filed_as_failed(
    config_path: Path, dovecot: Dovecot, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A message that breaks the pipeline goes to quarantine and Failed, once; the rest flows on."""
    real_parse = gateway.pipeline.steps.parse

    def fragile_parse(raw: bytes, envelope_from: str | None = None) -> Any:
        if b"X-Poison: yes" in raw:
            raise ValueError("cannot digest this one")
        return real_parse(raw, envelope_from)

    monkeypatch.setattr(gateway.pipeline.steps, "parse", fragile_parse)
    config = with_imap(config_path, dovecot)
    poison = mail(message_id="<poison@nordby-skole.example>", headers={"X-Poison": "yes"})
    # Groups of 1, 2, 4: the poison and its copy share the second group's transaction.
    for raw in (backlog()[0], poison, poison, backlog()[1]):
        dovecot.append("INBOX", raw)
    assert fetch_once(config) == 0
    store = open_store(config.storage)
    assert count(store, "SELECT count(*) FROM quarantine WHERE source = 'imap'") == 1
    assert count(store, "SELECT count(*) FROM cases") == 2
    assert dovecot.fetch_all("Failed") == {1: poison, 2: poison}
    assert len(dovecot.folder_uids("Processed")) == 2

    dovecot.append("INBOX", poison)  # delivered again, or met again after a crash
    assert fetch_once(config) == 0
    assert count(store, "SELECT count(*) FROM quarantine") == 1
    assert list(dovecot.fetch_all("Failed").values()) == [poison] * 3
    assert dovecot.folder_uids("INBOX") == []


def test_without_move_files_by_copy_delete_and_uid_expunge(
    config_path: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A server without MOVE gets COPY, \\Deleted and UID EXPUNGE, and messages land in Processed."""
    caplog.set_level(logging.INFO, logger="gateway.imap")
    with running_dovecot(tmp_path / "nomove", move_capability=False) as server:
        config = with_imap(config_path, server)
        bystander = server.append("INBOX", mail(message_id="<other@client.example>"), flags=["\\Deleted"])
        for raw in backlog()[:2]:
            server.append("INBOX", raw)
        assert fetch_once(config) == 0
        # Only our UIDs were expunged: what another client flagged \Deleted is still there.
        assert server.folder_uids("INBOX") == [bystander]
        assert len(server.folder_uids("Processed")) == 2
    assert any(
        "no MOVE; filing with COPY, \\Deleted and UID EXPUNGE" in r.getMessage() for r in caplog.records
    )


def test_without_uidplus_copies_and_never_expunges(config_path: Path, tmp_path: Path) -> None:
    """Without UIDPLUS a filed message is copied and flagged \\Deleted but never expunged."""
    server = Dovecot(tmp_path / "nouidplus")
    # The harness only offers "no MOVE"; narrow its capability list further by hand.
    server._capability_override = "IMAP4rev1 LITERAL+ SASL-IR LOGIN-REFERRALS ID ENABLE IDLE NAMESPACE"
    with server:
        assert "UIDPLUS" not in server.capabilities() and "MOVE" not in server.capabilities()
        config = with_imap(config_path, server)
        uid = server.append("INBOX", backlog()[0])
        assert fetch_once(config) == 0
        assert server.folder_flags("INBOX") == {uid: frozenset({"\\Deleted"})}
        assert len(server.folder_uids("Processed")) == 1
        assert fetch_once(config) == 0  # the flagged message is not taken a second time
        assert len(server.folder_uids("Processed")) == 1
    assert count(open_store(config.storage), "SELECT count(*) FROM imap_seen") == 1


def test_concurrent_fetchers_process_each_message_once(
    config_path: Path, dovecot: Dovecot, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two fetches started together never both process a message: the mailbox lock serialises them."""
    config = with_imap(config_path, dovecot, batch_size=5)
    for i in range(20):
        dovecot.append("INBOX", mail(message_id=f"<c{i}@nordby-skole.example>", subject=f"Feil {i}"))
    calls: Counter[bytes] = Counter()
    real_process_batch = gateway.intake.imap_drain.process_batch

    def counting(runtime: Any, items: list[Item]) -> list[Result]:
        calls.update(item[0] for item in items)
        return real_process_batch(runtime, items)

    monkeypatch.setattr(gateway.intake.imap_drain, "process_batch", counting)
    start = threading.Barrier(2)
    codes: list[int] = []

    def fetch() -> None:
        start.wait()
        codes.append(fetch_once(config))

    threads = [threading.Thread(target=fetch) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert codes == [0, 0]
    assert len(calls) == 20 and set(calls.values()) == {1}
    assert count(open_store(config.storage), "SELECT count(*) FROM cases") == 20
    assert dovecot.folder_uids("INBOX") == []


def test_second_fetch_exits_at_once_while_one_runs(config_path: Path, dovecot: Dovecot) -> None:
    """`gateway fetch` exits 0 at once, touching nothing, while another fetch holds the mailbox."""
    config = with_imap(config_path, dovecot)
    dovecot.append("INBOX", backlog()[0])
    assert config.imap is not None
    running = MailboxLock(config.storage.path, mailbox_name(config.imap))
    assert running.try_acquire()
    try:
        result = run_fetch(config_path)
    finally:
        running.release()
    assert result.returncode == 0
    assert f"another fetch is running for {mailbox_name(config.imap)}" in result.stdout
    assert len(dovecot.folder_uids("INBOX")) == 1


def test_dry_run_lists_and_changes_nothing(
    config_path: Path, dovecot: Dovecot, capsys: pytest.CaptureFixture[str]
) -> None:
    """`gateway fetch --dry-run` lists UID, size, date, sender and subject, and changes nothing."""
    config = with_imap(config_path, dovecot)
    uids = [dovecot.append("INBOX", raw) for raw in backlog()[:2]]
    assert fetch_once(config, dry_run=True) == 0
    out = capsys.readouterr().out
    assert "Kari Nordmann <kari.nordmann@nordby-skole.example>" in out
    assert "Skriveren virker ikke" in out and "Tue, 24 Nov 2026 10:00:00 +0100" in out
    assert f"{uids[1]:>7} {len(backlog()[1]):>9}" in out
    assert "2 message(s) would be fetched" in out
    assert marks(dovecot, "INBOX") == {uid: frozenset() for uid in uids}
    assert "Processed" not in dovecot.folders()
    assert not config.storage.database.exists()


def test_locked_store_leaves_message_unflagged_and_exits_75(
    config_path: Path, dovecot: Dovecot, capsys: pytest.CaptureFixture[str]
) -> None:
    """While another writer holds the database the message stays in the INBOX untouched; later it goes."""
    config = with_imap(config_path, dovecot, storage="busy_timeout_ms = 100")
    open_store(config.storage).close()
    uid = dovecot.append("INBOX", backlog()[0])
    blocker = sqlite3.connect(config.storage.database, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        assert fetch_once(config) == 75
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert "temporary failure: store unavailable" in capsys.readouterr().err
    assert marks(dovecot, "INBOX") == {uid: frozenset()}
    assert fetch_once(config) == 0
    assert dovecot.folder_uids("INBOX") == []
    assert count(open_store(config.storage), "SELECT count(*) FROM cases") == 1


def test_refused_login_or_unreachable_server_is_a_temporary_failure(
    config_path: Path, dovecot: Dovecot, capsys: pytest.CaptureFixture[str]
) -> None:
    """A refused login or a server that is down gives exit 75 and one line saying why."""
    config = with_imap(config_path, dovecot)
    assert config.imap is not None
    assert fetch_once(replace(config, imap=replace(config.imap, password="wrong"))) == 75
    login_failure = capsys.readouterr().err.strip().splitlines()[-1]
    assert login_failure.startswith("temporary failure: imap login failed for gateway at 127.0.0.1")
    dovecot.stop()
    assert fetch_once(config) == 75
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"temporary failure: cannot reach imap server 127.0.0.1:{dovecot.port}")


def test_change_announced_with_idle_continuation_is_not_missed(dovecot: Dovecot, config_path: Path) -> None:
    """Mail that lands between the last search and IDLE (announced with "+ idling") ends the wait at once."""
    config = with_imap(config_path, dovecot)
    assert config.imap is not None
    mailbox = Mailbox.open(config.imap, dovecot.password)
    try:
        mailbox.select()
        assert mailbox.pending() == []
        dovecot.append("INBOX", backlog()[0])
        began = time.monotonic()
        mailbox.wait_idle(threading.Event(), seconds=20)
        assert time.monotonic() - began < 2
        assert len(mailbox.pending()) == 1
    finally:
        mailbox.close()


def test_serve_fetches_and_sends_the_receipt(
    config_path: Path, dovecot: Dovecot, relay: RecordingRelay
) -> None:
    """`gateway serve` with [imap] takes mail from the mailbox and its outbox sends the receipt."""
    config = with_imap(config_path, dovecot, poll_seconds=600.0)
    server = Server(config)
    server.start()
    try:
        dovecot.append("INBOX", backlog()[0])
        wait_for(lambda: receipts(relay)[KARI] == 1, what="the receipt at the relay")
        wait_for(lambda: dovecot.folder_uids("INBOX") == [], what="the message to be moved")
    finally:
        server.stop()
    assert server.fetcher is not None and not server.fetcher.is_alive()


def test_worker_without_idle_polls_and_waits_for_the_mailbox_lock(
    config_path: Path, dovecot: Dovecot, caplog: pytest.LogCaptureFixture
) -> None:
    """Without IDLE the worker polls; while another fetch holds the mailbox it waits, then drains."""
    config = with_imap(config_path, dovecot, idle=False, poll_seconds=0.2)
    assert config.imap is not None
    caplog.set_level(logging.INFO, logger="gateway.imap")
    other = MailboxLock(config.storage.path, mailbox_name(config.imap))
    assert other.try_acquire()
    stored: list[Result] = []
    stop = threading.Event()
    worker = FetchWorker(config, on_stored=stored.append, stop=stop)
    worker.start()
    try:
        dovecot.append("INBOX", backlog()[0])
        wait_for(
            lambda: any("waiting for it" in r.getMessage() for r in caplog.records),
            what="the worker to wait for the lock",
        )
        assert stored == [] and len(dovecot.folder_uids("INBOX")) == 1
        other.release()
        wait_for(lambda: len(stored) == 1, what="the drain once the lock is free")
        dovecot.append("INBOX", backlog()[1])
        wait_for(lambda: len(stored) == 2, what="the next poll to take the second message")
    finally:
        other.release()
        stop.set()
        worker.join(timeout=10)
    assert not worker.is_alive()


@pytest.fixture
def tls_dovecot(tmp_path: Path) -> Iterator[Dovecot]:
    server = Dovecot(tmp_path / "dovecot-tls", tls=True)
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.mark.parametrize("mode", ["implicit", "starttls"])
def test_tls_to_a_server_with_an_internal_ca(
    config_path: Path, tls_dovecot: Dovecot, mode: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Implicit TLS and STARTTLS, verified against imap.ca_file; without it the fetch waits (75), mail untouched."""
    port = tls_dovecot.tls_port if mode == "implicit" else tls_dovecot.port
    tls_dovecot.append("INBOX", mail(message_id=f"<tls-{mode}@nordby-skole.example>"))
    untrusted = with_imap(config_path, tls_dovecot, ssl=mode, port=port)
    assert fetch_once(untrusted) == 75
    reason = capsys.readouterr().err.strip().splitlines()[-1]
    assert "has an untrusted certificate" in reason and "imap.ca_file" in reason, reason
    assert len(tls_dovecot.folder_uids("INBOX")) == 1  # left in place for the next run
    config_path.write_text(
        config_path.read_text(encoding="utf-8").replace(
            "[imap]\n", f"[imap]\nca_file = {json.dumps(str(tls_dovecot.ca_file))}\n", 1
        ),
        encoding="utf-8",
    )
    trusted = load_config(config_path)
    assert trusted.imap is not None and trusted.imap.ssl == mode
    assert fetch_once(trusted) == 0
    assert tls_dovecot.folder_uids("INBOX") == []
    stored = count(open_store(trusted.storage), "SELECT count(*) FROM messages WHERE direction = 'in'")
    assert stored == 1


def test_missing_ca_file_is_a_config_error(config_path: Path, dovecot: Dovecot, tmp_path: Path) -> None:
    from gateway.core.config import ConfigError

    with pytest.raises(ConfigError, match=r"imap\.ca_file: no such file"):
        with_imap(config_path, dovecot, ca_file=str(tmp_path / "nowhere.pem"))
