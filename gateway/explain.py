"""`gateway rules explain`: what the rules would do with a message, without storing or sending."""

from __future__ import annotations

from typing import Any

from gateway import clock, loops
from gateway.message import parse
from gateway.pipeline import check_sender
from gateway.predicates import Facts
from gateway.rules import decide
from gateway.runtime import Runtime
from gateway.senders import identify
from gateway.threads import find_case


def explain(runtime: Runtime, raw: bytes) -> dict[str, Any]:
    message = parse(raw)
    sender = identify(message.from_addr, message.from_name, runtime.registry())
    verdict = check_sender(runtime, message, "explain", sender)
    automated = loops.automated_reason(message, runtime.config.service.address)
    thread = find_case(runtime.store.conn, message, sender, runtime.config.service.case_prefix)
    facts = Facts(
        message=message,
        sender=sender,
        case_state=thread.status,
        authenticated=verdict.authenticated,
        automated=automated is not None,
        open_hours=runtime.is_open(clock.now()),
    )
    decision = decide(runtime.rules(), facts)
    lines = [
        f"from:      {message.from_addr or '(none)'} ({sender.kind}"
        f"{', ' + sender.organization.id if sender.organization else ''}"
        f"{', roles ' + ', '.join(sender.role_names) if sender.roles else ''})",
        f"subject:   {message.subject}",
        f"automated: {automated or 'no'}",
        f"auth:      {'yes' if verdict.authenticated else 'no'} ({verdict.reason})",
        f"thread:    {thread.reason}" + (f" -> case {thread.case_id}" if thread.case_id else ""),
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
        verb = "appended to case" if thread.case_id else "opens a new case"
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
        "thread": {"case_id": thread.case_id, "reason": thread.reason},
        "fired": [{"rule": n, "why": w} for n, w in decision.fired],
        "category": decision.category,
        "priority": decision.priority,
        "hold": decision.hold,
        "refuse": decision.refuse,
        "replies": decision.replies,
        "notify": decision.notify,
        "lines": lines,
    }
