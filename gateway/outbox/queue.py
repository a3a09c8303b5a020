"""The outbox: mail we send is queued in the case's transaction, then delivered with retries."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import smtplib
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from email.utils import format_datetime
from typing import Any

from gateway.core import clock
from gateway.core.config import Config
from gateway.core.crashpoints import crashpoint
from gateway.mail.screening import LOOP_HEADER
from gateway.outbox import mime
from gateway.outbox.headers import address_line, folded, header_line, message_ids, one_line
from gateway.outbox.journal import SentJournal
from gateway.store.case_rows import record
from gateway.store.database import StorageUnavailable, Store

log = logging.getLogger("gateway.outbox")
# Journal notes applied to the store per transaction; they cost no resend, only a lock wait each.
SENT_BATCH = 50


@dataclass(frozen=True)
class Outgoing:
    """One mail to send; every header we emit is decided here, never in a template."""

    kind: str
    to: list[str]
    subject: str
    body: str
    cc: list[str] = field(default_factory=list)
    in_reply_to: str = ""
    references: list[str] = field(default_factory=list)
    auto_submitted: str = ""
    reply_to: str = ""
    from_name: str = ""
    attachments: list[tuple[str, str, bytes]] = field(default_factory=list)  # name, mime, data
    html: str = ""  # an HTML alternative to the text body, for digests


# Headers of addresses and identifiers: folded at spaces, never encoded.
_STRUCTURED = frozenset({"To", "Cc", "Message-ID", "In-Reply-To", "References", "Reply-To"})


def _head(config: Config, mail: Outgoing, message_id: str) -> bytes:
    """Our header block, built by hand: the email package's policy costs milliseconds per mail
    and folded a long unbroken word into a line the relay refused."""
    service = config.service
    headers = [
        ("To", ", ".join(mail.to)),
        *([("Cc", ", ".join(mail.cc))] if mail.cc else []),
        ("Subject", one_line(mail.subject)),
        ("Date", format_datetime(clock.now())),
        ("Message-ID", message_id),
        *([("In-Reply-To", message_ids([mail.in_reply_to]))] if mail.in_reply_to else []),
        *([("References", message_ids(mail.references[-20:]))] if mail.references else []),
        *([("Reply-To", mail.reply_to)] if mail.reply_to else []),
        *([("Auto-Submitted", mail.auto_submitted)] if mail.auto_submitted else []),
        (LOOP_HEADER, service.address),
        ("MIME-Version", "1.0"),
    ]
    sender = address_line("From", one_line(mail.from_name or service.name), service.address)
    return sender + b"".join(
        folded(name, value) if name in _STRUCTURED else header_line(name, value)
        for name, value in headers
        if value or name not in _STRUCTURED  # an id too long to send leaves its header empty
    )


def compose(config: Config, mail: Outgoing) -> tuple[str, bytes]:
    """Build the bytes of an outgoing mail; returns (Message-ID, raw)."""
    message_id = clock.new_message_id(config.service.domain)
    return message_id, _head(config, mail, message_id) + mime.body(mail.body, mail.html, mail.attachments)


def enqueue(conn: sqlite3.Connection, config: Config, mail: Outgoing, case_id: int | None) -> str:
    """Queue a mail inside the caller's transaction; its Message-ID joins the case's thread."""
    message_id, raw = compose(config, mail)
    now = clock.iso()
    recipients = sorted(set(mail.to + mail.cc))
    conn.execute(
        "INSERT INTO outbox (message_id, case_id, kind, mail_from, recipients, raw, status,"
        " next_attempt_at, created_at) VALUES (?, ?, ?, ?, ?, ?, 'queued', ?, ?)",
        (message_id, case_id, mail.kind, config.service.address, json.dumps(recipients), raw, now, now),
    )
    if case_id is not None:
        conn.execute(
            "INSERT OR IGNORE INTO message_refs (message_id, case_id) VALUES (?, ?)",
            (message_id, case_id),
        )
    return message_id


@dataclass
class FlushReport:
    sent: int = 0
    deferred: int = 0
    failed: int = 0

    def __str__(self) -> str:
        return f"sent {self.sent}, deferred {self.deferred}, failed {self.failed}"


class _Temporary(Exception):
    pass


class _Permanent(Exception):
    pass


class Deliverer:
    """Takes due outbox rows to the relay (or to .eml files when there is no relay)."""

    def __init__(
        self,
        config: Config,
        store: Store,
        on_failed: Callable[[sqlite3.Connection], object] | None = None,
    ) -> None:
        # Called inside the transaction that marks a mail failed for good: the caller wires in who
        # must hear of it (gateway.changes.notices.delivery_failed_hook); the outbox knows no kinds.
        self.on_failed = on_failed
        self.config = config
        self.store = store
        self._smtp: smtplib.SMTP | None = None
        self.journal = SentJournal(config.storage.path)
        # Mail the relay took that not even the journal could note (disk full, read-only):
        # noted before anything else is sent, so a sick store never makes us send it again.
        self._unrecorded: list[tuple[int, str]] = []  # (outbox id, Message-ID)
        self._noted = 0

    def due(self, limit: int = 200) -> list[dict[str, Any]]:
        return self.store.query(
            "SELECT id, message_id, kind, mail_from, recipients, raw, attempts FROM outbox"
            " WHERE status = 'queued' AND next_attempt_at <= ? ORDER BY id LIMIT ?",
            (clock.iso(), limit),
        )

    def flush(self, paused: Callable[[], bool] = lambda: False) -> FlushReport:
        """Deliver everything due now; a relay that is down defers, it never drops.

        `paused` is asked before each mail, so a stopping server ends between two sends.
        """
        report = FlushReport()
        try:
            self._note_sent()
            self._mark_sent()  # notes an earlier run (or a crash) left, before anything is sent
            while not paused():
                rows = self.due()
                if not rows:
                    break
                for row in rows:
                    if paused():
                        break
                    if self._attempt(row, report):
                        # Noted before the next mail goes on this connection: a kill -9
                        # leaves at most this one mail unnoted, to be sent once more.
                        self._unrecorded.append((int(row["id"]), str(row["message_id"])))
                        self._note_sent()
                    if self._noted >= SENT_BATCH:
                        self._mark_sent()
                self._mark_sent()
                if report.deferred and not report.sent:
                    break
        finally:
            self._close()
            self._mark_sent()
        return report

    def _note_sent(self) -> None:
        """Note in the journal what the relay took; on failure it stays in hand and nothing more is sent."""
        while self._unrecorded:
            try:
                self.journal.note(*self._unrecorded[0])
            except StorageUnavailable as exc:
                self.store.write_errors.failed(str(exc))
                raise
            self._unrecorded.pop(0)
            self._noted += 1

    def _mark_sent(self) -> None:
        """Apply the journal's notes to the outbox rows in one transaction, then drop the notes."""
        if self._unrecorded:
            return  # a note that failed comes first: _note_sent raises until it is made
        noted = self.journal.pending()
        if noted:
            with self.store.write() as conn:
                # `status = 'queued'`: notes applied once already (a crash before forget) change nothing.
                conn.executemany(
                    "UPDATE outbox SET status = 'sent', attempts = attempts + 1, last_error = '', sent_at = ?"
                    " WHERE id = ? AND message_id = ? AND status = 'queued'",
                    [(sent_at, row_id, message_id) for row_id, message_id, sent_at in noted],
                )
            self.journal.forget(row_id for row_id, _, _ in noted)
        self._noted = 0

    def _attempt(self, row: dict[str, Any], report: FlushReport) -> bool:
        """Try one mail; True when the relay took it (the caller records that at once)."""
        raw = bytes(row["raw"])
        recipients = json.loads(str(row["recipients"]))
        try:
            self._send(str(row["mail_from"]), recipients, raw, str(row["message_id"]))
        except _Permanent as exc:
            self._mark(row, "failed", str(exc))
            report.failed += 1
            log.warning("outbox %s %s failed: %s", row["id"], row["message_id"], exc)
        except _Temporary as exc:
            self._defer(row, str(exc))
            report.deferred += 1
            log.info("outbox %s %s deferred: %s", row["id"], row["message_id"], exc)
        else:
            crashpoint("after-relay-250")
            report.sent += 1
            return True
        return False

    def _send(self, mail_from: str, recipients: list[str], raw: bytes, message_id: str) -> None:
        relay = self.config.relay
        if relay is None:
            self._write_file(raw, message_id)
            return
        try:
            if self._smtp is None:
                self._smtp = smtplib.SMTP(relay.host, relay.port, timeout=relay.timeout)
            refused = self._smtp.sendmail(mail_from, recipients, raw)
        except smtplib.SMTPRecipientsRefused as exc:
            self._classify(exc.recipients)
            return
        except smtplib.SMTPResponseException as exc:
            self._close()
            error = exc.smtp_error
            reason = (
                f"{exc.smtp_code} {error.decode(errors='replace') if isinstance(error, bytes) else error}"
            )
            if 400 <= exc.smtp_code < 500:
                raise _Temporary(reason) from None
            raise _Permanent(reason) from None
        except (OSError, smtplib.SMTPException) as exc:
            self._close()
            raise _Temporary(f"relay unavailable: {exc}") from None
        if refused:
            # Some recipients took it; the refused ones are recorded, the mail counts as sent.
            log.warning("outbox %s partly refused: %s", message_id, refused)

    @staticmethod
    def _classify(refused: dict[str, tuple[int, bytes]]) -> None:
        codes = [code for code, _ in refused.values()]
        reason = "; ".join(
            f"{rcpt}: {code} {msg.decode(errors='replace')}" for rcpt, (code, msg) in refused.items()
        )
        if all(500 <= c < 600 for c in codes):
            raise _Permanent(reason)
        raise _Temporary(reason)

    def _write_file(self, raw: bytes, message_id: str) -> None:
        folder = self.config.storage.outgoing
        folder.mkdir(parents=True, exist_ok=True)
        name = message_id.strip("<>").replace("/", "_") + ".eml"
        tmp = folder / f".{name}.tmp"
        with open(tmp, "wb") as handle:
            handle.write(raw)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, folder / name)

    def _close(self) -> None:
        if self._smtp is not None:
            with contextlib.suppress(OSError, smtplib.SMTPException):
                self._smtp.quit()
            self._smtp = None

    def _mark(self, row: dict[str, Any], status: str, error: str) -> None:
        with self.store.write() as conn:
            conn.execute(
                "UPDATE outbox SET status = ?, attempts = attempts + 1, last_error = ?,"
                " sent_at = CASE WHEN ? = 'sent' THEN ? ELSE sent_at END WHERE id = ?",
                (status, error, status, clock.iso(), row["id"]),
            )
            if status == "failed" and self.on_failed is not None:
                self.on_failed(conn)  # e.g. a failed change notice must reach an agent at once

    def _defer(self, row: dict[str, Any], error: str) -> None:
        relay = self.config.relay
        attempts = int(row["attempts"]) + 1
        if relay is not None and attempts >= relay.max_attempts:
            self._mark(row, "failed", f"gave up after {attempts} attempts: {error}")
            return
        initial = relay.retry_initial_seconds if relay else 60.0
        ceiling = relay.retry_max_seconds if relay else 3600.0
        delay = min(initial * (2 ** (attempts - 1)), ceiling)
        with self.store.write() as conn:
            conn.execute(
                "UPDATE outbox SET attempts = ?, last_error = ?, next_attempt_at = ? WHERE id = ?",
                (attempts, error, clock.iso(clock.now() + timedelta(seconds=delay)), row["id"]),
            )


class NotFailed(Exception):
    """An outbox row that is not failed: `outbox retry` changes nothing then."""


class NoSuchMail(LookupError):
    """An outbox id that does not exist."""


def retry_failed(store: Store, ids: list[int], actor: str) -> list[dict[str, Any]]:
    """Queue failed mail again, all of it or none, each noted in its case's history.

    For mail the relay refused for good (5xx) after the cause was fixed: a change notice to a
    mailbox that did not exist yet, a relay that rejected us by mistake. The attempts count starts
    over, so the retry gets the full backoff; the old error stays in the history.
    """

    with store.write() as conn:
        rows = []
        for row_id in ids:
            # store.one reads on `conn`, the connection this transaction holds.
            row = store.one(
                "SELECT id, case_id, kind, status, recipients, attempts, last_error FROM outbox WHERE id = ?",
                (row_id,),
            )
            if row is None:
                raise NoSuchMail(f"outbox {row_id}: no such mail")
            if row["status"] != "failed":
                raise NotFailed(f"outbox {row_id}: status is {row['status']}, only failed mail is retried")
            rows.append(row)
        for row in rows:
            conn.execute(
                "UPDATE outbox SET status = 'queued', attempts = 0, next_attempt_at = ? WHERE id = ?",
                (clock.iso(), row["id"]),
            )
            record(
                conn,
                row["case_id"],
                actor,
                "outbox-retry",
                f"outbox {row['id']} ({row['kind']}) to {', '.join(json.loads(row['recipients']))}",
                f"failed after {row['attempts']} attempt(s): {row['last_error']}",
            )
    return rows


def retry_now(store: Store) -> int:
    """Make every deferred mail due at once (an operator's `outbox flush --now`)."""
    try:
        with store.write() as conn:
            cursor = conn.execute(
                "UPDATE outbox SET next_attempt_at = ? WHERE status = 'queued'", (clock.iso(),)
            )
            return cursor.rowcount
    except StorageUnavailable:
        return 0
