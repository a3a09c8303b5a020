"""Storage faults: a full disk, a locked or read-only database give 451 / exit 75, and `serve` heals by itself.

The store lives on a small filesystem of its own (a tmpfs, else a loop-mounted ext4 image: we run
as root). After each fault: nothing half-stored, no receipt sent twice, and once the fault is gone
the next message is stored by the same `gateway serve` process and the outbox goes on sending.
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.core.config import load_config
from gateway.ops.server import Server
from tests.corpus import half_stored
from tests.faults import GatedRelay, Serve, all_sent, copies, inbound, send
from tests.support import REPO, free_port, mail, wait_for, write_config

KARI = "kari.nordmann@nordby-skole.example"
OLA = "ola.bakken@fjellvik.kommune.example"
SIRI = "siri.lie@fjellvik.kommune.example"


def _run(*command: str) -> str:
    """Run a system command; its error text, or '' when it worked."""
    done = subprocess.run(command, capture_output=True, text=True)
    return "" if done.returncode == 0 else f"{' '.join(command)}: {done.stderr.strip() or done.returncode}"


def _mount_small(where: Path, image: Path) -> str:
    """Mount an 8 MB filesystem at `where`: a tmpfs, else an ext4 image on a loop device; '' or why not."""
    tmpfs = _run("mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(where))
    if not tmpfs:
        return ""
    ext4 = (
        _run("dd", "if=/dev/zero", f"of={image}", "bs=1M", "count=8", "status=none")
        or _run("mkfs.ext4", "-q", str(image))
        or _run("mount", "-o", "loop", str(image), str(where))
    )
    return f"{tmpfs}; {ext4}" if ext4 else ""


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A small filesystem of its own for the store, unmounted afterwards."""
    where = tmp_path / "disk"
    where.mkdir()
    why = _mount_small(where, tmp_path / "disk.img")
    if why:
        pytest.skip(f"cannot mount a small filesystem for the store: {why}")
    yield where
    for path in where.glob("var/gateway.db*"):
        _run("chattr", "-i", str(path))
    _run("umount", "-l", str(where))


@pytest.fixture
def gated() -> Iterator[GatedRelay]:
    relay = GatedRelay().start()
    yield relay
    relay.stop()


def config_on(tmp_path: Path, disk: Path, relay: GatedRelay, busy_timeout_ms: int = 10000) -> Path:
    """A gateway.toml whose store is on `disk`."""
    path = write_config(tmp_path, relay_port=relay.port, smtp_port=free_port())
    text = path.read_text(encoding="utf-8")
    text = text.replace(
        f'path = "{tmp_path / "var"}"', f'busy_timeout_ms = {busy_timeout_ms}\npath = "{disk / "var"}"'
    )
    path.write_text(text, encoding="utf-8")
    return path


def fill(disk: Path) -> Path:
    """Write a file until the filesystem has not one free block left; the file, to delete later."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 20, 1 << 16, 1 << 12, 1 << 9):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)
    return filler


def truncate_wal(db: Path) -> None:
    """Checkpoint and empty the WAL, so the next write needs new blocks (SQLite reuses a WAL's space)."""
    conn = sqlite3.connect(db)
    try:
        wait_for(
            lambda: conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0, what="checkpoint"
        )
    finally:
        conn.close()


def deliver(config_path: Path, raw: bytes) -> subprocess.CompletedProcess[bytes]:
    """`gateway deliver`, as an MTA's pipe would run it."""
    return subprocess.run(
        [sys.executable, "-m", "gateway", "--config", str(config_path), "deliver"],
        input=raw,
        capture_output=True,
        timeout=60,
        cwd=REPO,
    )


def intact(db: Path) -> list[str]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return half_stored(conn)
    finally:
        conn.close()


def test_full_disk_gives_451_and_75_then_serve_recovers_by_itself(
    tmp_path: Path, disk: Path, gated: GatedRelay
) -> None:
    """On a full disk SMTP answers 451 and the pipe 75, nothing is half-stored, the outbox sends nothing twice, and space freed lets the same `serve` store and send again."""
    config_path = config_on(tmp_path, disk, gated)
    config = load_config(config_path)
    db, port = config.storage.database, config.smtp.port
    gated.hold_data(1)  # Kari's receipt waits at the relay while the disk fills
    serve = Serve(config_path, tmp_path / "serve.log").start()
    try:
        assert (send(port, mail(message_id="<full1@nordby-skole.example>")) or "").startswith("250 ")
        wait_for(gated.holding.is_set, what="the outbox sending the receipt")
        truncate_wal(db)
        filler = fill(disk)
        gated.hold_data(0)  # the relay takes the receipt; noting it fails, so nothing more goes
        log = tmp_path / "serve.log"
        wait_for(lambda: "outbox paused, store unavailable" in log.read_text(), what="the outbox to fail")
        assert len(gated.received) == 1

        second = mail(sender=f"Ola <{OLA}>", subject="Skriveren virker ikke", message_id="<full2@fjellvik>")
        answer = send(port, second)
        assert answer is not None and answer.startswith("451 "), answer
        piped = mail(sender=f"Siri <{SIRI}>", subject="Ingen nett på rådhuset", message_id="<full3@fjellvik>")
        assert deliver(config_path, piped).returncode == 75
        assert inbound(db) == {"<full1@nordby-skole.example>": 1} and intact(db) == []

        filler.unlink()  # space again: no restart
        assert deliver(config_path, piped).returncode == 0
        assert (send(port, second) or "").startswith("250 ")  # and this wakes the outbox
        wait_for(lambda: all_sent(db) and len(gated.received) == 6, timeout=30, what="every mail sent")
        assert serve.proc is not None and serve.proc.poll() is None
    finally:
        assert serve.stop() == 0
    assert set(inbound(db).values()) == {1} and len(inbound(db)) == 3
    assert set(copies(gated).values()) == {1}, copies(gated)
    assert intact(db) == []


def test_locked_database_recovers_without_restart_and_stores_the_retry_once(
    tmp_path: Path, disk: Path, gated: GatedRelay, capfd: pytest.CaptureFixture[str]
) -> None:
    """While another process holds the write lock SMTP answers 451; once it lets go the same message is stored once and the outbox resumes."""
    sender_log: list[str] = []  # the outbox sender is a child process: its log is on our fd 2

    def sender_said(text: str) -> bool:
        sender_log.append(capfd.readouterr().err)
        return text in "".join(sender_log)

    config = load_config(config_on(tmp_path, disk, gated, busy_timeout_ms=200))
    db = config.storage.database
    gated.hold_data(1)
    server = Server(config)
    server.start()
    port = server.listener.address[1]
    holder = sqlite3.connect(db, isolation_level=None)
    try:
        assert (send(port, mail(message_id="<lock1@nordby-skole.example>")) or "").startswith("250 ")
        wait_for(gated.holding.is_set, what="the outbox sending the receipt")
        holder.execute("BEGIN EXCLUSIVE")
        gated.hold_data(0)
        wait_for(lambda: len(gated.received) == 2, what="two mails at the relay")
        wait_for(lambda: sender_said("outbox paused"), what="the outbox failing to record them")
        retry = mail(sender=f"Ola <{OLA}>", subject="Skriveren virker ikke", message_id="<lock2@fjellvik>")
        answer = send(port, retry)
        assert answer is not None and answer.startswith("451 "), answer
        holder.execute("ROLLBACK")

        assert send(port, retry) == "250 2.0.0 Stored as opened"
        assert send(port, retry) == "250 2.0.0 Stored as duplicate"
        wait_for(lambda: all_sent(db) and len(gated.received) == 4, timeout=30, what="every mail sent")
    finally:
        holder.close()
        server.stop()
    assert inbound(db) == {"<lock1@nordby-skole.example>": 1, "<lock2@fjellvik>": 1}
    assert set(copies(gated).values()) == {1}, copies(gated)
    assert intact(db) == []


def _immutable(db: Path, on: bool) -> str:
    return _run("chattr", "+i" if on else "-i", str(db))


def test_read_only_database_gives_451_and_75_and_recovers_when_writable(
    tmp_path: Path, disk: Path, gated: GatedRelay
) -> None:
    """A database the gateway may not write (immutable) gives exit 75 and 451; made writable again, the same `serve` stores and sends without a restart."""
    config_path = config_on(tmp_path, disk, gated)
    config = load_config(config_path)
    db, port = config.storage.database, config.smtp.port
    first = deliver(config_path, mail(message_id="<ro1@nordby-skole.example>"))
    assert first.returncode == 0  # its receipt and the agents' notice wait in the outbox
    if why := _immutable(db, True):
        pytest.skip(f"cannot make the database read-only: {why}")
    # root ignores file modes, not the immutable flag: SQLite opens the file read-only.
    piped = mail(sender=f"Siri <{SIRI}>", subject="Ingen nett på rådhuset", message_id="<ro3@fjellvik>")
    assert deliver(config_path, piped).returncode == 75
    serve = Serve(config_path, tmp_path / "serve.log").start()
    try:
        # The outbox can read: it sends the queued mail, cannot record it, and must not send it again.
        wait_for(lambda: len(gated.received) == 2, what="the queued receipt and notice at the relay")
        log = tmp_path / "serve.log"
        wait_for(lambda: "readonly database" in log.read_text(), what="the outbox to fail to record")
        second = mail(sender=f"Ola <{OLA}>", subject="Skriveren virker ikke", message_id="<ro2@fjellvik>")
        answer = send(port, second)
        assert answer is not None and answer.startswith("451 "), answer
        assert inbound(db) == {"<ro1@nordby-skole.example>": 1}

        assert _immutable(db, False) == ""
        assert deliver(config_path, piped).returncode == 0
        assert (send(port, second) or "").startswith("250 ")  # and this wakes the outbox
        wait_for(lambda: all_sent(db) and len(gated.received) == 6, timeout=30, what="every mail sent")
    finally:
        _immutable(db, False)
        assert serve.stop() == 0
    assert len(inbound(db)) == 3 and set(inbound(db).values()) == {1}
    assert set(copies(gated).values()) == {1}, copies(gated)
    assert intact(db) == []


def test_filesystem_turned_read_only_under_serve_gives_451_and_sends_nothing_twice(
    tmp_path: Path, gated: GatedRelay
) -> None:
    """When the kernel turns the store's filesystem read-only under a running `serve`, SMTP answers 451 and the outbox sends nothing twice."""
    where, image = tmp_path / "ext4", tmp_path / "ext4.img"
    where.mkdir()
    why = (
        _run("dd", "if=/dev/zero", f"of={image}", "bs=1M", "count=8", "status=none")
        or _run("mkfs.ext4", "-q", "-O", "^has_journal", str(image))
        or _run("mount", "-o", "loop,errors=remount-ro", str(image), str(where))
    )
    if why:
        pytest.skip(f"cannot loop-mount an ext4 image: {why}")
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
        device = next(line.split()[0] for line in mounts if line.split()[1] == str(where))
        trigger = Path("/sys/fs/ext4") / Path(device).name / "trigger_fs_error"
        if not trigger.exists():
            pytest.skip(f"{trigger} is missing: no way to make ext4 fail on purpose")
        config_path = config_on(tmp_path, where, gated)
        config = load_config(config_path)
        db, port = config.storage.database, config.smtp.port
        gated.hold_data(1)
        serve = Serve(config_path, tmp_path / "serve.log").start()
        try:
            assert (send(port, mail(message_id="<eio1@nordby-skole.example>")) or "").startswith("250 ")
            wait_for(gated.holding.is_set, what="the outbox sending the receipt")
            trigger.write_text("test: the store's disk failed")  # errors=remount-ro: read-only now
            gated.hold_data(0)
            wait_for(lambda: len(gated.received) == 1, what="the receipt at the relay")
            for n in range(2):  # a second try too: the reopened connection is read-only
                answer = send(port, mail(sender=f"Ola <{OLA}>", message_id=f"<eio{n}@fjellvik>"))
                assert answer is not None and answer.startswith("451 "), answer
            assert deliver(config_path, mail(sender=f"Siri <{SIRI}>")).returncode == 75
            # The outbox's next round (after its idle wait) finds the receipt still unnoted: not resent,
            # and nothing else sent while it cannot be noted.
            log = tmp_path / "serve.log"
            wait_for(lambda: log.read_text().count("outbox paused") >= 2, timeout=20, what="a second round")
            assert len(gated.received) == 1 and serve.proc is not None and serve.proc.poll() is None
        finally:
            serve.stop()
        assert inbound(db) == {"<eio1@nordby-skole.example>": 1} and intact(db) == []
        assert set(copies(gated).values()) == {1}
    finally:
        _run("umount", "-l", str(where))


def status(config_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """`gateway status`, as the monitoring check runs it."""
    return subprocess.run(
        [sys.executable, "-m", "gateway", "--config", str(config_path), "status", *extra],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )


def test_status_names_a_full_disk_and_the_failed_write_until_space_is_back(
    tmp_path: Path, disk: Path, gated: GatedRelay
) -> None:
    """On a full disk mail gets 451 and `gateway status` exits 1 naming the free space and the failed write; freed space and a stored mail bring exit 0 back."""
    config_path = config_on(tmp_path, disk, gated)
    text = config_path.read_text(encoding="utf-8")
    config_path.write_text(text.replace("[storage]\n", "[storage]\nmin_free_mb = 1\n"), encoding="utf-8")
    config = load_config(config_path)
    db, port = config.storage.database, config.smtp.port
    serve = Serve(config_path, tmp_path / "serve.log").start()
    try:
        assert (send(port, mail(message_id="<disk1@nordby-skole.example>")) or "").startswith("250 ")
        wait_for(lambda: all_sent(db), what="the first receipt sent")
        healthy = status(config_path, "--json")
        assert healthy.returncode == 0, healthy.stdout
        assert json.loads(healthy.stdout)["free_bytes"] > 1_000_000

        truncate_wal(db)
        filler = fill(disk)
        second = mail(sender=f"Ola <{OLA}>", subject="Skriveren virker ikke", message_id="<disk2@fjellvik>")
        answer = send(port, second)
        assert answer is not None and answer.startswith("451 "), answer
        full = status(config_path, "--json")
        assert full.returncode == 1, full.stdout + full.stderr
        report = json.loads(full.stdout)
        assert report["healthy"] is False and report["free_bytes"] < 1_000_000
        assert "disk is full" in report["last_write_error"], report
        assert any("free on the filesystem" in p for p in report["problems"]), report["problems"]
        assert any("the last write to the store failed" in p for p in report["problems"])
        human = status(config_path)
        assert human.returncode == 1 and "NEEDS ATTENTION" in human.stdout
        assert "problem: only 0.0 MB free on the filesystem of" in human.stdout, human.stdout

        filler.unlink()
        assert (send(port, second) or "").startswith("250 ")  # the successful commit clears the record
        recovered = status(config_path)
        assert recovered.returncode == 0, recovered.stdout
        assert "no write failure on record" in recovered.stdout
    finally:
        assert serve.stop() == 0
    assert inbound(db) == {"<disk1@nordby-skole.example>": 1, "<disk2@fjellvik>": 1}
