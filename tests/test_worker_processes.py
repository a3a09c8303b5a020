"""serve's worker processes: the intake pipeline and the outbox sender die, restart and never lose mail."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import threading
from pathlib import Path

from gateway.core.child import write_frame
from gateway.core.config import Config
from gateway.flow.context import Result
from gateway.intake import committer
from gateway.ops.server import Server
from gateway.pipeline.process import Item
from gateway.runtime import Runtime
from gateway.store.database import open_store
from tests.faults import Serve
from tests.support import RecordingRelay, mail, smtp_send, wait_for, write_config


def _stored(config: Config) -> list[tuple[str, str]]:
    with sqlite3.connect(config.storage.database) as conn:
        return conn.execute("SELECT message_id, disposition FROM messages WHERE direction = 'in'").fetchall()


def _quarantined(config: Config) -> list[str]:
    with sqlite3.connect(config.storage.database) as conn:
        return [row[0] for row in conn.execute("SELECT error FROM quarantine")]


def _send_in_background(port: int, raw: bytes) -> tuple[threading.Thread, list[tuple[int, bytes]]]:
    answers: list[tuple[int, bytes]] = []
    sender = threading.Thread(target=lambda: answers.append(smtp_send(port, raw)))
    sender.start()
    return sender, answers


def _kill_worker_holding_a_batch(server: Server) -> None:
    """SIGKILL the intake worker once it has a batch in hand (the tests hold the write lock)."""
    committer = server.listener.committer
    assert committer is not None
    wait_for(lambda: committer.pending, what="a batch in the intake worker's hands")
    child = committer.child
    assert child is not None
    os.kill(child.pid, signal.SIGKILL)
    wait_for(lambda: committer.child is not child, what="the parent noticing the worker died")


def test_intake_worker_killed_with_a_batch_in_hand_gives_451_then_the_retry_is_stored_once(
    server: Server,
) -> None:
    """The batch in a killed worker is answered 451; a new worker stores the sender's retry exactly once."""
    config = server.runtime.config
    port = server.listener.address[1]
    raw = mail(message_id="<worker-dies@nordby-skole.example>")
    holder = sqlite3.connect(config.storage.database, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # the worker blocks on the lock with the message in hand
    try:
        sender, answers = _send_in_background(port, raw)
        _kill_worker_holding_a_batch(server)
        sender.join(30)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert answers and answers[0][0] == 451, answers
    assert _stored(config) == []

    assert smtp_send(port, raw) == (250, b"2.0.0 Stored as opened")
    assert smtp_send(port, raw) == (250, b"2.0.0 Stored as duplicate")
    assert _stored(config) == [("<worker-dies@nordby-skole.example>", "case")]


def test_a_message_that_kills_the_intake_worker_twice_is_quarantined_whole(server: Server) -> None:
    """After a worker death batches hold one message; one that dies with it twice is kept in quarantine, 250."""
    config = server.runtime.config
    port = server.listener.address[1]
    raw = mail(message_id="<poison@nordby-skole.example>")
    answers: list[tuple[int, bytes]] = []
    for attempt in (1, 2):
        holder = sqlite3.connect(config.storage.database, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            sender, answers = _send_in_background(port, raw)
            _kill_worker_holding_a_batch(server)
        finally:
            # The parent writes the quarantine entry itself once it saw the second death.
            holder.execute("ROLLBACK")
            holder.close()
        sender.join(30)
        assert server.listener.committer is not None and server.listener.committer.solo
        if attempt == 1:
            assert answers and answers[0][0] == 451, answers
    assert answers == [(250, b"2.0.0 Stored as quarantined")]
    assert _stored(config) == []
    (error,) = _quarantined(config)
    assert "WorkerCrashed" in error and "died 2 times" in error


def test_outbox_sender_killed_is_restarted_and_delivers_what_was_queued(
    server: Server, relay: RecordingRelay
) -> None:
    """The sender process dies; serve starts a new one, which sends the queued receipt."""
    outbox = server.outbox
    first = outbox.child
    assert first is not None
    os.kill(first.pid, signal.SIGKILL)
    wait_for(lambda: outbox.child is not first, what="a new sender process")
    port = server.listener.address[1]
    assert smtp_send(port, mail(message_id="<after-restart@nordby-skole.example>"))[0] == 250
    wait_for(lambda: relay.to("kari.nordmann@nordby-skole.example"), what="the receipt from the new sender")


def _stat(pid: int | str) -> list[str]:
    """/proc/<pid>/stat after the command name: state, parent pid, ...; [] once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return handle.read().rpartition(")")[2].split()
    except OSError:
        return []


def _children(pid: int) -> list[int]:
    return [int(e) for e in os.listdir("/proc") if e.isdigit() and _stat(e)[1:2] == [str(pid)]]


def _alive(pid: int) -> bool:
    return _stat(pid)[:1] not in ([], ["Z"])


def test_workers_die_with_a_killed_serve(tmp_path: Path, relay: RecordingRelay) -> None:
    """kill -9 of `gateway serve` leaves no worker behind to act beside the next serve's."""
    serve = Serve(write_config(tmp_path, relay_port=relay.port), tmp_path / "serve.log").start()
    try:
        workers = wait_for(
            lambda: len(_children(serve.pid)) == 2 and _children(serve.pid), what="two workers"
        )
    finally:
        serve.kill()
    wait_for(lambda: not any(_alive(pid) for pid in workers), what="the workers gone with their parent")


def test_serve_stops_its_workers_on_sigterm(tmp_path: Path, relay: RecordingRelay) -> None:
    """A graceful stop ends both workers and exits 0."""
    serve = Serve(write_config(tmp_path, relay_port=relay.port), tmp_path / "serve.log").start()
    workers = wait_for(lambda: len(_children(serve.pid)) == 2 and _children(serve.pid), what="two workers")
    assert serve.proc is not None
    serve.proc.send_signal(signal.SIGTERM)
    assert serve.wait() == 0
    assert not any(_alive(pid) for pid in workers)


def _pipe_with(frames: list[tuple[list[Item], bool]]) -> int:
    read_end, write_end = os.pipe()
    with os.fdopen(write_end, "wb") as stream:
        for frame in frames:
            write_frame(stream, frame)
    return read_end


def _item(n: int) -> Item:
    return (f"raw {n}".encode(), "smtp", None, None)


def test_frames_waiting_together_are_joined_but_never_a_solo_one() -> None:
    """Batches already in the pipe share one transaction; after a worker death each stays alone."""
    a, b, c, d, e = ([_item(n)] for n in range(5))
    fd = _pipe_with([(a, False), (b, False), (c, True), (d, False), (e, False)])
    try:
        groups = [[items for items, _ in group] for group in committer._batches(fd)]
    finally:
        os.close(fd)
    assert groups == [[a, b], [c], [d, e]]


def test_joining_stops_at_the_limit() -> None:
    big = [_item(n) for n in range(committer.JOIN_LIMIT)]
    fd = _pipe_with([(big, False), ([_item(99)], False)])
    try:
        groups = [len(group) for group in committer._batches(fd)]
    finally:
        os.close(fd)
    assert groups == [1, 1]


def test_each_frame_gets_its_own_share_of_the_results() -> None:
    results = [Result("opened", str(n)) for n in range(5)]
    replies = committer._replies([2, 1, 2], results)
    assert replies == [("ok", results[0:2]), ("ok", results[2:3]), ("ok", results[3:5])]
    assert committer._replies([2, 1], ("unavailable", "disk full")) == [("unavailable", "disk full")] * 2


def test_a_death_counts_only_against_a_message_the_worker_held_alone(runtime: Runtime) -> None:
    """Joined batches share a transaction, so a death is held against a message only when it was alone."""
    import subprocess
    import sys

    from gateway.store.database import StorageUnavailable

    def die_with(pending: list[tuple[list[Item], bool]]) -> list[object]:
        worker = committer.Committer(runtime)
        outcomes: list[object] = []
        for items, solo in pending:
            worker.slots.acquire()
            worker.pending.append((items, outcomes.append, solo))
        child = subprocess.Popen([sys.executable, "-c", "pass"], stdin=subprocess.PIPE)
        worker.child = child
        worker._died(child, EOFError("gone"))
        assert child.stdin is not None
        child.stdin.close()
        return [worker.crashes[hashlib.sha256(items[0][0]).hexdigest()] for items, _ in pending] + outcomes

    a, b = [_item(1)], [_item(2)]
    # Two one-message batches in flight, not solo: the child may have joined them; no one is blamed.
    counts_and_outcomes = die_with([(a, False), (b, False)])
    assert counts_and_outcomes[:2] == [0, 0]
    assert all(isinstance(o, StorageUnavailable) for o in counts_and_outcomes[2:])
    assert die_with([(a, False)])[0] == 1  # nothing else in flight: it was alone
    assert die_with([(a, True), (b, True)])[:2] == [1, 0]  # solo: never joined; only the oldest was in hand


def test_the_intake_worker_leaves_wal_checkpoints_to_the_other_writers(tmp_path: Path) -> None:
    """Past SQLite's 1,000 pages the intake worker's commits do not checkpoint; the next other writer's does."""
    from gateway.core.config import load_config
    from gateway.store.database import put_raw

    config = load_config(write_config(tmp_path))
    worker = committer.worker_runtime(config)
    intake, sender = worker.store, open_store(config.storage)
    database, wal = config.storage.database, Path(f"{config.storage.database}-wal")
    before = database.stat().st_size
    assert committer.CHECKPOINT_PAGES >= 2 * 1500
    for _ in range(3):  # about 1,600 pages (a page each, and the index's): past SQLite's 1,000
        with intake.write() as conn:
            for _ in range(500):
                put_raw(conn, os.urandom(4000))
    assert wal.stat().st_size > 1500 * 4096
    assert database.stat().st_size == before  # all of it still in the WAL
    intake._reopen()  # a fresh connection (after a full disk, say) keeps the setting
    assert intake.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == committer.CHECKPOINT_PAGES
    with sender.write() as conn:
        put_raw(conn, b"one small write")
    assert database.stat().st_size > before + 1500 * 4096  # the sender's commit copied it
    worker.close()
    sender.close()
