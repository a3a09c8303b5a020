"""Our own failures are temporary: 451 and exit 75, nothing half-written, nothing sent twice."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.core.config import load_config
from gateway.ops.server import Server
from gateway.store.database import open_store
from tests.support import RecordingRelay, free_port, mail, smtp_send, wait_for, write_config

KARI = "kari.nordmann@nordby-skole.example"


def _counts(db: Path) -> tuple[int, int, int, int]:
    conn = sqlite3.connect(db)
    try:
        return tuple(  # type: ignore[return-value]
            conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("messages", "cases", "raw_messages", "outbox")
        )
    finally:
        conn.close()


@pytest.fixture
def locked_store(tmp_path: Path, relay: RecordingRelay) -> Iterator[Path]:
    """A gateway config whose database another process holds an exclusive write lock on."""
    path = write_config(tmp_path, relay_port=relay.port)
    text = path.read_text().replace("[smtp]", "[smtp]\n", 1)
    path.write_text(text.replace('path = "', 'busy_timeout_ms = 200\npath = "', 1))
    config = load_config(path)
    open_store(config.storage).close()  # schema in place, as on a running installation
    holder = sqlite3.connect(config.storage.database, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    yield path
    holder.execute("ROLLBACK")
    holder.close()


def test_locked_database_gives_451_and_stores_nothing(locked_store: Path) -> None:
    """While the store cannot be written, SMTP answers 451 and no row of the message exists."""
    config = load_config(locked_store)
    server = Server(config)
    server.start()
    try:
        code, text = smtp_send(server.listener.address[1], mail())
        assert code == 451, text
    finally:
        server.stop()
    assert _counts(config.storage.database) == (0, 0, 0, 0)


def test_pipe_exit_codes(tmp_path: Path, locked_store: Path) -> None:
    """`gateway deliver` exits 75 when the store is locked, 65 for an oversized or empty message."""

    def deliver(raw: bytes) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, "-m", "gateway", "--config", str(locked_store), "deliver"],
            input=raw,
            capture_output=True,
            timeout=60,
        )

    locked = deliver(mail())
    assert locked.returncode == 75, locked.stderr
    assert b"temporary failure" in locked.stderr
    too_big = deliver(mail(body="x" * 1_100_000))
    assert too_big.returncode == 65 and b"larger than" in too_big.stderr
    empty = deliver(b"\r\n")
    assert empty.returncode == 65 and b"empty" in empty.stderr


def test_pipe_accepts_and_missing_config_is_temporary(tmp_path: Path, config_path: Path) -> None:
    """A good message exits 0; a config the MTA cannot read is our fault, so exit 75 (retry)."""
    ok = subprocess.run(
        [sys.executable, "-m", "gateway", "--config", str(config_path), "deliver"],
        input=mail(),
        capture_output=True,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    assert b'"outcome": "opened"' in ok.stdout
    missing = subprocess.run(
        [sys.executable, "-m", "gateway", "--config", str(tmp_path / "nope.toml"), "deliver"],
        input=mail(),
        capture_output=True,
        timeout=60,
    )
    assert missing.returncode == 75 and b"config file not found" in missing.stderr


def test_oversized_smtp_message_gets_552(server: Server) -> None:
    """A message over smtp.max_message_size is refused with 552 and not stored."""
    code, _ = smtp_send(server.listener.address[1], mail(body=("y" * 70 + "\n") * 16_000))
    assert code == 552
    assert server.runtime.store.one("SELECT count(*) AS n FROM messages")["n"] == 0


def _serve(config_path: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "--config", str(config_path), "serve"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # printed once the listener accepts connections
    assert b"listening" in line, proc.stderr.read() if proc.poll() is not None else line
    return proc


def test_kill_9_after_accept_sends_the_receipt_once_after_restart(tmp_path: Path) -> None:
    """A gateway killed after accepting (receipt still queued) sends that receipt exactly once on restart."""
    relay = RecordingRelay()  # not started yet: the receipt cannot leave before the crash
    smtp_port = free_port()
    config_path = write_config(tmp_path, relay_port=relay.port, smtp_port=smtp_port)
    proc = _serve(config_path)
    try:
        assert smtp_send(smtp_port, mail(message_id="<crash@nordby-skole.example>"))[0] == 250
        db = load_config(config_path).storage.database
        wait_for(lambda: _counts(db)[3] >= 1, what="receipt queued")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    relay.start()
    try:
        proc = _serve(config_path)
        try:
            wait_for(lambda: relay.to(KARI), timeout=30, what="receipt after restart")
            conn = sqlite3.connect(db)
            wait_for(
                lambda: (
                    conn.execute("SELECT status FROM outbox WHERE kind = 'receipt'").fetchone()[0] == "sent"
                ),
                what="outbox row marked sent",
            )
            conn.close()
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0
        assert len(relay.to(KARI)) == 1
        assert _counts(db)[:2] == (1, 1)
    finally:
        relay.stop()
