"""Confirming a change order whose sender did not authenticate: a one-time code, answered by reply."""

from __future__ import annotations

import re
import secrets
import sqlite3
from typing import TYPE_CHECKING

from gateway import clock
from gateway.auth import Verdict
from gateway.message import parse
from gateway.rules import decide

if TYPE_CHECKING:
    from gateway.pipeline import Context, Result
    from gateway.runtime import Runtime

# No 0/O or 1/I: people read the code off a phone and type it back.
_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
_CODE = re.compile(r"\b([A-HJ-NP-Z2-9]{4})-([A-HJ-NP-Z2-9]{4})\b")


def new_token() -> str:
    raw = "".join(secrets.choice(_ALPHABET) for _ in range(8))
    return f"{raw[:4]}-{raw[4:]}"


def request(runtime: Runtime, conn: sqlite3.Connection, ctx: Context, key: str, rules_why: str) -> Result:
    """Keep the order aside and ask the real owner of the address to confirm it."""
    from gateway import casework
    from gateway.pipeline import Result

    reason = f"awaiting confirmation: {ctx.verdict.reason}"
    row = casework.store_message(conn, ctx, key, None, "awaiting-confirmation", reason)
    token = new_token()
    conn.execute(
        "INSERT INTO confirmations (token, message, address, created_at) VALUES (?, ?, ?, ?)",
        (token, row, ctx.sender.address, clock.iso()),
    )
    assert ctx.decision.confirm is not None
    context = casework.template_context(runtime, ctx, None) | {"token": token}
    sent = casework.reply(runtime, conn, ctx, None, ctx.decision.confirm, context)
    return Result("held", f"{reason} ({rules_why})", None, ctx.message.message_id, sent)


def confirm(runtime: Runtime, conn: sqlite3.Connection, ctx: Context, key: str) -> Result | None:
    """If this mail returns a pending code from the same address, open the original order now."""
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
    return _open_confirmed(runtime, conn, ctx, key, token, int(original_row))


def _open_confirmed(
    runtime: Runtime, conn: sqlite3.Connection, ctx: Context, key: str, token: str, original_row: int
) -> Result:
    from gateway import casework
    from gateway.pipeline import Context, facts_for

    sha, original_key = conn.execute(
        "SELECT sha256, dedupe_key FROM messages WHERE id = ?", (original_row,)
    ).fetchone()
    raw = get_raw_in(conn, sha)
    original = Context(
        message=parse(raw),
        source="confirmed",
        sender=ctx.sender,
        automated=None,
        verdict=Verdict(True, f"confirmed with code {token} from {ctx.sender.address}"),
    )
    original.decision = decide(runtime.rules(), facts_for(runtime, original))
    why = "; ".join(f"{n}: {w}" for n, w in original.decision.fired)
    result = casework.open_case(runtime, conn, original, original_key, why, existing_row=original_row)
    conn.execute(
        "UPDATE confirmations SET used_at = ?, case_id = ? WHERE token = ?",
        (clock.iso(), result.case_id, token),
    )
    row = casework.store_message(conn, ctx, key, result.case_id, "case", f"confirmation code {token}")
    casework.record(
        conn,
        result.case_id,
        ctx.sender.address,
        "confirmed",
        token,
        "the sender confirmed the order by replying with the code",
        row,
    )
    return result


def get_raw_in(conn: sqlite3.Connection, sha: str) -> bytes:
    row = conn.execute("SELECT raw FROM raw_messages WHERE sha256 = ?", (sha,)).fetchone()
    return bytes(row[0])
