"""`gateway purge`: raw mail and closed cases kept no longer than [retention] allows, each purge recorded."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from gateway.core import clock
from gateway.core.config import Config
from gateway.core.progress import Tick, quiet
from gateway.store.case_rows import record
from gateway.store.database import Store

# What is left of an outgoing mail whose bytes were purged: enough to show that it was.
TOMBSTONE = b"Subject: (purged under the retention policy)\r\nX-Gateway-Purged: yes\r\n\r\n"

OLD_RAW = "SELECT sha256 FROM raw_messages WHERE stored_at < :raw_cutoff"
OLD_OUTGOING = "status IN ('sent', 'failed') AND created_at < :raw_cutoff AND raw != :tombstone"
STALE_CODES = "used_at IS NULL AND created_at < :raw_cutoff"
# Closed long enough ago, and not purged before (every purge leaves a 'purged' event on the case).
OLD_CASES = (
    "SELECT id FROM cases WHERE status = 'closed' AND coalesce(closed_at, updated_at) < :case_cutoff"
    " AND NOT EXISTS (SELECT 1 FROM events e WHERE e.case_id = cases.id AND e.action = 'purged')"
)


@dataclass
class PurgePlan:
    """What a purge removes: counts and the oldest date of each kind."""

    raw_cutoff: str
    case_cutoff: str
    raw_messages: int = 0
    raw_oldest: str | None = None
    quarantine_entries: int = 0
    outgoing_mails: int = 0
    outgoing_oldest: str | None = None
    outgoing_files: list[str] = field(default_factory=list)
    closed_cases: int = 0
    closed_oldest: str | None = None
    case_messages: int = 0
    # Change-order codes never returned: their mail's raw bytes go with the rest, so they could
    # never open the order any more, and they hold the sender's address.
    stale_confirmations: int = 0

    def params(self) -> dict[str, Any]:
        return {"raw_cutoff": self.raw_cutoff, "case_cutoff": self.case_cutoff, "tombstone": TOMBSTONE}

    def lines(self, done: bool) -> list[str]:
        verb = "purged" if done else "would purge"
        return [
            f"raw mail stored before {self.raw_cutoff}: {verb} {self.raw_messages} messages"
            f" (oldest {self.raw_oldest or '-'}), {self.quarantine_entries} quarantine entries,"
            f" {self.outgoing_mails} sent mails (oldest {self.outgoing_oldest or '-'}),"
            f" {len(self.outgoing_files)} outgoing files,"
            f" {self.stale_confirmations} unused confirmation codes",
            f"cases closed before {self.case_cutoff}: {'anonymised' if done else 'would anonymise'}"
            f" {self.closed_cases} cases (oldest {self.closed_oldest or '-'})"
            f" with {self.case_messages} messages",
        ]


def _one(conn: sqlite3.Connection, sql: str, params: dict[str, Any]) -> dict[str, Any]:
    cursor = conn.execute(sql, params)
    names = [d[0] for d in cursor.description or ()]
    return dict(zip(names, cursor.fetchone(), strict=True))


def plan(config: Config, conn: sqlite3.Connection) -> PurgePlan:
    """What a purge would remove now; changes nothing."""
    now = clock.now()
    retention = config.retention
    found = PurgePlan(
        raw_cutoff=clock.iso(now - timedelta(days=retention.raw_mail_days)),
        case_cutoff=clock.iso(now - timedelta(days=retention.closed_case_days)),
    )
    p = found.params()
    raw = _one(
        conn,
        "SELECT count(*) AS n, min(stored_at) AS oldest FROM raw_messages WHERE stored_at < :raw_cutoff",
        p,
    )
    found.raw_messages, found.raw_oldest = raw["n"], raw["oldest"]
    found.quarantine_entries = _one(
        conn, f"SELECT count(*) AS n FROM quarantine WHERE sha256 IN ({OLD_RAW})", p
    )["n"]
    outgoing = _one(
        conn, f"SELECT count(*) AS n, min(created_at) AS oldest FROM outbox WHERE {OLD_OUTGOING}", p
    )
    found.outgoing_mails, found.outgoing_oldest = outgoing["n"], outgoing["oldest"]
    found.stale_confirmations = _one(conn, f"SELECT count(*) AS n FROM confirmations WHERE {STALE_CODES}", p)[
        "n"
    ]
    found.outgoing_files = _old_files(config.storage.outgoing, now - timedelta(days=retention.raw_mail_days))
    cases = _one(
        conn,
        "SELECT count(*) AS n, min(coalesce(closed_at, updated_at)) AS oldest FROM cases"
        f" WHERE id IN ({OLD_CASES})",
        p,
    )
    found.closed_cases, found.closed_oldest = cases["n"], cases["oldest"]
    found.case_messages = _one(conn, f"SELECT count(*) AS n FROM messages WHERE case_id IN ({OLD_CASES})", p)[
        "n"
    ]
    return found


def _old_files(folder: Path, cutoff: datetime) -> list[str]:
    if not folder.is_dir():
        return []
    limit = cutoff.timestamp()
    return sorted(str(p) for p in folder.glob("*.eml") if p.stat().st_mtime < limit)


def purge(config: Config, store: Store, tick: Tick = quiet) -> PurgePlan:
    """Purge in one transaction what `plan` lists, and write down what went and why."""
    retention = config.retention
    with store.write() as conn:
        # Planned inside the transaction, so the record matches exactly what was removed.
        done = plan(config, conn)
        p = done.params()
        _anonymise_cases(conn, p, tick)
        _purge_raw(conn, p)
        conn.execute(f"UPDATE outbox SET raw = :tombstone, recipients = '[]' WHERE {OLD_OUTGOING}", p)
        conn.execute("DELETE FROM auto_replies WHERE at < :raw_cutoff", p)
        conn.execute(f"DELETE FROM confirmations WHERE {STALE_CODES}", p)
        record(
            conn,
            None,
            "retention",
            "purged",
            json.dumps({k: v for k, v in asdict(done).items() if k != "outgoing_files"}),
            f"raw_mail_days={retention.raw_mail_days} closed_case_days={retention.closed_case_days}",
        )
    for name in done.outgoing_files:
        Path(name).unlink(missing_ok=True)
    return done


def _anonymise_cases(conn: sqlite3.Connection, p: dict[str, Any], tick: Tick = quiet) -> None:
    """Keep a closed case's numbers for statistics; drop who wrote and what they wrote."""
    case_ids = [row[0] for row in conn.execute(OLD_CASES, p)]
    for done, case_id in enumerate(case_ids, 1):
        tick(done, len(case_ids))
        digests = [
            row[0]
            for row in conn.execute(
                "SELECT sha256 FROM messages WHERE case_id = ? AND sha256 IS NOT NULL", (case_id,)
            )
        ]
        conn.execute(
            "UPDATE messages SET from_addr = '', from_name = '', to_addrs = '[]', cc_addrs = '[]',"
            " subject = '', body = '', sha256 = NULL WHERE case_id = ?",
            (case_id,),
        )
        conn.execute(
            "UPDATE events SET detail = '', reason = '',"
            " actor = CASE WHEN actor LIKE '%@%' THEN '' ELSE actor END WHERE case_id = ?",
            (case_id,),
        )
        # Escalation evidence quotes the customer (phone numbers, user names, MAC addresses).
        conn.execute("UPDATE case_fields SET evidence = '' WHERE case_id = ?", (case_id,))
        conn.execute("UPDATE confirmations SET address = '' WHERE case_id = ?", (case_id,))
        conn.execute(
            "UPDATE outbox SET raw = :tombstone, recipients = '[]' WHERE case_id = :case",
            {"tombstone": TOMBSTONE, "case": case_id},
        )
        conn.execute(
            "UPDATE cases SET subject = '(purged)', requester = '', requester_name = '' WHERE id = ?",
            (case_id,),
        )
        record(conn, case_id, "retention", "purged", "", f"closed before {p['case_cutoff']}")
        for digest in digests:
            # The same bytes may still back a quarantine entry or another message: keep them then.
            conn.execute(
                "DELETE FROM raw_messages WHERE sha256 = ?"
                " AND NOT EXISTS (SELECT 1 FROM messages WHERE sha256 = ?)"
                " AND NOT EXISTS (SELECT 1 FROM quarantine WHERE sha256 = ?)",
                (digest, digest, digest),
            )


def _purge_raw(conn: sqlite3.Connection, p: dict[str, Any]) -> None:
    """Drop old raw bytes; the message rows stay, their sha256 set to NULL as the tombstone."""
    conn.execute(f"UPDATE messages SET sha256 = NULL WHERE sha256 IN ({OLD_RAW})", p)
    conn.execute(f"DELETE FROM quarantine WHERE sha256 IN ({OLD_RAW})", p)
    conn.execute("DELETE FROM raw_messages WHERE stored_at < :raw_cutoff", p)
