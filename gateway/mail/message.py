"""Parsing: raw bytes to an InboundMessage, tolerant of broken mail, defects recorded not fatal."""

from __future__ import annotations

import email
import email.utils
import hashlib
import html
import re
from dataclasses import dataclass, field
from email.header import decode_header, make_header
from email.message import Message
from email.policy import compat32
from typing import Any

import mailparser

from gateway.core.addresses import parse_mailboxes
from gateway.mail import limits
from gateway.mail.limits import MessageTooComplex

# Printable ASCII only: a Message-ID we keep may go back out in In-Reply-To and References.
_MSGID = re.compile(r"<[\x21-\x3b\x3d\x3f-\x7e]+>")
# C0 and C1 controls and the Unicode line and paragraph separators: anything that could
# end a header line once a value is reused in mail we send. Tab stays (it is whitespace).
_CTRL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]+")
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


def decode_text(value: str | bytes | None) -> str:
    """Decode an RFC 2047 header value to one clean line, whatever charset it claims."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        value = _bytes_to_text(value)
    try:
        text = str(make_header(decode_header(value)))
    except (UnicodeError, LookupError, ValueError, AssertionError, email.errors.HeaderParseError):
        text = value
    # Folded or injected CR/LF never survive into a value we may reuse in a header.
    return _CTRL.sub(" ", text).strip()


def _bytes_to_text(data: bytes) -> str:
    for charset in _FALLBACK_CHARSETS:
        try:
            return data.decode(charset)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


def _header_map(msg: Message) -> dict[str, list[str]]:
    headers: dict[str, list[str]] = {}
    # raw_items: for 8-bit header bytes, items() would hand back a Header that prints as U+FFFD.
    for name, value in msg.raw_items():
        text = value if isinstance(value, str) else str(value)
        if _has_raw_bytes(text):
            text = _bytes_to_text(text.encode("utf-8", "surrogateescape"))
        headers.setdefault(name.lower(), []).append(text)
    return headers


def _message_ids(values: list[str]) -> list[str]:
    found: list[str] = []
    for value in values:
        for mid in _MSGID.findall(value):
            if mid not in found:
                found.append(mid)
    return found


def html_to_text(markup: str) -> str:
    text = re.sub(r"<br\s*/?>|</p>|</div>|</tr>", "\n", markup, flags=re.I)
    text = html.unescape(_TAGS.sub("", text))
    return re.sub(r"\n\s*\n\s*\n+", "\n\n", text).strip()


def _body(parsed: Any, defects: list[str]) -> str:
    try:
        plain = "\n".join(parsed.text_plain).strip()
        if plain:
            return plain
        markup = "\n".join(parsed.text_html)
        return html_to_text(markup) if markup else ""
    except Exception as exc:  # mail-parser is tolerant, but we never let a body stop a case
        defects.append(f"body: {type(exc).__name__}: {exc}")
        return ""


def _attachment_names(parsed: Any) -> list[str]:
    names: list[str] = []
    for item in parsed.attachments:
        name = decode_text(item.get("filename") or "")
        names.append(name or "(unnamed)")
    return names


def _defects(parsed: Any, msg: Message) -> list[str]:
    found = [type(d).__name__ for d in msg.defects]
    for part in msg.walk():
        if part is not msg:
            found.extend(type(d).__name__ for d in part.defects)
    found.extend(sorted(parsed.defects_categories))
    return sorted(set(found))


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


def _part_text(part: Message) -> str | None:
    """A text part's content, or None when its charset or bytes need mail-parser's recovery."""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return None
    try:
        return payload.decode(part.get_content_charset() or "us-ascii")
    except (LookupError, UnicodeError):
        return None


def _has_raw_bytes(text: str) -> bool:
    """Raw 8-bit header bytes arrive as surrogate escapes under compat32."""
    return not text.isascii() and any("\udc80" <= ch <= "\udcff" for ch in text)


def _header_defects(headers: dict[str, list[str]]) -> list[str]:
    """The header checks mail-parser would have made that matter to us: dates that do not parse."""
    dates = headers.get("date", [])
    if any(email.utils.parsedate_tz(value) is None for value in dates):
        return ["DateHeaderDefect"]
    return []


def _clean_view(msg: Message) -> tuple[str, list[str]] | None:
    """Body and attachment names by the standard library alone, for mail without any defect.

    Most mail is plain text, an HTML alternative and named attachments: walking it once is a
    fraction of mail-parser's cost. Anything unusual (a defect, an unnamed or inline-named part,
    an attached container, a charset that does not decode) returns None and goes to mail-parser,
    whose tolerant view is the one we trust for broken mail.
    """
    plain: list[str] = []
    markup: list[str] = []
    names: list[str] = []
    for part in msg.walk():
        if part.defects:
            return None
        disposition = part.get_content_disposition()
        if part.is_multipart():
            if disposition not in (None, "inline") or part.get_filename():
                return None
            continue
        filename = part.get_filename()
        if filename:
            if _has_raw_bytes(filename):
                return None  # an 8-bit file name: mail-parser guesses its charset
            if disposition == "inline" and part.get_content_maintype() == "text":
                return None  # named inline text is both body and attachment: mail-parser's rules
            names.append(decode_text(filename) or "(unnamed)")
            continue
        subtype = part.get_content_subtype()
        if part.get_content_maintype() != "text" or subtype not in ("plain", "html"):
            return None
        if disposition == "attachment" or part.get("content-id"):
            return None
        text = _part_text(part)
        if text is None:
            return None
        if text:
            (plain if subtype == "plain" else markup).append(text)
    body = "\n".join(plain).strip()
    if not body and markup:
        body = html_to_text("\n".join(markup))
    return body, names


def _parse(raw: bytes, envelope_from: str | None) -> InboundMessage:
    # A UTF-8 byte-order mark before the first header hides every header from the parser;
    # the raw bytes are still kept exactly as they came.
    msg = email.message_from_bytes(raw[len(_BOM) :] if raw.startswith(_BOM) else raw, policy=compat32)
    headers = _header_map(msg)
    clean = None if msg.defects else _clean_view(msg)
    if clean is not None:
        defects = _header_defects(headers)
        body, attachments = clean
    else:
        parsed = mailparser.MailParser(msg)
        defects = _defects(parsed, msg)
        body, attachments = _body(parsed, defects), _attachment_names(parsed)
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
        subject=decode_text(headers.get("subject", [""])[0]),
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
