"""Fill a store made by the gateway's own schema with many cases by direct SQL (not the SMTP path).

Each case has its first message (raw bytes kept), a sent receipt, history and thread refs; about
half of them have follow-ups as real stores do (customer replies, agent answers), so messages,
refs and events grow with the case count the way they do in use. Rows are built and committed in
chunks, so a million cases need no more memory than fifty thousand.
"""

from __future__ import annotations

import hashlib
import json
import random
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from mailmix import SERVICE_ADDRESS, contact_senders

CHUNK = 50_000
ORGS = {
    "nordby-skole.example": "nordby-skole",
    "fjellvik.kommune.example": "fjellvik-kommune",
    "vestland-college.example": "vestland-college",
}
STATUSES = ["closed"] * 70 + ["resolved"] * 15 + ["open"] * 8 + ["pending"] * 2 + ["new"] * 5
# Older cases are nearly all closed, as in a centre that works its queue; a few linger open.
OLD_STATUSES = ["closed"] * 985 + ["resolved"] * 10 + ["open"] * 4 + ["pending"]
RECENT = timedelta(days=30)
CATEGORIES = ["incident"] * 6 + ["question"] * 3 + ["change"]
# Follow-up messages after the first, per case: half have none, a few run to a long thread.
FOLLOW_UPS = [0] * 10 + [1] * 5 + [2] * 3 + [3, 5]
PLACES = ("rom", "bygg", "etasje", "avdeling", "skole", "kontor")
WORDS = ("ruter", "svitsj", "trådløst", "VPN", "brannmur", "skriver", "e-post", "fiber", "DHCP", "DNS")

INSERTS = {
    "raw": "INSERT OR IGNORE INTO raw_messages (sha256, size, raw, stored_at) VALUES (?, ?, ?, ?)",
    "case": "INSERT INTO cases (id, subject, status, category, priority, queue, organization, requester,"
    " requester_name, language, created_at, updated_at, first_response_at, resolved_at, closed_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    "message": "INSERT INTO messages (message_id, direction, dedupe_key, case_id, disposition, reason,"
    " source, from_addr, from_name, to_addrs, subject, body, sha256, created_at)"
    " VALUES (?, ?, ?, ?, 'case', ?, 'smtp', ?, ?, ?, ?, ?, ?, ?)",
    "ref": "INSERT OR IGNORE INTO message_refs (message_id, case_id) VALUES (?, ?)",
    "event": "INSERT INTO events (case_id, at, actor, action, detail, reason) VALUES (?, ?, ?, ?, ?, ?)",
    "outbox": "INSERT INTO outbox (message_id, case_id, kind, mail_from, recipients, raw, status, attempts,"
    f" next_attempt_at, created_at, sent_at) VALUES (?, ?, 'receipt', '{SERVICE_ADDRESS}', ?, ?, 'sent',"
    " 1, ?, ?, ?)",
    "auto": "INSERT INTO auto_replies (recipient, at) VALUES (?, ?)",
}


def create_schema(db: Path, env: dict[str, str]) -> None:
    """Open the gateway's Store once (in the benchmarked code's interpreter) so its migrations run."""
    code = "import sys, pathlib; from gateway.store.database import Store; "
    code += "Store(pathlib.Path(sys.argv[1])).close()"
    subprocess.run([sys.executable, "-c", code, str(db)], check=True, env=env)


def _mail(sender: Any, to: str, subject: str, mid: str, at: datetime, body: str, extra: str = "") -> bytes:
    return (
        f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nDate: {at:%a, %d %b %Y %H:%M:%S +0000}\r\n"
        f"Message-ID: {mid}\r\n{extra}MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\n" + body
    ).encode("utf-8")


class Rows:
    """The rows of one chunk, by table."""

    def __init__(self) -> None:
        self.by_table: dict[str, list[tuple[Any, ...]]] = {name: [] for name in INSERTS}

    def add(self, table: str, row: tuple[Any, ...]) -> None:
        self.by_table[table].append(row)

    def raw(self, raw: bytes, iso: str) -> str:
        digest = hashlib.sha256(raw).hexdigest()
        self.add("raw", (digest, len(raw), raw, iso))
        return digest


def _case(rows: Rows, rng: random.Random, case_id: int, sender: Any, now: datetime) -> None:
    domain = sender.email.partition("@")[2]
    created = now - timedelta(days=1 + rng.random() * 900)
    iso = created.isoformat(timespec="microseconds")
    later = (created + timedelta(hours=rng.randint(1, 300))).isoformat(timespec="microseconds")
    status = rng.choice(STATUSES if now - created < RECENT else OLD_STATUSES)
    subject = f"{rng.choice(WORDS)} nede på {rng.choice(PLACES)} {rng.randint(1, 240)} ({case_id})"
    body = (
        f"Hei,\r\n\r\n{rng.choice(WORDS)} på {rng.choice(PLACES)} {case_id % 240} virker ikke siden i"
        f" morges. Elevene får ikke logget på.\r\n\r\nMed vennlig hilsen\r\n{sender.name}\r\n"
    )
    mid = f"<preload.{case_id}.{rng.getrandbits(32):08x}@{domain}>"
    who = f"{sender.name} <{sender.email}>"
    digest = rows.raw(_mail(who, SERVICE_ADDRESS, subject, mid, created, body), iso)
    closed = status in ("resolved", "closed")
    rows.add(
        "case",
        (
            case_id,
            subject,
            status,
            rng.choice(CATEGORIES),
            "normal",
            "first-line",
            ORGS.get(domain),
            sender.email,
            sender.name,
            "en" if "college" in domain else "nb",
            iso,
            later,
            later,
            later if closed else None,
            later if status == "closed" else None,
        ),
    )
    to = json.dumps([SERVICE_ADDRESS])
    rows.add(
        "message",
        (
            mid,
            "in",
            mid,
            case_id,
            "opened the case",
            sender.email,
            sender.name,
            to,
            subject,
            body,
            digest,
            iso,
        ),
    )
    out_mid = f"<{created:%Y%m%d%H%M%S%f}.{rng.getrandbits(48):012x}@service.example>"
    receipt = _mail(
        f"Servicesenteret <{SERVICE_ADDRESS}>",
        sender.email,
        f"[SSC#{case_id}] Vi har mottatt henvendelsen din: {subject}",
        out_mid,
        created,
        "takk for henvendelsen. Den er registrert som sak.\r\n" * 12,
        f"In-Reply-To: {mid}\r\nAuto-Submitted: auto-replied\r\n",
    )
    rows.add("ref", (mid, case_id))
    rows.add("ref", (out_mid, case_id))
    rows.add("outbox", (out_mid, case_id, json.dumps([sender.email]), receipt, iso, iso, iso))
    rows.add("auto", (sender.email, iso))
    for action, actor in (
        ("opened", sender.email),
        ("threaded", "gateway"),
        ("rule-fired", "rules"),
        ("reply-queued", "gateway"),
    ):
        rows.add("event", (case_id, iso, actor, action, "", "preloaded"))
    for n in range(rng.choice(FOLLOW_UPS)):
        at = created + timedelta(hours=1 + n * rng.uniform(1, 30))
        stamp = at.isoformat(timespec="microseconds")
        reply_mid = f"<preload.{case_id}.r{n}.{rng.getrandbits(32):08x}@{domain}>"
        reply_body = (
            f"Hei igjen,\r\n\r\ndet gjelder fortsatt {rng.choice(WORDS)}. Takk.\r\n\r\n{sender.name}\r\n"
        )
        raw = _mail(
            who,
            SERVICE_ADDRESS,
            f"Re: [SSC#{case_id}] {subject}",
            reply_mid,
            at,
            reply_body,
            f"In-Reply-To: {mid}\r\n",
        )
        rows.add(
            "message",
            (
                reply_mid,
                "in",
                reply_mid,
                case_id,
                "threaded",
                sender.email,
                sender.name,
                to,
                f"Re: [SSC#{case_id}] {subject}",
                reply_body,
                rows.raw(raw, stamp),
                stamp,
            ),
        )
        rows.add("ref", (reply_mid, case_id))
        rows.add("event", (case_id, stamp, sender.email, "customer-replied", "", "preloaded"))
    if closed:
        rows.add("event", (case_id, later, "mona@service.example", status, "", ""))


def _chunks(cases: int, start_id: int, registry: Path, seed: int) -> Iterator[Rows]:
    rng = random.Random(seed)
    senders = contact_senders(registry)
    now = datetime.now(UTC)
    for first in range(0, cases, CHUNK):
        rows = Rows()
        for n in range(first, min(cases, first + CHUNK)):
            _case(rows, rng, start_id + n, senders[n % len(senders)], now)
        yield rows


def preload(db: Path, cases: int, env: dict[str, str], registry: Path, seed: int = 7) -> dict[str, Any]:
    """Fill the store with `cases` cases and their threads, a chunk per transaction; figures back."""
    started = time.monotonic()
    create_schema(db, env)
    conn = sqlite3.connect(str(db), isolation_level=None)
    conn.execute("PRAGMA synchronous = OFF")  # bulk set-up only; the gateway runs with FULL
    conn.execute("PRAGMA foreign_keys = OFF")
    # The unique Message-ID and thread indexes take keys in random order: keep them in memory, and
    # checkpoint seldom, or a million cases spend their time in page reads and WAL copies.
    conn.execute("PRAGMA cache_size = -2000000")
    conn.execute("PRAGMA wal_autocheckpoint = 100000")
    start_id = conn.execute("SELECT coalesce(max(id), 0) FROM cases").fetchone()[0] + 1
    for rows in _chunks(cases, start_id, registry, seed):
        conn.execute("BEGIN")
        for table, sql in INSERTS.items():
            conn.executemany(sql, rows.by_table[table])
        conn.execute("COMMIT")
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'search_progress'").fetchone():
        # The search index is filled in batches: index what was stored, as the gateway would.
        conn.execute("BEGIN")
        conn.execute(
            "INSERT INTO messages_fts (rowid, subject, body) SELECT id, subject, body FROM messages"
            " WHERE id > (SELECT indexed_upto FROM search_progress)"
        )
        conn.execute("UPDATE search_progress SET indexed_upto = (SELECT max(id) FROM messages)")
        conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("ANALYZE")
    messages = conn.execute("SELECT count(*) FROM messages").fetchone()[0]
    conn.close()
    return {
        "cases": cases,
        "messages": messages,
        "seconds": round(time.monotonic() - started, 2),
        "db_bytes": db.stat().st_size,
    }
