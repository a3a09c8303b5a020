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


@migrations()
def m006_casework(db: Database) -> None:
    """Change-order confirmations, escalation information per case, and gateway settings."""
    # A technical contact's unauthenticated order waits here until the token comes back.
    db.execute(
        """
        CREATE TABLE confirmations (
            token TEXT PRIMARY KEY,
            message INTEGER NOT NULL REFERENCES messages(id),
            address TEXT NOT NULL,
            created_at TEXT NOT NULL,
            used_at TEXT,
            case_id INTEGER REFERENCES cases(id)
        ) WITHOUT ROWID"""
    )
    # One row per escalation field and case: present (and from which message) or asked for.
    db.execute(
        """
        CREATE TABLE case_fields (
            case_id INTEGER NOT NULL REFERENCES cases(id),
            field TEXT NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('present', 'asked')),
            evidence TEXT NOT NULL DEFAULT '',
            at TEXT NOT NULL,
            PRIMARY KEY (case_id, field)
        ) WITHOUT ROWID"""
    )
    db.execute("CREATE TABLE settings (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID")


@migrations()
def m004_digests(db: Database) -> None:
    """What each scheduled digest sent, so a second run for the same period sends nothing."""
    # One row per period and audience ('agents', 'org:<id>' or an address); the unique key is
    # what makes two overlapping cron runs send once.
    db.execute(
        """
        CREATE TABLE digests_sent (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            period TEXT NOT NULL CHECK (period IN ('daily','weekly')),
            period_start TEXT NOT NULL,
            period_end TEXT NOT NULL,
            audience TEXT NOT NULL,
            recipients TEXT NOT NULL,
            message_id TEXT NOT NULL,
            sent_at TEXT NOT NULL,
            UNIQUE (period, period_start, audience)
        )"""
    )
    # The digest looks up 'asked-missing' events across all cases; without this it scans history.
    db.execute("CREATE INDEX IF NOT EXISTS events_action ON events(action, case_id)")
    db.execute("CREATE INDEX IF NOT EXISTS cases_created ON cases(created_at)")
    db.execute("CREATE INDEX IF NOT EXISTS cases_resolved ON cases(resolved_at)")


@migrations()
def m005_search(db: Database) -> None:
    """Full-text search over message subjects and bodies, kept current by triggers."""
    # No diacritic folding: in Norwegian "på" and "pa", "får" and "far" are different words.
    db.table("messages").enable_fts(
        ["subject", "body"], create_triggers=True, tokenize="unicode61 remove_diacritics 0"
    )


@migrations()
def m003_changes(db: Database) -> None:
    """Planned and urgent changes, the notices sent about them, and monitoring alert pairing."""
    # Times are UTC ISO stamps like everywhere else; the iCalendar UID stays fixed for the
    # change's life while `sequence` counts the versions customers' calendars have seen.
    db.execute(
        """
        CREATE TABLE changes (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            uid TEXT NOT NULL UNIQUE,
            title TEXT NOT NULL,
            description TEXT NOT NULL DEFAULT '',
            impact TEXT NOT NULL DEFAULT '',
            urgent INTEGER NOT NULL DEFAULT 0,
            status TEXT NOT NULL CHECK (status IN ('planned','cancelled','completed')),
            starts_at TEXT NOT NULL,
            ends_at TEXT NOT NULL,
            sequence INTEGER NOT NULL DEFAULT 0,
            created_by TEXT NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )"""
    )
    db.execute("CREATE INDEX changes_window ON changes(status, starts_at)")
    db.execute(
        """
        CREATE TABLE change_organizations (
            change_id INTEGER NOT NULL REFERENCES changes(id),
            organization TEXT NOT NULL,
            PRIMARY KEY (change_id, organization)
        ) WITHOUT ROWID"""
    )
    db.execute("CREATE INDEX change_organizations_org ON change_organizations(organization)")
    # One row per mail: its delivery state is the outbox row's, never a copy that can drift.
    db.execute(
        """
        CREATE TABLE change_notices (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            change_id INTEGER NOT NULL REFERENCES changes(id),
            organization TEXT NOT NULL,
            recipient TEXT NOT NULL,
            role TEXT NOT NULL,
            kind TEXT NOT NULL
                CHECK (kind IN ('notice','urgent','update','cancel','reminder','complete')),
            sequence INTEGER NOT NULL,
            message_id TEXT NOT NULL UNIQUE REFERENCES outbox(message_id),
            created_at TEXT NOT NULL,
            alerted_at TEXT
        )"""
    )
    db.execute("CREATE INDEX change_notices_change ON change_notices(change_id, recipient)")
    # A change's history; `message` links replies and expected alerts (messages.id) to it.
    db.execute(
        """
        CREATE TABLE change_events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            change_id INTEGER NOT NULL REFERENCES changes(id),
            message INTEGER REFERENCES messages(id),
            at TEXT NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            detail TEXT NOT NULL DEFAULT ''
        )"""
    )
    db.execute("CREATE INDEX change_events_change ON change_events(change_id, id)")
    # NAV's History-ID is the same on a down mail and its up mail: the pairing key.
    db.execute(
        """
        CREATE TABLE monitoring_alerts (
            history_id TEXT PRIMARY KEY,
            device TEXT NOT NULL,
            organization TEXT NOT NULL,
            event_type TEXT NOT NULL DEFAULT '',
            case_id INTEGER REFERENCES cases(id),
            change_id INTEGER REFERENCES changes(id),
            started_at TEXT NOT NULL,
            ended_at TEXT
        ) WITHOUT ROWID"""
    )
    db.execute("CREATE INDEX monitoring_alerts_device ON monitoring_alerts(device, ended_at)")


@migrations()
def m007_outbox_queue(db: Database) -> None:
    """An index of the queued outbox rows alone, for the sender's "what is due" query."""
    # The outbox keeps every sent mail. Once ANALYZE has seen that nearly all rows are 'sent',
    # SQLite judged outbox_due too unselective and walked the whole table in id order on every
    # poll (6.5 ms at 100,000 rows, most of the sender's CPU). This index holds only what waits.
    db.execute("CREATE INDEX IF NOT EXISTS outbox_queued ON outbox(id) WHERE status = 'queued'")


@migrations()
def m008_search_in_batches(db: Database) -> None:
    """Full-text indexing in batches behind a watermark, not by a trigger on every insert."""
    # The insert trigger cost the intake ~75 µs per message: FTS5 wrote a new index segment on
    # every transaction and merged them later. gateway/search.py indexes every row above
    # `indexed_upto` in one statement: in the intake every 256 messages, and before any search,
    # so a search never misses a message. Updates and deletes keep the index exact for rows it
    # holds; rows above the watermark are indexed later with whatever they hold by then.
    db.execute("DROP TRIGGER IF EXISTS messages_ai")
    db.execute("DROP TRIGGER IF EXISTS messages_ad")
    db.execute("DROP TRIGGER IF EXISTS messages_au")
    db.execute(
        "CREATE TABLE search_progress (id INTEGER PRIMARY KEY CHECK (id = 1), indexed_upto INTEGER NOT NULL)"
    )
    # Every row there is now went in through the old triggers.
    db.execute("INSERT INTO search_progress (id, indexed_upto) SELECT 1, coalesce(max(id), 0) FROM messages")
    indexed = "old.id <= (SELECT indexed_upto FROM search_progress)"
    db.execute(
        f"""CREATE TRIGGER messages_ad AFTER DELETE ON messages WHEN {indexed} BEGIN
          INSERT INTO messages_fts (messages_fts, rowid, subject, body)
            VALUES ('delete', old.id, old.subject, old.body);
        END"""
    )
    db.execute(
        f"""CREATE TRIGGER messages_au AFTER UPDATE OF subject, body ON messages WHEN {indexed} BEGIN
          INSERT INTO messages_fts (messages_fts, rowid, subject, body)
            VALUES ('delete', old.id, old.subject, old.body);
          INSERT INTO messages_fts (rowid, subject, body) VALUES (new.id, new.subject, new.body);
        END"""
    )
    # Nothing looks messages up by Message-ID (threading has message_refs, de-duplication has
    # dedupe_key); the index only cost a random page write per message.
    db.execute("DROP INDEX IF EXISTS messages_message_id")


@migrations()
def m009_incident_notices(db: Database) -> None:
    """What the customer has been told about each incident monitoring opened, so a notice goes once."""
    # One row per monitoring incident. due_at is when the down is no longer flapping; the *_sent_at
    # columns are set in the transaction that queues the mail, so a restart neither loses nor repeats
    # one. alerts_told counts the case's alerts the customer has heard about (notice, then updates).
    db.execute(
        """
        CREATE TABLE incident_notices (
            case_id INTEGER PRIMARY KEY REFERENCES cases(id),
            organization TEXT NOT NULL,
            detected_at TEXT NOT NULL,
            due_at TEXT NOT NULL,
            ended_at TEXT,
            state TEXT NOT NULL DEFAULT 'due'
                CHECK (state IN ('due', 'notified', 'resolved', 'flapped', 'unreachable')),
            notified_at TEXT,
            resolved_sent_at TEXT,
            alerts_told INTEGER NOT NULL DEFAULT 0,
            technical INTEGER NOT NULL DEFAULT 0
        )"""
    )
    db.execute(
        "CREATE INDEX incident_notices_open ON incident_notices(state) WHERE state IN ('due', 'notified')"
    )
