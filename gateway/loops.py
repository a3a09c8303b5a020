"""Screening for mail we must never answer: auto-replies, bounces, lists and our own mail."""

from __future__ import annotations

import re

from gateway.message import InboundMessage

LOOP_HEADER = "X-Gateway-Loop"
_DAEMONS = re.compile(r"^(mailer-daemon|postmaster|no-?reply|do-?not-?reply|bounces?)([+\-@]|$)")
_AUTO_SUBJECT = re.compile(
    r"^(auto(matic)?[ _-]?(reply|svar|response)|out of (the )?office|fravær|fraværsmelding|"
    r"ikke (til stede|på kontoret)|abwesenheit|autosvar|undeliver|delivery status notification|"
    r"returned mail|mail delivery (failed|failure))",
    re.I,
)


def automated_reason(message: InboundMessage, service_address: str) -> str | None:
    """Why this message must get no automatic answer, or None when it is from a person."""
    loop_values = [v.strip().lower() for v in message.headers.get(LOOP_HEADER.lower(), [])]
    if service_address in loop_values:
        return "our own loop header"
    if message.from_addr == service_address:
        return "sent from our own address"
    if is_bounce(message):
        return "delivery status notification"
    auto = message.header("auto-submitted").strip().lower()
    if auto and auto != "no":
        return f"Auto-Submitted: {auto}"
    precedence = message.header("precedence").strip().lower()
    if precedence in ("bulk", "junk", "list"):
        return f"Precedence: {precedence}"
    if message.header("list-id") or message.header("list-unsubscribe"):
        return "mailing list"
    for name in ("x-autoreply", "x-autorespond", "x-auto-response-suppress"):
        value = message.header(name).strip().lower()
        # Outlook puts Auto-Response-Suppress on its own auto-replies; "oof"/"all" marks them.
        if value and (name != "x-auto-response-suppress" or value in ("all", "oof", "autoreply")):
            return f"{name}: {value}"
    return_path = message.header("return-path").strip()
    if return_path in ("<>", "") and message.envelope_from == "":
        return "empty return path"
    if return_path == "<>":
        return "empty return path"
    local = message.from_addr.partition("@")[0]
    if _DAEMONS.match(local):
        return f"system sender {message.from_addr}"
    if _AUTO_SUBJECT.match(message.subject):
        return "auto-reply subject"
    return None


def is_bounce(message: InboundMessage) -> bool:
    if message.report is not None:
        report_type = str(message.report.get_param("report-type") or "").lower()
        if report_type == "delivery-status":
            return True
    local = message.from_addr.partition("@")[0]
    return bool(_DAEMONS.match(local)) and bool(
        re.search(
            r"undeliver|delivery|returned|failure|unzustellbar|kunne ikke leveres", message.subject, re.I
        )
    )


def bounced_message_ids(message: InboundMessage) -> list[str]:
    """Message-IDs of our mail that a delivery report names (best effort on broken reports)."""
    ids: list[str] = []
    if message.report is not None:
        for part in message.report.walk():
            if part.get_content_type() in ("message/rfc822", "text/rfc822-headers", "message/rfc822-headers"):
                text = (
                    part.as_string()
                    if not part.is_multipart()
                    else "".join(p.as_string() for p in part.get_payload() if hasattr(p, "as_string"))
                )
                ids.extend(re.findall(r"(?im)^message-id:\s*(<[^>\s]+>)", text))
    ids.extend(re.findall(r"(?im)^message-id:\s*(<[^>\s]+>)", message.body))
    unique: list[str] = []
    for mid in ids:
        if mid not in unique and mid != message.message_id:
            unique.append(mid)
    return unique
