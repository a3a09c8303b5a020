"""Each delivery is recorded before the next mail goes out: a kill -9 mid-burst re-sends at most one mail per relay connection."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.core.config import load_config
from gateway.core.crashpoints import KILLED
from gateway.outbox.journal import FILE_NAME
from tests.faults import Serve, all_sent, copies, read_db, send
from tests.support import RecordingRelay, free_port, mail, wait_for, write_config

BURST = 30


@dataclass
class CountingRelay(RecordingRelay):
    """A recording relay that also counts the SMTP connections it was greeted on (one EHLO each)."""

    connections: int = 0

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        with self.lock:
            self.connections += 1
        return responses


@pytest.fixture
def relay() -> Iterator[CountingRelay]:
    counting = CountingRelay().start()
    yield counting
    counting.stop()


def burst(port: int, first: int, count: int) -> list[bytes]:
    """Send `count` customer mails; return those that got no answer (the gateway died meanwhile)."""
    unanswered = []
    for number in range(first, first + count):
        raw = mail(subject=f"Linje {number} er nede", message_id=f"<burst{number}@nordby-skole.example>")
        answer = send(port, raw)
        if answer is None:
            unanswered.append(raw)
        else:
            assert answer.startswith("250 "), answer
    return unanswered


def recorded(db: Path) -> set[int]:
    """Outbox ids recorded as delivered: sent in the store, or noted in the sender's journal."""
    sent = {row_id for (row_id,) in read_db(db, "SELECT id FROM outbox WHERE status = 'sent'")}
    return sent | {row_id for (row_id,) in read_db(db.parent / FILE_NAME, "SELECT outbox_id FROM sent")}


def duplicates(relay: RecordingRelay) -> int:
    """Copies the relay took beyond the first, over every Message-ID."""
    return sum(n - 1 for n in copies(relay).values())


def sender_pid(serve: Serve) -> int | None:
    """The outbox sender worker of a running `gateway serve`, found among its children in /proc."""
    # Every thread's list: a restarted sender is the child of serve's supervisor thread.
    tasks = Path(f"/proc/{serve.pid}/task").iterdir()
    children = [child for task in tasks for child in (task / "children").read_text().split()]
    for child in children:
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:  # gone between the two reads
            continue
        if b"gateway.ops.delivery_worker" in cmdline:
            return int(child)
    return None


def test_kill_9_mid_burst_resends_at_most_one_mail_per_relay_connection(
    tmp_path: Path, relay: CountingRelay
) -> None:
    """serve killed right after the relay's 12th 250, and later its sender killed mid-burst, send one mail twice per kill at most."""
    port = free_port()
    path = write_config(tmp_path, relay_port=relay.port, smtp_port=port, receipt_limit_per_hour="1000")
    db = load_config(path).storage.database

    # First kill: the whole serve, at the worst moment, after the relay's 250 for the 12th mail.
    crashing = Serve(path, tmp_path / "serve.log", GATEWAY_TEST_CRASH_AT="after-relay-250@12").start()
    try:
        retry = burst(port, 0, BURST)
        assert crashing.wait() == KILLED
    finally:
        crashing.kill()
    assert sum(copies(relay).values()) == 12
    assert len(recorded(db)) == 11  # all but the mail in flight were recorded

    serve = Serve(path, tmp_path / "serve.log").start()
    try:
        assert burst_again(port, retry) == []
        wait_for(lambda: all_sent(db), timeout=60, what="the outbox drained after the restart")
        assert duplicates(relay) == 1
        # Second kill: only the sender worker, by a plain SIGKILL while it delivers a new burst.
        relayed = sum(copies(relay).values())
        connections = relay.connections
        victim = wait_for(lambda: sender_pid(serve), what="the sender worker")
        assert burst(port, BURST, 10) == []
        wait_for(lambda: sum(copies(relay).values()) > relayed + 3, what="the sender delivering the burst")
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: sender_pid(serve) not in (None, victim), what="serve restarting its sender")
        wait_for(lambda: all_sent(db), timeout=60, what="the second burst drained")
    finally:
        assert serve.stop() == 0
    assert all(n <= 2 for n in copies(relay).values()), copies(relay)
    # Each kill cut one relay connection short; each such connection cost at most one mail twice.
    assert relay.connections > connections
    assert duplicates(relay) <= 2


def burst_again(port: int, raws: list[bytes]) -> list[bytes]:
    """What the clients' MTAs do after the restart: send again what got no answer."""
    return [raw for raw in raws if not (send(port, raw) or "").startswith("250 ")]
