"""`gateway rules explain`: what the rules would do with a message, without storing or sending."""

from __future__ import annotations

from typing import Any

from gateway.cases import threads
from gateway.flow.context import facts_for
from gateway.pipeline.steps import prepare
from gateway.rules.engine import decide
from gateway.runtime import Runtime


def explain(runtime: Runtime, raw: bytes) -> dict[str, Any]:
    # The pipeline's own steps, minus the transaction: what is shown is what would happen.
    ctx = prepare(runtime, raw, "explain", None)
    threads.attach(runtime, runtime.store.conn, ctx)
    message, sender, verdict, automated = ctx.message, ctx.sender, ctx.verdict, ctx.automated
    decision = decide(runtime.rules(), facts_for(runtime, ctx))
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
        "rules fired:",
        *[f"  - {name}: {why}" for name, why in decision.fired],
        f"outcome:   category={decision.category} priority={decision.priority} queue={decision.queue}",
    ]
    if automated:
        lines.append("           stored only; automated mail is never answered")
    elif decision.hold:
        lines.append(f"           held for an agent ({decision.hold})")
    elif decision.refuse:
        lines.append(f"           no case; answered with '{decision.refuse}'")
    else:
        verb = "appended to case" if thread_match.case_id else "opens a new case"
        lines.append(
            f"           {verb}; replies: {', '.join(decision.replies) or 'none'};"
            f" notify: {', '.join(decision.notify) or 'none'}"
        )
    return {
        "sender": {
            "address": sender.address,
            "kind": sender.kind,
            "roles": sender.role_names,
            "organization": sender.organization.id if sender.organization else None,
        },
        "automated": automated,
        "thread": {"case_id": thread_match.case_id, "reason": thread_match.reason},
        "fired": [{"rule": n, "why": w} for n, w in decision.fired],
        "category": decision.category,
        "priority": decision.priority,
        "hold": decision.hold,
        "refuse": decision.refuse,
        "replies": decision.replies,
        "notify": decision.notify,
        "lines": lines,
    }
