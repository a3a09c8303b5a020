"""Parsing: raw bytes to an InboundMessage, tolerant of broken mail, defects recorded not fatal."""

from __future__ import annotations

import email
import email.utils
import hashlib
import re
from dataclasses import dataclass, field
from email.message import Message
from email.policy import compat32

from gateway.core.addresses import parse_mailboxes
from gateway.mail import header_repair, limits
from gateway.mail.limits import MessageTooComplex
from gateway.mail.parts import decode_words, has_raw_bytes, raw_header_text, read_parts

# Printable ASCII only: a Message-ID we keep may go back out in In-Reply-To and References.
_MSGID = re.compile(r"<[\x21-\x3b\x3d\x3f-\x7e]+>")
# C0 and C1 controls and the Unicode line and paragraph separators: anything that could
# end a header line once a value is reused in mail we send. Tab stays (it is whitespace).
_CTRL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]+")
# RFC 5322 unfolding: the line break before folding whitespace goes, the whitespace stays.
_FOLD = re.compile(r"\r?\n(?=[ \t])")
_BOM = b"\xef\xbb\xbf"
_ENCODED_WORD = re.compile(r"=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=")
_PLACEHOLDER = re.compile(r"\x01(\d+)\x01")
_TAGS = re.compile(r"<(script|style)\b.*?</\1>|<[^>]+>", re.S | re.I)
# Charsets Norwegian mail arrives in when the label is missing or wrong, best guess first.
_FALLBACK_CHARSETS = ("utf-8", "cp1252", "iso-8859-15", "iso-8859-1")


@dataclass
class InboundMessage:
    """What the pipeline knows about one received message; raw bytes kept exactly."""

    raw: bytes
    sha256: str
    message_id: str
    from_addr: str
    from_name: str
    from_count: int
    to: list[str]
    cc: list[str]
    subject: str
    body: str
    in_reply_to: list[str]
    references: list[str]
    attachments: list[str]
    headers: dict[str, list[str]]
    content_type: str
    defects: list[str] = field(default_factory=list)
    envelope_from: str | None = None
    report: Message | None = None

    def header(self, name: str) -> str:
        values = self.headers.get(name.lower())
        return values[0] if values else ""

    @property
    def thread_ids(self) -> list[str]:
        """Message-IDs this mail answers, nearest first."""
        seen: list[str] = []
        for mid in [*self.in_reply_to, *reversed(self.references)]:
            if mid not in seen:
                seen.append(mid)
        return seen


def decode_text(value: str | bytes | None, defects: list[str] | None = None) -> str:
    """Decode an RFC 2047 header value to one clean line, whatever charset it claims."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "surrogateescape")
    text = decode_words(_FOLD.sub("", value), defects)
    # Folded or injected CR/LF never survive into a value we may reuse in a header.
    return _CTRL.sub(" ", text).strip()


def _header_map(msg: Message) -> dict[str, list[str]]:
    headers: dict[str, list[str]] = {}
    # raw_items: for 8-bit header bytes, items() would hand back a Header that prints as U+FFFD.
    for name, value in msg.raw_items():
        text = value if isinstance(value, str) else str(value)
        if has_raw_bytes(text):
            text = raw_header_text(text.encode("utf-8", "surrogateescape"))
        headers.setdefault(name.lower(), []).append(text)
    return headers


def _message_ids(values: list[str]) -> list[str]:
    found: list[str] = []
    for value in values:
        for mid in _MSGID.findall(value):
            if mid not in found:
                found.append(mid)
    return found


def parse(raw: bytes, envelope_from: str | None = None) -> InboundMessage:
    """Parse a raw message; anything that does not stop us is noted as a defect instead.

    Raises MessageTooComplex, before any expensive work, for shapes built to exhaust the
    parser (see gateway/limits.py); the pipeline quarantines those with the reason.
    """
    shape = limits.check(raw)
    if shape.near_limits:
        limits.probe(raw)
    return parse_unchecked(raw, envelope_from)


def parse_unchecked(raw: bytes, envelope_from: str | None = None) -> InboundMessage:
    """The parse itself, for callers that have applied the limits (and the probe's child)."""
    try:
        return _parse(raw, envelope_from)
    except RecursionError:
        # The pre-scan's nesting estimate is a bound, not a proof; this is the backstop.
        raise MessageTooComplex("structure nested too deeply to parse") from None


def _mailboxes(values: list[str]) -> list[tuple[str, str]]:
    """(decoded display name, address) from header values as they arrived.

    Addresses are found before encoded-words are decoded, so a display name such as
    =?utf-8?q?kari=40nordby-skole.example?= stays a name and never becomes the address.
    Each encoded-word is hidden behind a placeholder while the address parser runs: its
    text may hold ':' or ',' (senders break RFC 2047 here) that must not split the list.
    """
    words: list[str] = []

    def hide(match: re.Match[str]) -> str:
        words.append(match.group(0))
        return f"\x01{len(words) - 1}\x01"  # control characters: never part of a valid address

    def restore(name: str) -> str:
        return _PLACEHOLDER.sub(lambda m: words[int(m.group(1))], name)

    hidden = [_ENCODED_WORD.sub(hide, value) for value in values]
    return [(decode_text(restore(name)), address) for name, address in parse_mailboxes(hidden)]


def _header_defects(headers: dict[str, list[str]]) -> list[str]:
    """The header checks mail-parser would have made that matter to us: dates that do not parse."""
    dates = headers.get("date", [])
    if any(email.utils.parsedate_tz(value) is None for value in dates):
        return ["DateHeaderDefect"]
    return []


def _message(data: bytes) -> tuple[Message, list[str]]:
    """The parsed tree, read again from repaired bytes when the header block was broken."""
    msg = email.message_from_bytes(data, policy=compat32)
    names = [type(d).__name__ for d in msg.defects]
    if header_repair.needs_repair(data, names, "from" in msg):
        fixed = header_repair.repair(data)
        if fixed is not None:
            return email.message_from_bytes(fixed[0], policy=compat32), fixed[1]
    return msg, []


def _structure_defects(msg: Message) -> list[str]:
    """The standard library's own findings, for the whole tree."""
    found = {type(d).__name__ for d in msg.defects}
    for part in msg.walk():
        found.update(type(d).__name__ for d in part.defects)
    return sorted(found)


def _parse(raw: bytes, envelope_from: str | None) -> InboundMessage:
    # A UTF-8 byte-order mark before the first header hides every header from the parser;
    # the raw bytes are still kept exactly as they came.
    msg, repaired = _message(raw[len(_BOM) :] if raw.startswith(_BOM) else raw)
    headers = _header_map(msg)
    reading = read_parts(msg)
    defects = sorted({*repaired, *_structure_defects(msg), *_header_defects(headers), *reading.defects})
    body, attachments = reading.body, reading.attachments
    from_values = headers.get("from", [])
    senders = _mailboxes(from_values)
    if len(from_values) != 1:
        defects.append(f"from-headers: {len(from_values)}")
    message_id = next(iter(_message_ids(headers.get("message-id", []))), "")
    report = msg if msg.get_content_type() == "multipart/report" else None
    return InboundMessage(
        raw=raw,
        sha256=hashlib.sha256(raw).hexdigest(),
        message_id=message_id,
        from_addr=senders[0][1] if senders else "",
        from_name=senders[0][0] if senders else "",
        # Every From header counts, those that do not parse too: two Froms are never one sender.
        from_count=max(len(senders), len(from_values)),
        to=[a for _, a in parse_mailboxes(headers.get("to", []))],
        cc=[a for _, a in parse_mailboxes(headers.get("cc", []))],
        subject=decode_text(headers.get("subject", [""])[0], defects),
        body=body,
        in_reply_to=_message_ids(headers.get("in-reply-to", [])),
        references=_message_ids(headers.get("references", [])),
        attachments=attachments,
        headers=headers,
        content_type=msg.get_content_type(),
        defects=defects,
        envelope_from=envelope_from,
        report=report,
    )
