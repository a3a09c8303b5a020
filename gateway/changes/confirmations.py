"""Confirming a change order whose sender did not authenticate: a one-time code, answered by reply."""

from __future__ import annotations

import re
import secrets
import sqlite3
from datetime import timedelta
from typing import TYPE_CHECKING

from gateway.cases import casework
from gateway.cases.messages import store_message
from gateway.core import clock
from gateway.flow.context import Context, Result, facts_for
from gateway.mail.auth import Verdict
from gateway.mail.message import parse
from gateway.rules.engine import decide
from gateway.rules.intent import read_mail
from gateway.store.case_rows import record
from gateway.store.database import get_raw

if TYPE_CHECKING:
    from gateway.runtime import Runtime

# No 0/O or 1/I: people read the code off a phone and type it back.
_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
_CODE = re.compile(r"\b([A-HJ-NP-Z2-9]{4})-([A-HJ-NP-Z2-9]{4})\b")


def new_token() -> str:
    raw = "".join(secrets.choice(_ALPHABET) for _ in range(8))
    return f"{raw[:4]}-{raw[4:]}"


def should_ask(ctx: Context) -> bool:
    """A confirmation request never replaces incident handling: a fault report opens its case."""
    if ctx.decision.confirm is None:
        return False
    if ctx.decision.category == "incident" or ctx.intent.category == "report":
        ctx.decision.confirm = None
        note = "mulig endringsbestilling i en feilmelding; ikke holdt for bekreftelse"
        if note not in ctx.decision.flags:
            ctx.decision.flags.append(note)
        return False
    return True


def ask(runtime: Runtime, conn: sqlite3.Connection, ctx: Context) -> Result | None:
    """A rule asked for confirmation: keep the order aside and ask the real owner of the address."""
    if not should_ask(ctx):
        return None
    reason = f"awaiting confirmation: {ctx.verdict.reason}"
    # Codes have their own hourly budget: forged mail that used up the receipts must not keep the
    # real owner from confirming. Past it no code goes out and the order is held for an agent.
    hour_ago = clock.iso(clock.now() - timedelta(hours=1))
    (asked,) = conn.execute(
        "SELECT count(*) FROM confirmations WHERE address = ? AND created_at > ?",
        (ctx.sender.address, hour_ago),
    ).fetchone()
    if asked >= runtime.config.service.confirmation_limit_per_hour:
        why = f"no code sent: {ctx.sender.address} already had {asked} confirmation codes in the last hour"
        store_message(conn, ctx, ctx.key, None, "held", f"{reason}; {why}")
        record(conn, None, "gateway", "reply-suppressed", str(ctx.decision.confirm), why)
        return Result("held", f"{reason}; {why}", None, ctx.message.message_id)
    row = store_message(conn, ctx, ctx.key, None, "awaiting-confirmation", reason)
    token = new_token()
    conn.execute(
        "INSERT INTO confirmations (token, message, address, created_at) VALUES (?, ?, ?, ?)",
        (token, row, ctx.sender.address, clock.iso()),
    )
    context = casework.template_context(runtime, ctx, None) | {"token": token}
    sent = casework.reply(runtime, conn, ctx, None, str(ctx.decision.confirm), context, budgeted=False)
    return Result("held", f"{reason} ({ctx.rules_why})", None, ctx.message.message_id, sent)


def take_code(runtime: Runtime, conn: sqlite3.Connection, ctx: Context) -> Result | None:
    """A reply that returns a pending code from the same address opens the order held for it."""
    if ctx.automated is not None:
        return None
    codes = {"-".join(m) for m in _CODE.findall(f"{ctx.message.subject}\n{ctx.message.body}")}
    if not codes or not ctx.sender.address:
        return None
    placeholders = ",".join("?" * len(codes))
    found = conn.execute(
        f"SELECT token, message FROM confirmations WHERE token IN ({placeholders})"
        " AND address = ? AND used_at IS NULL",
        (*codes, ctx.sender.address),
    ).fetchone()
    if found is None:
        return None
    token, original_row = found
    return _open_held_order(runtime, conn, ctx, token, int(original_row))


def _open_held_order(
    runtime: Runtime, conn: sqlite3.Connection, ctx: Context, token: str, original_row: int
) -> Result:
    """The held order is decided again as authenticated, by the code, and opens its case."""
    sha, original_key = conn.execute(
        "SELECT sha256, dedupe_key FROM messages WHERE id = ?", (original_row,)
    ).fetchone()
    raw = get_raw(conn, sha)
    assert raw is not None  # kept with the held message
    message = parse(raw)
    original = Context(
        message=message,
        source="confirmed",
        sender=ctx.sender,
        automated=None,
        verdict=Verdict(True, f"confirmed with code {token} from {ctx.sender.address}"),
        intent=read_mail(runtime.vocabulary, message.subject, message.body),
    )
    original.decision = decide(runtime.rules(), facts_for(runtime, original))
    why = original.rules_why
    result = casework.open_case(runtime, conn, original, original_key, why, existing_row=original_row)
    conn.execute(
        "UPDATE confirmations SET used_at = ?, case_id = ? WHERE token = ?",
        (clock.iso(), result.case_id, token),
    )
    row = store_message(conn, ctx, ctx.key, result.case_id, "case", f"confirmation code {token}")
    record(
        conn,
        result.case_id,
        ctx.sender.address,
        "confirmed",
        token,
        "the sender confirmed the order by replying with the code",
        row,
    )
    return result
