"""`gateway status`: the gateway's health at a glance, and whether something needs a person."""

from __future__ import annotations

import os
import socket
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

from gateway.core import clock
from gateway.core.config import Config
from gateway.ops import replication
from gateway.ops.lock import ServeLock
from gateway.store import write_errors
from gateway.store.database import Store, open_store

# What counts as "needs a person"; docs/deployment.md lists the same conditions.
OUTBOX_MAX_AGE = timedelta(hours=1)
FAILED_WINDOW = timedelta(hours=24)
EX_NEEDS_ATTENTION = 1


@dataclass
class Health:
    listener_address: str
    listener_up: bool
    serve_running: bool
    imap_configured: bool
    database: str
    database_bytes: int = 0
    last_fetch_at: str | None = None
    last_fetch_outcome: str | None = None
    outbox_queued: int = 0
    outbox_oldest_queued_at: str | None = None
    outbox_oldest_queued_age_seconds: float | None = None
    failed_deliveries_24h: int = 0
    quarantine_unreplayed: int = 0
    held: int = 0
    replica: replication.ReplicaState | None = None
    free_bytes: int | None = None
    min_free_bytes: int = 0
    last_write_error: str | None = None
    last_write_error_at: str | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {"healthy": self.healthy, **asdict(self)}


def listener_answers(host: str, port: int, timeout: float = 3.0) -> bool:
    """Whether an SMTP server greets us on host:port with a 220 banner."""
    target = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    try:
        with socket.create_connection((target, port), timeout=timeout) as sock:
            banner = sock.recv(512)
            sock.sendall(b"QUIT\r\n")
    except OSError:
        return False
    return banner.startswith(b"220")


def collect(config: Config, expect_listener: bool = False) -> Health:
    """Look at the listener, the serve lock and the store, and name every problem found."""
    smtp = config.smtp
    health = Health(
        listener_address=f"{smtp.host}:{smtp.port}",
        listener_up=listener_answers(smtp.host, smtp.port),
        serve_running=ServeLock(config.storage.path).held_elsewhere(),
        imap_configured=config.imap is not None,
        database=str(config.storage.database),
    )
    if not health.listener_up and (health.serve_running or expect_listener):
        health.problems.append(f"the SMTP listener on {health.listener_address} does not answer")
    health.replica = replication.inspect(config)
    if health.replica is not None and health.replica.problem:
        health.problems.append(health.replica.problem)
    # Before the store is opened: a full disk must show even if opening it fails.
    _check_disk(config, health)
    if not config.storage.database.exists():
        health.problems.append(f"no database at {config.storage.database}")
        return health
    health.database_bytes = sum(
        p.stat().st_size for p in config.storage.path.glob("gateway.db*") if p.is_file()
    )
    store = open_store(config.storage)
    try:
        _read_store(store, health)
    finally:
        store.close()
    return health


def _check_disk(config: Config, health: Health) -> None:
    """Free space where the store lives, and the last failure to write it (gateway/store/write_errors.py)."""
    folder = config.storage.path
    health.min_free_bytes = config.storage.min_free_mb * 1_000_000
    try:
        fs = os.statvfs(folder)
    except OSError:
        return  # no folder yet: "no database" says it
    # f_bavail, not f_bfree: the blocks reserved for root are not there for the gateway's user.
    health.free_bytes = fs.f_bavail * fs.f_frsize
    if fs.f_flag & os.ST_RDONLY:  # where not even the write failure could be recorded
        health.problems.append(f"the filesystem of {folder} is mounted read-only")
    if health.free_bytes < health.min_free_bytes:
        health.problems.append(
            f"only {_megabytes(health.free_bytes)} free on the filesystem of {folder}"
            f" (storage.min_free_mb is {config.storage.min_free_mb})"
        )
    failure = write_errors.last(folder)
    if failure is not None:
        health.last_write_error, health.last_write_error_at = failure.error, failure.at
        health.problems.append(
            f"the last write to the store failed at {failure.at} ({failure.process}): {failure.error}"
        )


def _read_store(store: Store, health: Health) -> None:
    now = clock.now()
    fetched = store.one("SELECT seen_at, outcome, mailbox FROM imap_seen ORDER BY seen_at DESC LIMIT 1")
    if fetched is not None:
        health.last_fetch_at = fetched["seen_at"]
        health.last_fetch_outcome = f"{fetched['outcome']} ({fetched['mailbox']})"
    queued = store.one("SELECT count(*) AS n, min(created_at) AS oldest FROM outbox WHERE status = 'queued'")
    health.outbox_queued = queued["n"]
    if queued["oldest"]:
        age = now - clock.parse_iso(queued["oldest"])
        health.outbox_oldest_queued_at = queued["oldest"]
        health.outbox_oldest_queued_age_seconds = round(age.total_seconds(), 1)
        if age > OUTBOX_MAX_AGE:
            health.problems.append(f"outgoing mail has waited since {queued['oldest']} (over 1 hour)")
    # A failed row's last attempt is its latest due time, or when it was sent if a bounce failed it.
    since = clock.iso(now - FAILED_WINDOW)
    health.failed_deliveries_24h = store.one(
        "SELECT count(*) AS n FROM outbox WHERE status = 'failed'"
        " AND max(next_attempt_at, coalesce(sent_at, '')) >= ?",
        (since,),
    )["n"]
    if health.failed_deliveries_24h:
        health.problems.append(f"{health.failed_deliveries_24h} delivery failure(s) in the last 24 hours")
    health.quarantine_unreplayed = store.one(
        "SELECT count(*) AS n FROM quarantine WHERE replayed_at IS NULL"
    )["n"]
    if health.quarantine_unreplayed:
        health.problems.append(f"{health.quarantine_unreplayed} quarantined message(s) not replayed")
    health.held = store.one("SELECT count(*) AS n FROM messages WHERE disposition = 'held'")["n"]


def _megabytes(size: int) -> str:
    return f"{size / 1_000_000:.1f} MB"


def _disk(health: Health) -> str:
    free = "free space unknown" if health.free_bytes is None else f"{_megabytes(health.free_bytes)} free"
    failed = (
        f"last write failed at {health.last_write_error_at}"
        if health.last_write_error is not None
        else "no write failure on record"
    )
    return f"{free} (at least {_megabytes(health.min_free_bytes)} wanted); {failed}"


def render(health: Health) -> list[str]:
    listener = "up" if health.listener_up else "down"
    serving = "gateway serve running" if health.serve_running else "no gateway serve running"
    if not health.imap_configured:
        imap = "not configured"
    elif health.last_fetch_at is None:
        imap = "nothing fetched yet"
    else:
        imap = f"last fetch {health.last_fetch_at}: {health.last_fetch_outcome}"
    oldest = ""
    if health.outbox_oldest_queued_at is not None:
        oldest = (
            f", oldest {health.outbox_oldest_queued_at} ({health.outbox_oldest_queued_age_seconds:.0f} s)"
        )
    lines = [
        f"gateway status: {'ok' if health.healthy else 'NEEDS ATTENTION'}",
        f"  listener    {health.listener_address} {listener} ({serving})",
        f"  imap        {imap}",
        f"  outbox      {health.outbox_queued} queued{oldest}; {health.failed_deliveries_24h} failed in 24 h",
        f"  quarantine  {health.quarantine_unreplayed} not replayed",
        f"  held        {health.held}",
        f"  database    {health.database}, {_megabytes(health.database_bytes)}",
        f"  disk        {_disk(health)}",
    ]
    if health.replica is not None:
        lines.append(f"  replica     {replication.describe(health.replica)}")
    lines += [f"problem: {problem}" for problem in health.problems]
    return lines
