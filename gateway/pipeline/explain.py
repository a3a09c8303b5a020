"""`gateway rules explain`: what the rules would do with a message, without storing or sending."""

from __future__ import annotations

from typing import Any

from gateway.cases import threads
from gateway.changes import confirmations
from gateway.flow.context import Context, facts_for
from gateway.pipeline.steps import prepare
from gateway.rules.engine import Decision, decide
from gateway.rules.intent import Intent
from gateway.runtime import Runtime


def explain(runtime: Runtime, raw: bytes) -> dict[str, Any]:
    # The pipeline's own steps, minus the transaction: what is shown is what would happen.
    ctx = prepare(runtime, raw, "explain", None)
    threads.attach(runtime, runtime.store.conn, ctx)
    message, sender, verdict, automated = ctx.message, ctx.sender, ctx.verdict, ctx.automated
    decision = ctx.decision = decide(runtime.rules(), facts_for(runtime, ctx))
    confirmations.should_ask(ctx)  # drops a confirmation that would replace incident handling
    thread_match = ctx.thread
    lines = [
        f"from:      {message.from_addr or '(none)'} ({sender.kind}"
        f"{', ' + sender.organization.id if sender.organization else ''}"
        f"{', roles ' + ', '.join(sender.role_names) if sender.roles else ''})",
        f"subject:   {message.subject}",
        f"automated: {automated or 'no'}",
        f"auth:      {'yes' if verdict.authenticated else 'no'} ({verdict.reason})",
        f"thread:    {thread_match.reason}"
        + (f" -> case {thread_match.case_id}" if thread_match.case_id else ""),
        f"defects:   {', '.join(message.defects) or 'none'}",
        f"intent:    {ctx.intent.summary()}",
        "signals:",
        *[f"  - {f.signal} ({f.votes} {f.weight:+g}): {', '.join(f.words)}" for f in ctx.intent.fired],
        "rules fired:",
        *[f"  - {name}: {why}" for name, why in decision.fired],
        f"outcome:   category={decision.category} priority={decision.priority} queue={decision.queue}",
        *_what_happens(ctx, decision),
        *[f"flag:      {flag}" for flag in decision.flags],
    ]
    return {
        "sender": {
            "address": sender.address,
            "kind": sender.kind,
            "roles": sender.role_names,
            "organization": sender.organization.id if sender.organization else None,
        },
        "automated": automated,
        "thread": {"case_id": thread_match.case_id, "reason": thread_match.reason},
        "intent": intent_json(ctx.intent),
        "fired": [{"rule": n, "why": w} for n, w in decision.fired],
        "category": decision.category,
        "priority": decision.priority,
        "hold": decision.hold,
        "refuse": decision.refuse,
        "confirm": decision.confirm,
        "replies": decision.replies,
        "notify": decision.notify,
        "flags": decision.flags,
        "lines": lines,
    }


def _what_happens(ctx: Context, decision: Decision) -> list[str]:
    """The action the pipeline's steps would take, in the order they would take it."""
    if ctx.automated:
        return ["           stored only; automated mail is never answered"]
    if decision.hold:
        return [f"           held for an agent ({decision.hold})"]
    if decision.confirm:
        return [f"           held for confirmation ('{decision.confirm}'); no case until confirmed"]
    if decision.refuse:
        return [f"           no case; answered with '{decision.refuse}'"]
    verb = "appended to case" if ctx.thread.case_id else "opens a new case"
    return [
        f"           {verb}; replies: {', '.join(decision.replies) or 'none'};"
        f" notify: {', '.join(decision.notify) or 'none'}"
    ]


def intent_json(intent: Intent) -> dict[str, Any]:
    """The intent as `rules explain --json` shows it: the category, how sure, the scores and why."""
    return {
        "category": intent.category,
        "clear": intent.clear,
        "scope": intent.scope,
        "severity": intent.severity,
        "outage": intent.outage,
        "also_request": intent.also_request,
        "scores": intent.scores,
        "signals": [
            {"signal": f.signal, "votes": f.votes, "weight": f.weight, "words": list(f.words)}
            for f in intent.fired
        ],
    }
