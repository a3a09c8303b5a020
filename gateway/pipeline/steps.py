"""The journey of one message, step by step: the order below is the order mail is handled in."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from gateway.cases import casework, escalation, messages, threads
from gateway.changes import confirmations
from gateway.changes import notices as change_notices
from gateway.directory.who_wrote import Sender, identify
from gateway.flow.context import Arrival, Context, Result, facts_for
from gateway.incidents import monitoring
from gateway.mail import screening
from gateway.mail.auth import Verdict, authenticate
from gateway.mail.message import InboundMessage, parse
from gateway.mail.quoting import strip_quoted
from gateway.rules.engine import decide
from gateway.rules.intent import read_mail
from gateway.runtime import Runtime

# A step inside the transaction: it may change the context, and a Result ends the journey.
Step = Callable[[Runtime, sqlite3.Connection, Context], "Result | None"]


def prepare(
    runtime: Runtime, raw: bytes, source: str, envelope_from: str | None, arrival: Arrival | None = None
) -> Context:
    """Everything that needs no database, before the transaction: parse, identify, check, screen, read."""
    message = parse(raw, envelope_from)
    sender = identify(message.from_addr, message.from_name, runtime.registry())
    verdict = check_sender(runtime, message, source, sender)
    if sender.kind == "agent" and not verdict.authenticated and runtime.config.auth.require_for_agents:
        # An agent's address without proof is treated like any stranger's: held, not obeyed.
        sender = Sender(sender.address, sender.name, "unknown")
        unproven = f"agent mail not authenticated: {verdict.reason}"
    else:
        unproven = None
    automated = screening.automated_reason(message, runtime.config.service.address)
    # What the mail asks for, from its own words only: separate from who wrote it and from the topic.
    intent = read_mail(runtime.vocabulary, message.subject, message.body)
    # Reading a stranger's text happens here, before the transaction, bounded in size and time:
    # while it runs, no lock is held that other mail would wait on.
    new_body = strip_quoted(message.body, message.subject)
    analysis = escalation.analyse(
        message.subject, new_body, message.attachments, sender, runtime.config.service.analysis_seconds
    )
    return Context(
        message=message,
        source=source,
        sender=sender,
        automated=automated,
        verdict=verdict,
        arrival=arrival,
        intent=intent,
        unproven_agent=unproven,
        new_body=new_body,
        analysis=analysis,
    )


def check_sender(runtime: Runtime, message: InboundMessage, source: str, sender: Sender) -> Verdict:
    """Check the sender only where it matters: agents, those who may order changes, and monitoring."""
    monitoring = message.from_addr in runtime.config.monitoring.senders
    if sender.kind != "agent" and "technical" not in sender.roles and not monitoring:
        return Verdict(False, "not checked: sender has no privileged role")
    auth = runtime.config.auth
    return authenticate(message, source, auth.authserv_id, auth.verify_dkim, runtime.txt_lookup)


def apply_rules(runtime: Runtime, conn: sqlite3.Connection, ctx: Context) -> None:
    """rules/*.toml over what is known of the message: category, priority, replies, hold, refuse."""
    ctx.decision = decide(runtime.rules(), facts_for(runtime, ctx))


# Inside one transaction, in this order; the first step that returns a Result ends the journey.
STEPS: tuple[Step, ...] = (
    messages.deduplicate,  # the same Message-ID (else bytes) once; the raw bytes kept
    monitoring.take_alert,  # NAV alerts pair with incidents, never answered
    confirmations.take_code,  # a returned confirmation code opens the order held for it
    threads.attach,  # which case: reply address, reply headers, subject tag
    change_notices.take_reply,  # a reply to a change notice joins the change
    apply_rules,  # category, priority, replies, hold, refuse, confirm, notify
    casework.keep_automated,  # auto-replies, bounces, lists: stored; bounces fail what they report
    change_notices.alert_on_bounce,  # a bounced change notice reaches an agent
    casework.ignore_automated,  # ... and is never answered
    casework.hold,  # held for an agent to triage
    confirmations.ask,  # an order whose sender is unproven waits for a code
    casework.act,  # refuse, agent's commands and answers, append, or open a case
)


def run(runtime: Runtime, conn: sqlite3.Connection, ctx: Context) -> Result:
    """The steps in order until one returns how the message ended."""
    for step in STEPS:
        result = step(runtime, conn, ctx)
        if result is not None:
            return result
    raise AssertionError("the last step always returns a Result")
