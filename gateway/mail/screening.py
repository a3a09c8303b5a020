"""Screening for mail we must never answer: auto-replies, reports, bounces, lists and our own mail."""

from __future__ import annotations

import re
from email.message import Message

from gateway.mail.message import InboundMessage

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
    if message.report is not None:
        # Read receipts (RFC 8098), abuse reports (RFC 5965) and any other machine report.
        return f"automatic report ({_report_type(message.report) or 'no report-type'})"
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


_STATUS_TYPES = ("message/delivery-status", "message/global-delivery-status")
_RETURNED_TYPES = (
    "message/rfc822",
    "message/global",
    "text/rfc822-headers",
    "message/rfc822-headers",
    "message/global-headers",
)
_MESSAGE_ID = re.compile(r"(?im)^message-id:\s*(<[\x21-\x3b\x3d\x3f-\x7e]+>)")
_ACTION = re.compile(r"(?im)^action:\s*([a-z-]+)")
_STATUS = re.compile(r"(?im)^status:\s*([245])\.")
_NOT_FAILED = ("delayed", "delivered", "relayed", "expanded")
# Plain-text warnings from mail servers that have not given up yet.
_DELAY_SUBJECT = re.compile(r"delay|warning|forsinket|verzögert|still trying|retrying", re.I)


def is_bounce(message: InboundMessage) -> bool:
    """A delivery status notification: a report (RFC 3464), or a mail server's plain-text bounce."""
    report = message.report
    if report is not None and (_report_type(report) == "delivery-status" or _parts(report, _STATUS_TYPES)):
        return True
    local = message.from_addr.partition("@")[0]
    return bool(_DAEMONS.match(local)) and bool(
        re.search(
            r"undeliver|delivery|returned|failure|unzustellbar|kunne ikke leveres", message.subject, re.I
        )
    )


def bounced_message_ids(message: InboundMessage) -> list[str]:
    """Message-IDs that a failure report says could not be delivered; none for delays or successes.

    Best effort on broken reports: the returned message's own Message-ID when the report
    has a readable message/rfc822 or text/rfc822-headers part, else any Message-ID line in
    the text (plain-text bounces quote the returned headers there).
    """
    if not is_bounce(message):
        return []
    if message.report is not None:
        if not _delivery_failed(message.report):
            return []
        ids = _returned_ids(message.report)
    elif _DELAY_SUBJECT.search(message.subject):
        return []
    else:
        ids = []
    if not ids:
        ids = _MESSAGE_ID.findall(message.body)
    unique: list[str] = []
    for mid in ids:
        if mid not in unique and mid != message.message_id:
            unique.append(mid)
    return unique


def _report_type(report: Message) -> str:
    return str(report.get_param("report-type") or "").strip().lower()


def _parts(report: Message, types: tuple[str, ...]) -> list[Message]:
    """Parts of the given types, not looking inside them (a returned mail has parts of its own)."""
    found: list[Message] = []
    pending = [report]
    while pending:
        part = pending.pop()
        if part is not report and part.get_content_type() in types:
            found.append(part)
        elif isinstance(children := part.get_payload(), list):
            pending.extend(child for child in reversed(children) if isinstance(child, Message))
    return found


def _text(part: Message) -> str:
    """A part's content as text, whether the parser made it sub-messages, a string or encoded bytes."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return "\n\n".join(
            "\n".join(f"{name}: {value}" for name, value in block.items())
            for block in payload
            if isinstance(block, Message)
        )
    data = part.get_payload(decode=True)
    return data.decode("utf-8", "replace") if isinstance(data, bytes) else str(payload)


def _delivery_failed(report: Message) -> bool:
    """What the report's Action (else Status) fields say; a report we cannot read counts as failed."""
    fields = "\n".join(_text(part) for part in _parts(report, _STATUS_TYPES))
    actions = {action.lower() for action in _ACTION.findall(fields)}
    if "failed" in actions:
        return True
    if actions & set(_NOT_FAILED):
        return False
    classes = _STATUS.findall(fields)
    return "5" in classes or not classes


def _returned_ids(report: Message) -> list[str]:
    """The Message-ID of each returned message (or its returned headers), not of mail it quotes."""
    ids: list[str] = []
    for part in _parts(report, _RETURNED_TYPES):
        payload = part.get_payload()
        if isinstance(payload, list):
            for returned in payload:
                if isinstance(returned, Message):
                    ids.extend(_MESSAGE_ID.findall(_header_block(returned)))
        else:
            text = _text(part)
            ids.extend(_MESSAGE_ID.findall(re.split(r"\r?\n\r?\n", text, maxsplit=1)[0]))
    return ids


def _header_block(returned: Message) -> str:
    return "\n".join(f"{name}: {value}" for name, value in returned.items())
