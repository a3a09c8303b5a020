"""Fault-test helpers: `gateway serve` as a process to kill, relays that hold or refuse, store counts."""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import smtplib
import sqlite3
import subprocess
import sys
import threading
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from email import message_from_bytes
from email.policy import default
from pathlib import Path
from typing import Any

from tests.support import REPO, RecordingRelay

# Auto-replies we send to customers (receipts, refusals) carry this; staff mail is auto-generated.
AUTO_REPLIED = "auto-replied"


@dataclass
class GatedRelay(RecordingRelay):
    """A recording relay that leaves one chosen DATA unanswered until the test lets it go.

    `hold_data(n)` holds the n-th DATA (counted from 1) before it is recorded; `holding` is set
    once the gateway waits on it. The relay's event loop stays free: other sessions go on.
    """

    datas: int = 0
    hold_at: int = 0
    holding: threading.Event = field(default_factory=threading.Event)
    gate: threading.Event = field(default_factory=threading.Event)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.datas += 1
            held = self.datas == self.hold_at
            gate, holding = self.gate, self.holding
        if held:
            holding.set()
            await asyncio.get_running_loop().run_in_executor(None, gate.wait)
        return await super().handle_DATA(server, session, envelope)

    def hold_data(self, number: int) -> None:
        """Hold DATA number `number` from now on (0: none), and let any DATA held so far go."""
        with self.lock:
            previous = self.gate
            self.hold_at, self.holding, self.gate = number, threading.Event(), threading.Event()
        previous.set()

    def stop(self) -> None:
        self.hold_data(0)  # a held DATA would keep an executor thread (and pytest) waiting
        super().stop()


class Serve:
    """`gateway serve` in its own process, so a test can kill -9 it and start it again."""

    def __init__(self, config_path: Path, log: Path, **env: str) -> None:
        self.config_path = config_path
        self.log = log
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait_listening: bool = True) -> Serve:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway", "--config", str(self.config_path), "serve"],
                cwd=REPO,
                env={**os.environ, **self.env},
                stdout=subprocess.PIPE,
                stderr=log,  # a file, not a pipe nobody reads: a full pipe would stop the gateway
            )
        if wait_listening:
            self._wait_listening()
        return self

    def _wait_listening(self, timeout: float = 60.0) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else b""
        if b"listening" not in line:
            self.proc.kill()
            raise AssertionError(
                f"gateway serve did not start: {self.log.read_text(errors='replace')[-2000:]}"
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> int:
        """kill -9: no signal handler, no finally, no flush."""
        assert self.proc is not None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        return self.wait()

    def wait(self, timeout: float = 60.0) -> int:
        assert self.proc is not None
        code = self.proc.wait(timeout=timeout)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return code

    def stop(self) -> int:
        """SIGTERM, the graceful path; the exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait()

    def rss_kib(self) -> int:
        """Resident set size of the gateway process now, from /proc (0 once it has gone)."""
        return rss_kib(self.pid)

    def tree_rss_kib(self) -> int:
        """The gateway's and its worker processes' (its direct children's) RSS, added up."""
        try:
            children = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()
        except OSError:
            children = []
        return rss_kib(self.pid) + sum(rss_kib(int(child)) for child in children)


def rss_kib(pid: int) -> int:
    """VmRSS of a process from /proc, in KiB (0 once it has gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)


def send(port: int, raw: bytes, mail_from: str = "sender@client.example") -> str | None:
    """One SMTP transaction; the answer to DATA ("250 2.0.0 Stored as opened"), None if the server vanished."""
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
            client.ehlo()
            client.mail(mail_from)
            code, text = client.rcpt("kontakt@service.example")
            if code == 250:
                code, text = client.data(raw)
            return f"{code} {text.decode(errors='replace')}"
    except (smtplib.SMTPServerDisconnected, ConnectionError):
        return None


def read_db(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """A query on a connection of its own, closed at once (the gateway may be running or dead)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def inbound(db: Path) -> Counter[str]:
    """Stored inbound messages per Message-ID."""
    return Counter(mid for (mid,) in read_db(db, "SELECT message_id FROM messages WHERE direction = 'in'"))


def outbox_status(db: Path) -> dict[str, str]:
    """{outgoing Message-ID: status}."""
    return dict(read_db(db, "SELECT message_id, status FROM outbox"))  # type: ignore[arg-type]


def all_sent(db: Path) -> bool:
    statuses = outbox_status(db)
    return bool(statuses) and set(statuses.values()) == {"sent"}


def copies(relay: RecordingRelay) -> Counter[str]:
    """How many times the relay took each Message-ID."""
    with relay.lock:
        return Counter(str(message_from_bytes(r.raw, policy=default)["Message-ID"]) for r in relay.received)


def receipts_by_customer(relay: RecordingRelay) -> dict[str, list[str]]:
    """{customer address: the Message-ID of each auto-reply copy the relay took for them}."""
    found: dict[str, list[str]] = defaultdict(list)
    with relay.lock:
        received = list(relay.received)
    for r in received:
        message = message_from_bytes(r.raw, policy=default)
        if message["Auto-Submitted"] == AUTO_REPLIED:
            for rcpt in r.rcpt_tos:
                found[rcpt].append(str(message["Message-ID"]))
    return dict(found)


def with_imap(config_path: Path, host: str, port: int, username: str, password: str, **extra: Any) -> None:
    """Point a test config at a private Dovecot (plain IMAP on loopback)."""
    values = {"host": host, "port": port, "ssl": "none", "username": username, "password": password, **extra}
    text = config_path.read_text(encoding="utf-8") + "\n[imap]\n"
    text += "".join(f"{key} = {json.dumps(value)}\n" for key, value in values.items())
    config_path.write_text(text, encoding="utf-8")
