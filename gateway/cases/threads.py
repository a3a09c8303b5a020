"""Which case a mail belongs to: reply headers first, then the subject tag if the sender may use it."""

from __future__ import annotations

import re
import sqlite3

from gateway.cases.agents import thread_by_address
from gateway.directory.who_wrote import Sender
from gateway.flow.context import Context, ThreadMatch
from gateway.mail.message import InboundMessage
from gateway.runtime import Runtime

# Reply and forward prefixes in the languages our customers' mail clients speak.
_PREFIX = re.compile(r"^\s*((re|sv|svar|vs|aw|wg|fwd?|fw|tr|rv|antw|vb|ref|odp|res)(\[\d+\])?\s*:\s*)+", re.I)


def tag_pattern(prefix: str) -> re.Pattern[str]:
    return re.compile(rf"\[{re.escape(prefix)}\s*#\s*(\d+)\]", re.I)


def clean_subject(subject: str, prefix: str) -> str:
    """The subject without reply prefixes or our tag, for a new case's title."""
    without_tag = tag_pattern(prefix).sub("", subject)
    stripped = _PREFIX.sub("", without_tag.strip())
    # Prefixes can come back after a tag: "SV: [SSC#1] RE: x".
    return _PREFIX.sub("", stripped).strip() or "(uten emne)"


def may_write(sender: Sender, requester: str, organization: str | None) -> str | None:
    """Why this sender may write to a case, or None: only they can thread into it."""
    if sender.kind == "agent":
        return f"agent {sender.address}"  # agents include 2nd line
    if sender.address == requester:
        return "the requester"
    if sender.kind == "contact" and sender.organization and sender.organization.id == organization:
        return f"a contact of {organization}"
    return None


def find_case(conn: sqlite3.Connection, message: InboundMessage, sender: Sender, prefix: str) -> ThreadMatch:
    """Reply headers, then the subject tag; both only for senders who may write to that case.

    A Message-ID is no secret (it travels in every Cc), so naming one proves nothing about who wrote.
    """
    refused = ""
    for mid in message.thread_ids:
        row = conn.execute(
            "SELECT c.id, c.status, c.requester, c.organization FROM message_refs r"
            " JOIN cases c ON c.id = r.case_id WHERE r.message_id = ?",
            (mid,),
        ).fetchone()
        if row is None:
            continue
        if may_write(sender, row[2], row[3]):
            return ThreadMatch(row[0], f"reply to {mid}", row[1])
        refused = f"reply headers name case {row[0]}, but {sender.address} may not write to it; "
        break
    found = tag_pattern(prefix).search(message.subject)
    if not found:
        return ThreadMatch(None, refused + "no reference to a known case")
    case_id = int(found.group(1))
    row = conn.execute(
        "SELECT id, status, requester, organization FROM cases WHERE id = ?", (case_id,)
    ).fetchone()
    if row is None:
        return ThreadMatch(None, refused + f"tag names case {case_id}, which does not exist")
    why = may_write(sender, row[2], row[3])
    if why is not None:
        return ThreadMatch(case_id, f"subject tag from {why}", row[1])
    return ThreadMatch(
        None, refused + f"subject tag for case {case_id} ignored: {sender.address} may not write to it"
    )


def attach(runtime: Runtime, conn: sqlite3.Connection, ctx: Context) -> None:
    """The case this mail belongs to: per-case reply address, reply headers, then the subject tag."""
    message = ctx.message
    by_address = thread_by_address(runtime, conn, message.to + message.cc)
    ctx.thread = by_address or find_case(conn, message, ctx.sender, runtime.config.service.case_prefix)
