"""One message's state as it moves through the pipeline steps, and how it ended."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from gateway.core import clock
from gateway.directory.who_wrote import Sender
from gateway.mail.auth import Verdict
from gateway.mail.message import InboundMessage
from gateway.rules.engine import Decision
from gateway.rules.intent import Intent
from gateway.rules.predicates import Facts
from gateway.runtime import Runtime


@dataclass(frozen=True)
class Result:
    """How one message ended; `outcome` is what operators and adapters see."""

    outcome: str  # opened | appended | held | refused | ignored | duplicate | quarantined
    reason: str
    case_id: int | None = None
    message_id: str = ""
    replies: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Arrival:
    """What the SMTP session told us beside the message: the client's IP address and RCPT TO."""

    client_address: str
    recipients: tuple[str, ...]


@dataclass(frozen=True)
class ThreadMatch:
    """The case a message belongs to, if any, and why."""

    case_id: int | None
    reason: str
    status: str = "none"


@dataclass(frozen=True)
class Analysis:
    """What reading a message's new text found, done before the transaction (gateway.cases.escalation)."""

    # Escalation fields the text supplies, each with a short quote of what showed it.
    present: dict[str, str] = field(default_factory=dict)
    # The fields this text makes required (the conditional ones only when it mentions their topic).
    needed: tuple[str, ...] = ()
    # Why the reading stopped short (the time budget ran out); empty when it is complete.
    skipped: str = ""


@dataclass
class Context:
    """One message's state as it moves through the steps."""

    message: InboundMessage
    source: str
    sender: Sender
    automated: str | None
    verdict: Verdict = field(default_factory=lambda: Verdict(False, "not checked"))
    # SMTP intake only: the session's client and recipients (the pipe and IMAP cannot vouch for them).
    arrival: Arrival | None = None
    # What the mail asks for, weighed from its own words (gateway.rules.intent).
    intent: Intent = field(default_factory=Intent)
    thread: ThreadMatch = field(default_factory=lambda: ThreadMatch(None, "not threaded yet"))
    decision: Decision = field(default_factory=Decision)
    # The de-duplication key: the Message-ID, else the SHA-256 of the raw bytes.
    key: str = ""
    # The stored row of this message, once a step has stored it.
    row: int | None = None
    # Why mail from an agent's address is not the agent's (no proof): the held reason says so.
    unproven_agent: str | None = None
    # The body without quoted history (gateway.mail.quoting), cut once before the transaction.
    new_body: str | None = None
    # The escalation analysis of the new text; None when nothing analysed this message beforehand.
    analysis: Analysis | None = None

    @property
    def rules_why(self) -> str:
        """Every rule that fired and why, for the case history and the held reason."""
        return "; ".join(f"{name}: {why}" for name, why in self.decision.fired) or "no rule fired"


def facts_for(runtime: Runtime, ctx: Context) -> Facts:
    """What the rules may look at, computed once per message."""
    return Facts(
        message=ctx.message,
        sender=ctx.sender,
        case_state=ctx.thread.status,
        authenticated=ctx.verdict.authenticated,
        automated=ctx.automated is not None,
        open_hours=runtime.is_open(clock.now()),
        intent=ctx.intent,
        # The quote was cut before the transaction: the rules read it, not cut it again.
        _new={} if ctx.new_body is None else {"body": ctx.new_body},
    )


def describe(result: Result) -> str:
    """A result as one JSON object, as `gateway deliver` prints it."""
    return json.dumps(
        {
            "outcome": result.outcome,
            "case": result.case_id,
            "message_id": result.message_id,
            "reason": result.reason,
        },
        ensure_ascii=False,
    )
