"""The whole journey of one message, from raw bytes to a committed case and queued replies."""

from __future__ import annotations

import json
import logging
import sqlite3
import traceback
from dataclasses import dataclass, field

from gateway import agents, casework, change_notices, clock, confirmations, logs, loops, monitoring, search
from gateway.auth import Verdict, authenticate
from gateway.crashpoints import crashpoint
from gateway.message import InboundMessage, parse
from gateway.predicates import Facts
from gateway.rules import Decision, decide
from gateway.runtime import Runtime
from gateway.senders import Sender, identify
from gateway.store import StorageUnavailable, put_raw
from gateway.threads import ThreadMatch, find_case

log = logging.getLogger("gateway.pipeline")


@dataclass(frozen=True)
class Result:
    """How one message ended; `outcome` is what operators and adapters see."""

    outcome: str  # opened | appended | held | refused | ignored | duplicate | quarantined
    reason: str
    case_id: int | None = None
    message_id: str = ""
    replies: list[str] = field(default_factory=list)


@dataclass
class Context:
    """One message's state as it moves through the steps."""

    message: InboundMessage
    source: str
    sender: Sender
    automated: str | None
    verdict: Verdict = field(default_factory=lambda: Verdict(False, "not checked"))
    thread: ThreadMatch = field(default_factory=lambda: ThreadMatch(None, "not threaded yet"))
    decision: Decision = field(default_factory=Decision)


def process(
    runtime: Runtime,
    raw: bytes,
    source: str,
    envelope_from: str | None = None,
    quarantine_errors: bool = True,
) -> Result:
    """Store one message and act on it; raises StorageUnavailable when the sender must retry."""
    if quarantine_errors:
        return process_batch(runtime, [(raw, source, envelope_from)])[0]
    result = _replay(runtime, raw, source, envelope_from)
    logs.message_outcome(source, result)
    return result


# One message for process_batch: raw bytes, the intake it came by, and the envelope sender.
Item = tuple[bytes, str, "str | None"]


def process_batch(runtime: Runtime, items: list[Item]) -> list[Result]:
    """Several messages in one transaction, so one fsync covers them all (group commit).

    Each message runs inside its own savepoint: one that fails is rolled back alone and quarantined
    in the same transaction. Storage trouble fails the whole batch, and every sender retries.
    """
    prepared: list[Context | Exception] = []
    for raw, source, envelope_from in items:
        try:
            prepared.append(prepare(runtime, raw, source, envelope_from))
        except Exception as exc:
            prepared.append(exc)
    try:
        with runtime.store.write() as conn:
            results = [
                _commit_guarded(runtime, conn, ready, raw, source)
                for ready, (raw, source, _) in zip(prepared, items, strict=True)
            ]
            _index_for_search(conn)
    except (sqlite3.Error, OSError) as exc:
        raise StorageUnavailable(str(exc)) from exc
    crashpoint("after-commit")
    for result, (_, source, _) in zip(results, items, strict=True):
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


def prepare(runtime: Runtime, raw: bytes, source: str, envelope_from: str | None) -> Context:
    """Everything that needs no database: parse, identify, authenticate, screen."""
    message = parse(raw, envelope_from)
    sender = identify(message.from_addr, message.from_name, runtime.registry())
    verdict = check_sender(runtime, message, source, sender)
    if sender.kind == "agent" and not verdict.authenticated and runtime.config.auth.require_for_agents:
        # An agent's address without proof is treated like any stranger's: held, not obeyed.
        sender = Sender(sender.address, sender.name, "unknown")
    automated = loops.automated_reason(message, runtime.config.service.address)
    return Context(message=message, source=source, sender=sender, automated=automated, verdict=verdict)


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
    """One transaction: de-duplicate, thread, decide, act. All or nothing."""
    message = ctx.message
    key = message.message_id or f"sha256:{message.sha256}"
    earlier = conn.execute("SELECT case_id, sha256 FROM messages WHERE dedupe_key = ?", (key,)).fetchone()
    if earlier is not None:
        if (
            earlier[1] != message.sha256
            and not conn.execute("SELECT 1 FROM raw_messages WHERE sha256 = ?", (message.sha256,)).fetchone()
        ):
            # Same Message-ID, other bytes (another route, or a reused id): keep them, act on nothing.
            put_raw(conn, message.raw)
            casework.store_message(conn, ctx, "", earlier[0], "duplicate", f"same Message-ID as {key}")
        return Result("duplicate", f"already stored as {key}", earlier[0], message.message_id)
    put_raw(conn, message.raw)
    # NAV mail: paired by device and history id, never answered.
    if monitoring.is_alert(message, runtime.config.monitoring.senders):
        return monitoring.handle(runtime, conn, ctx, key)
    if ctx.automated is None:
        confirmed = confirmations.confirm(runtime, conn, ctx, key)
        if confirmed is not None:
            return confirmed
    ctx.thread = thread(runtime, conn, ctx)
    if ctx.thread.case_id is None and (reply := change_notices.take_reply(runtime, conn, ctx, key)):
        return reply
    ctx.decision = decide(runtime.rules(), facts_for(runtime, ctx))
    return casework.act(runtime, conn, ctx, key)


def thread(runtime: Runtime, conn: sqlite3.Connection, ctx: Context) -> ThreadMatch:
    """The case this mail belongs to: per-case reply address, reply headers, then the subject tag."""
    message = ctx.message
    by_address = agents.thread_by_address(runtime, conn, message.to + message.cc)
    return by_address or find_case(conn, message, ctx.sender, runtime.config.service.case_prefix)


def facts_for(runtime: Runtime, ctx: Context) -> Facts:
    """What the rules may look at, computed once per message."""
    return Facts(
        message=ctx.message,
        sender=ctx.sender,
        case_state=ctx.thread.status,
        authenticated=ctx.verdict.authenticated,
        automated=ctx.automated is not None,
        open_hours=runtime.is_open(clock.now()),
    )


def check_sender(runtime: Runtime, message: InboundMessage, source: str, sender: Sender) -> Verdict:
    """Check the sender only where it matters: agents and those who may order changes."""
    if sender.kind != "agent" and "technical" not in sender.roles:
        return Verdict(False, "not checked: sender has no privileged role")
    auth = runtime.config.auth
    return authenticate(message, source, auth.authserv_id, auth.verify_dkim, runtime.txt_lookup)


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


def describe(result: Result) -> str:
    return json.dumps(
        {
            "outcome": result.outcome,
            "case": result.case_id,
            "message_id": result.message_id,
            "reason": result.reason,
        },
        ensure_ascii=False,
    )
