"""The database schema as an ordered list of sqlite-utils migrations; never edit one that shipped."""

from __future__ import annotations

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

migrations = Migrations("gateway")


@migrations()
def m001_core(db: Database) -> None:
    """Cases, their messages and history, the outbox and the quarantine."""
    db.execute(
        """
        CREATE TABLE raw_messages (
            sha256 TEXT PRIMARY KEY,
            size INTEGER NOT NULL,
            raw BLOB NOT NULL,
            stored_at TEXT NOT NULL
        )"""
    )
    db.execute(
        """
        CREATE TABLE cases (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            subject TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('new','open','pending','resolved','closed')),
            category TEXT NOT NULL,
            priority TEXT NOT NULL,
            queue TEXT NOT NULL DEFAULT 'first-line',
            organization TEXT,
            requester TEXT NOT NULL,
            requester_name TEXT NOT NULL DEFAULT '',
            language TEXT NOT NULL DEFAULT 'nb',
            owner TEXT,
            linked_case INTEGER REFERENCES cases(id),
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            first_response_at TEXT,
            resolved_at TEXT,
            closed_at TEXT
        )"""
    )
    db.execute("CREATE INDEX cases_status ON cases(status, updated_at)")
    db.execute("CREATE INDEX cases_org ON cases(organization, status)")
    db.execute(
        """
        CREATE TABLE messages (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            message_id TEXT NOT NULL,
            direction TEXT NOT NULL CHECK (direction IN ('in','out')),
            dedupe_key TEXT UNIQUE,
            case_id INTEGER REFERENCES cases(id),
            disposition TEXT NOT NULL,
            reason TEXT NOT NULL DEFAULT '',
            source TEXT NOT NULL,
            from_addr TEXT NOT NULL DEFAULT '',
            from_name TEXT NOT NULL DEFAULT '',
            to_addrs TEXT NOT NULL DEFAULT '[]',
            cc_addrs TEXT NOT NULL DEFAULT '[]',
            subject TEXT NOT NULL DEFAULT '',
            body TEXT NOT NULL DEFAULT '',
            internal INTEGER NOT NULL DEFAULT 0,
            defects TEXT NOT NULL DEFAULT '[]',
            sha256 TEXT REFERENCES raw_messages(sha256),
            created_at TEXT NOT NULL
        )"""
    )
    db.execute("CREATE INDEX messages_case ON messages(case_id, id)")
    db.execute("CREATE INDEX messages_disposition ON messages(disposition, id)")
    db.execute("CREATE INDEX messages_message_id ON messages(message_id)")
    # Every Message-ID we stored or sent for a case: the threading index.
    db.execute(
        """
        CREATE TABLE message_refs (
            message_id TEXT PRIMARY KEY,
            case_id INTEGER NOT NULL REFERENCES cases(id)
        ) WITHOUT ROWID"""
    )
    db.execute(
        """
        CREATE TABLE events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            case_id INTEGER REFERENCES cases(id),
            message INTEGER REFERENCES messages(id),
            at TEXT NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            detail TEXT NOT NULL DEFAULT '',
            reason TEXT NOT NULL DEFAULT ''
        )"""
    )
    db.execute("CREATE INDEX events_case ON events(case_id, id)")
    db.execute(
        """
        CREATE TABLE outbox (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            message_id TEXT NOT NULL UNIQUE,
            case_id INTEGER REFERENCES cases(id),
            kind TEXT NOT NULL,
            mail_from TEXT NOT NULL,
            recipients TEXT NOT NULL,
            raw BLOB NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('queued','sent','failed')),
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at TEXT NOT NULL,
            last_error TEXT NOT NULL DEFAULT '',
            created_at TEXT NOT NULL,
            sent_at TEXT
        )"""
    )
    db.execute("CREATE INDEX outbox_due ON outbox(status, next_attempt_at)")
    db.execute("CREATE INDEX outbox_recipient ON outbox(kind, created_at)")
    # Receipts per sender, so the hourly loop brake survives restarts cheaply.
    db.execute(
        """
        CREATE TABLE auto_replies (
            recipient TEXT NOT NULL,
            at TEXT NOT NULL
        )"""
    )
    db.execute("CREATE INDEX auto_replies_recipient ON auto_replies(recipient, at)")
    db.execute(
        """
        CREATE TABLE quarantine (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            sha256 TEXT NOT NULL REFERENCES raw_messages(sha256),
            source TEXT NOT NULL,
            error TEXT NOT NULL,
            detail TEXT NOT NULL DEFAULT '',
            created_at TEXT NOT NULL,
            replayed_at TEXT,
            replay_result TEXT
        )"""
    )


@migrations()
def m002_imap(db: Database) -> None:
    """What the IMAP fetcher has taken from each mailbox, so a re-fetch never duplicates."""
    db.execute(
        """
        CREATE TABLE imap_seen (
            mailbox TEXT NOT NULL,
            uidvalidity INTEGER NOT NULL,
            uid INTEGER NOT NULL,
            sha256 TEXT NOT NULL,
            outcome TEXT NOT NULL,
            seen_at TEXT NOT NULL,
            PRIMARY KEY (mailbox, uidvalidity, uid)
        ) WITHOUT ROWID"""
    )
