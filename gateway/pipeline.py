"""The whole journey of one message, from raw bytes to a committed case and queued replies."""

from __future__ import annotations

import json
import sqlite3
import traceback
from dataclasses import dataclass, field

from gateway import agents, casework, change_notices, clock, confirmations, logs, loops, monitoring
from gateway.auth import Verdict, authenticate
from gateway.message import InboundMessage, parse
from gateway.predicates import Facts
from gateway.rules import Decision, decide
from gateway.runtime import Runtime
from gateway.senders import Sender, identify
from gateway.store import StorageUnavailable, put_raw
from gateway.threads import ThreadMatch, find_case


@dataclass(frozen=True)
class Result:
    """How one message ended; `outcome` is what operators and adapters see."""

    outcome: str  # opened | appended | held | refused | ignored | duplicate | quarantined
    reason: str
    case_id: int | None = None
    message_id: str = ""
    replies: list[str] = field(default_factory=list)

    @property
    def accepted(self) -> bool:
        """Every outcome here means the raw bytes are durably stored."""
        return True


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
    result = _process(runtime, raw, source, envelope_from, quarantine_errors)
    # One log line per message, whichever intake it came by: what happened to it and why.
    logs.message_outcome(source, result)
    return result


def _process(
    runtime: Runtime, raw: bytes, source: str, envelope_from: str | None, quarantine_errors: bool
) -> Result:
    try:
        message = parse(raw, envelope_from)
        registry = runtime.registry()
        sender = identify(message.from_addr, message.from_name, registry)
        verdict = check_sender(runtime, message, source, sender)
        if sender.kind == "agent" and not verdict.authenticated and runtime.config.auth.require_for_agents:
            # An agent's address without proof is treated like any stranger's: held, not obeyed.
            sender = Sender(sender.address, sender.name, "unknown")
        automated = loops.automated_reason(message, runtime.config.service.address)
        ctx = Context(message=message, source=source, sender=sender, automated=automated, verdict=verdict)
        with runtime.store.write() as conn:
            return _commit(runtime, conn, ctx)
    except StorageUnavailable:
        raise
    except (sqlite3.Error, OSError) as exc:
        raise StorageUnavailable(str(exc)) from exc
    except Exception as exc:  # a poison message must not stop the worker or be lost
        if not quarantine_errors:
            return Result("quarantined", f"{type(exc).__name__}: {exc}"[:500])
        return quarantine(runtime, raw, source, exc)


def _commit(runtime: Runtime, conn: sqlite3.Connection, ctx: Context) -> Result:
    """One transaction: de-duplicate, thread, decide, act. All or nothing."""
    message = ctx.message
    key = message.message_id or f"sha256:{message.sha256}"
    earlier = conn.execute("SELECT case_id FROM messages WHERE dedupe_key = ?", (key,)).fetchone()
    if earlier is not None:
        return Result("duplicate", f"already stored as {key}", earlier[0], message.message_id)
    put_raw(conn, message.raw)
    if monitoring.is_alert(message, runtime.config.monitoring.senders):  # NAV mail: paired by device and history id, never answered
        return monitoring.handle(runtime, conn, ctx, key)
    if ctx.automated is None:
        confirmed = confirmations.confirm(runtime, conn, ctx, key)
        if confirmed is not None:
            return confirmed
    prefix = runtime.config.service.case_prefix
    ctx.thread = agents.thread_by_address(runtime, conn, message.to + message.cc) or find_case(
        conn, message, ctx.sender, prefix
    )
    if ctx.thread.case_id is None and (reply := change_notices.take_reply(runtime, conn, ctx, key)):
        return reply
    facts = Facts(
        message=message,
        sender=ctx.sender,
        case_state=ctx.thread.status,
        authenticated=ctx.verdict.authenticated,
        automated=ctx.automated is not None,
        open_hours=runtime.is_open(clock.now()),
    )
    ctx.decision = decide(runtime.rules(), facts)
    return casework.act(runtime, conn, ctx, key)


def check_sender(runtime: Runtime, message: InboundMessage, source: str, sender: Sender) -> Verdict:
    """Check the sender only where it matters: agents and those who may order changes."""
    if sender.kind != "agent" and "technical" not in sender.roles:
        return Verdict(False, "not checked: sender has no privileged role")
    auth = runtime.config.auth
    return authenticate(message, source, auth.authserv_id, auth.verify_dkim, runtime.txt_lookup)


def quarantine(runtime: Runtime, raw: bytes, source: str, exc: BaseException) -> Result:
    """Keep a message we could not process, whole and with the error, for an operator to replay."""
    error = f"{type(exc).__name__}: {exc}"[:500]
    detail = "".join(traceback.format_exception(exc))[-4000:]
    with runtime.store.write() as conn:
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
