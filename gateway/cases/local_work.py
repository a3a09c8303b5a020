"""Local work: an agent asks the customer's Lokalt supportpunkt to patch a socket or swap a part."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.cases.commands import Applied
from gateway.core import clock
from gateway.directory.registry import Agent
from gateway.outbox.queue import Outgoing, enqueue
from gateway.store.case_rows import existing_case, record

if TYPE_CHECKING:
    from gateway.runtime import Runtime

EVENT = "local-work"
# What the history keeps of the request itself; the whole text is in the outbox row.
DETAIL_CHARS = 500


@dataclass
class Requested:
    """What came of one request: sent to whom, or why nothing was sent."""

    case_id: int
    sent_to: list[str] = field(default_factory=list)
    message_id: str = ""
    language: str = ""
    refused: str = ""
    # The same reason as a key (no-organisation, no-local-support, no-text), for mail in any language.
    why: str = ""
    organization: str = ""

    def summary(self) -> str:
        if self.refused:
            return f"local work NOT sent: {self.refused}"
        return f"local work requested from {', '.join(self.sent_to)} ({self.message_id})"

    def applied(self) -> Applied:
        """The request as a line of the agent's confirmation mail."""
        if self.refused:
            return Applied("local-work-failed", old=self.why, new=self.organization)
        return Applied("local-work", new=", ".join(self.sent_to))


def request(
    runtime: Runtime,
    conn: sqlite3.Connection,
    case_id: int,
    agent: Agent,
    text: str,
    reply_to: str,
    row: int | None = None,
) -> Requested:
    """Mail the organisation's Lokalt supportpunkt, in its language, with the tag and a per-case Reply-To.

    No Lokalt supportpunkt (or no organisation on the case) sends nothing and says so: the caller
    tells the agent, and the history keeps the attempt.
    """
    case = existing_case(conn, case_id)
    org = runtime.registry().organizations.get(case["organization"] or "")
    points = sorted({c.email for c in org.contacts_with("local-support")}) if org else []
    outcome = Requested(case_id)
    outcome.organization = org.name if org else ""
    if org is None:
        outcome.why, outcome.refused = (
            "no-organisation",
            "the case belongs to no organisation in the registry",
        )
    elif not points:
        outcome.why, outcome.refused = (
            "no-local-support",
            f"{org.name} has no Lokalt supportpunkt in the registry",
        )
    elif not text.strip():
        outcome.why, outcome.refused = "no-text", "the request has no text"
    if outcome.refused or org is None:
        detail = text.strip()[:DETAIL_CHARS]
        record(conn, case_id, agent.email, "local-work-failed", detail, outcome.refused, row)
        return outcome
    service = runtime.config.service
    context = {
        "service": service, "case": case, "tag": f"{service.case_prefix}#{case_id}",
        "organization": org, "text": text.strip(), "agent": agent,
    }  # fmt: skip
    rendered = runtime.templates.render(org.language, "customer", EVENT, context)
    mail = Outgoing(
        kind=EVENT, to=points, subject=rendered.subject, body=rendered.body, reply_to=reply_to,
        from_name=f"{agent.name}, {service.name}",
    )  # fmt: skip
    outcome.message_id = enqueue(conn, runtime.config, mail, case_id)
    outcome.sent_to, outcome.language = points, org.language
    record(
        conn, case_id, agent.email, "local-work-requested", ", ".join(points),
        f"{outcome.message_id}: {text.strip()[:DETAIL_CHARS]}", row,
    )  # fmt: skip
    conn.execute("UPDATE cases SET updated_at = ? WHERE id = ?", (clock.iso(), case_id))
    return outcome
