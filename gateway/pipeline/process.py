"""Running the journey: messages in batches, one transaction each, a savepoint and quarantine per message."""

from __future__ import annotations

import logging
import sqlite3
import traceback

from gateway.core import clock, logs
from gateway.core.crashpoints import crashpoint
from gateway.flow.context import Arrival, Context, Result
from gateway.pipeline import steps
from gateway.pipeline.steps import prepare
from gateway.runtime import Runtime
from gateway.store import search
from gateway.store.database import StorageUnavailable, put_raw

log = logging.getLogger("gateway.pipeline")


def process(
    runtime: Runtime,
    raw: bytes,
    source: str,
    envelope_from: str | None = None,
    quarantine_errors: bool = True,
) -> Result:
    """Store one message and act on it; raises StorageUnavailable when the sender must retry."""
    if quarantine_errors:
        return process_batch(runtime, [(raw, source, envelope_from, None)])[0]
    result = _replay(runtime, raw, source, envelope_from)
    logs.message_outcome(source, result)
    return result


# One message for process_batch: raw bytes, the intake it came by, the envelope sender, and on
# SMTP the session's client address and recipients.
Item = tuple[bytes, str, "str | None", "Arrival | None"]


def process_batch(runtime: Runtime, items: list[Item]) -> list[Result]:
    """Several messages in one transaction, so one fsync covers them all (group commit).

    Each message runs inside its own savepoint: one that fails is rolled back alone and quarantined
    in the same transaction. Storage trouble fails the whole batch, and every sender retries.
    """
    prepared: list[Context | Exception] = []
    for raw, source, envelope_from, arrival in items:
        try:
            prepared.append(prepare(runtime, raw, source, envelope_from, arrival))
        except Exception as exc:
            prepared.append(exc)
    try:
        with runtime.store.write() as conn:
            results = [
                _commit_guarded(runtime, conn, ready, raw, source)
                for ready, (raw, source, _, _) in zip(prepared, items, strict=True)
            ]
            _index_for_search(conn)
    except (sqlite3.Error, OSError) as exc:
        raise StorageUnavailable(str(exc)) from exc
    crashpoint("after-commit")
    for result, (_, source, _, _) in zip(results, items, strict=True):
        # One log line per message, whichever intake it came by: what happened to it and why.
        logs.message_outcome(source, result)
    return results


def _index_for_search(conn: sqlite3.Connection) -> None:
    """Index waiting messages, in a savepoint: a broken search index must never stop intake."""
    conn.execute("SAVEPOINT search")
    try:
        search.index_backlog(conn, search.INTAKE_BACKLOG)
    except sqlite3.OperationalError:
        raise  # locked, full, I/O: the store's trouble, temporary for the whole batch
    except sqlite3.DatabaseError as exc:  # e.g. a corrupt FTS index: mail still comes in
        conn.execute("ROLLBACK TO search")
        log.error("search index not updated (mail is stored; rebuild the index): %s", exc)
    conn.execute("RELEASE search")


def _commit_guarded(
    runtime: Runtime, conn: sqlite3.Connection, ready: Context | Exception, raw: bytes, source: str
) -> Result:
    if isinstance(ready, Exception):
        return _quarantine_in(conn, raw, source, ready)
    conn.execute("SAVEPOINT message")
    try:
        result = _commit(runtime, conn, ready)
    except sqlite3.OperationalError:
        raise  # locked, full, read-only: ours and temporary, for the whole batch
    except Exception as exc:
        conn.execute("ROLLBACK TO message")
        result = _quarantine_in(conn, raw, source, exc)
    conn.execute("RELEASE message")
    return result


def _replay(runtime: Runtime, raw: bytes, source: str, envelope_from: str | None) -> Result:
    """A quarantined message once more: errors are reported, not quarantined a second time."""
    try:
        ctx = prepare(runtime, raw, source, envelope_from)
        with runtime.store.write() as conn:
            return _commit(runtime, conn, ctx)
    except StorageUnavailable:
        raise
    except (sqlite3.Error, OSError) as exc:
        raise StorageUnavailable(str(exc)) from exc
    except Exception as exc:  # replaying: report the error, the entry is already in quarantine
        return Result("quarantined", f"{type(exc).__name__}: {exc}"[:500])


def _commit(runtime: Runtime, conn: sqlite3.Connection, ctx: Context) -> Result:
    """One message's steps inside the transaction: all or nothing."""
    return steps.run(runtime, conn, ctx)


def quarantine(runtime: Runtime, raw: bytes, source: str, exc: BaseException) -> Result:
    """Quarantine in a transaction of its own (for intakes that found the problem themselves)."""
    with runtime.store.write() as conn:
        return _quarantine_in(conn, raw, source, exc)


def _quarantine_in(conn: sqlite3.Connection, raw: bytes, source: str, exc: BaseException) -> Result:
    """Keep a message we could not process, whole and with the error, for an operator to replay."""
    error = f"{type(exc).__name__}: {exc}"[:500]
    detail = "".join(traceback.format_exception(exc))[-4000:]
    digest = put_raw(conn, raw)
    cursor = conn.execute(
        "INSERT INTO quarantine (sha256, source, error, detail, created_at) VALUES (?, ?, ?, ?, ?)",
        (digest, source, error, detail, clock.iso()),
    )
    return Result("quarantined", error, None, f"quarantine:{cursor.lastrowid}")
