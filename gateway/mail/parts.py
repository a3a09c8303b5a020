"""What a person sees in a MIME tree: the body text and the attachments, with stable names."""

from __future__ import annotations

import mimetypes
import re
from dataclasses import dataclass, field
from email.header import decode_header, make_header
from email.message import Message

from tnefparse import TNEF

from gateway.mail import charsets
from gateway.mail.html_text import html_to_text

_ATTACHED_MAIL = ("message/rfc822", "message/global")
_TNEF_TYPES = ("application/ms-tnef", "application/vnd.ms-tnef")
# Characters a file name must not carry into a listing or a path.
_UNSAFE_NAME = re.compile(r"[\x00-\x1f\x7f/\\]+")
# Header-decoding fallbacks for raw 8-bit words, in order.
_RAW_FALLBACKS = ("utf-8", "cp1252")


@dataclass
class Reading:
    """The text parts (plain and HTML apart) and attachment names found in one walk."""

    plain: list[str] = field(default_factory=list)
    markup: list[str] = field(default_factory=list)
    attachments: list[str] = field(default_factory=list)
    defects: list[str] = field(default_factory=list)
    leaves: int = 0

    @property
    def body(self) -> str:
        text = "\n".join(self.plain).strip()
        if not text and self.markup:
            return html_to_text("\n".join(self.markup))
        return text


def decode_words(value: str, defects: list[str] | None = None) -> str:
    """An RFC 2047 value decoded word by word, each word's bytes read as charsets.decode reads a body."""
    if has_raw_bytes(value):
        value = raw_header_text(value.encode("utf-8", "surrogateescape"))
    if "=?" not in value:
        return value
    try:
        chunks = decode_header(value)
    except (ValueError, AssertionError, UnicodeError):
        return value
    pieces: list[tuple[str, str | None]] = []
    for chunk, label in chunks:
        text, defect = (chunk, None) if isinstance(chunk, str) else charsets.decode(chunk, label)
        if defect and defects is not None and label:
            defects.append(defect)
        # make_header spaces words the way RFC 2047 says; each piece is already text.
        pieces.append((text, "utf-8" if label or not text.isascii() else None))
    try:
        return str(make_header(pieces))
    except (UnicodeError, LookupError, ValueError):
        return "".join(text for text, _ in pieces)


def raw_header_text(data: bytes) -> str:
    for charset in _RAW_FALLBACKS:
        try:
            return data.decode(charset)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


def has_raw_bytes(text: str) -> bool:
    """Raw 8-bit header bytes arrive as surrogate escapes under compat32."""
    return not text.isascii() and any("\udc80" <= ch <= "\udcff" for ch in text)


def read_parts(msg: Message) -> Reading:
    """One walk over the tree; attached messages and winmail.dat are listed, never read as body."""
    reading = Reading()
    stack = [msg]
    while stack:
        part = stack.pop()
        ctype = part.get_content_type()
        if ctype in _ATTACHED_MAIL:
            reading.leaves += 1
            reading.attachments.append(_attached_message_name(part, reading))
        elif ctype.startswith("message/"):
            # Delivery reports and header copies: listed, never read as body or walked into.
            reading.leaves += 1
            reading.attachments.append(_file_name(part, reading) or _unnamed(ctype, reading.leaves))
        elif part.is_multipart():
            payload = part.get_payload()
            children = (
                [child for child in payload if isinstance(child, Message)]
                if isinstance(payload, list)
                else []
            )
            stack.extend(reversed(children))
        else:
            reading.leaves += 1
            _leaf(part, ctype, reading)
    return reading


def _file_name(part: Message, reading: Reading) -> str:
    raw = part.get_filename() or ""
    if "\ufffd" in raw:
        raw = _raw_file_name(part) or raw
    return _UNSAFE_NAME.sub(" ", decode_words(raw, reading.defects)).strip()


def _leaf(part: Message, ctype: str, reading: Reading) -> None:
    name = _file_name(part, reading)
    if ctype in _TNEF_TYPES or name.lower() == "winmail.dat":
        _tnef(part, name or "winmail.dat", reading)
        return
    disposition = part.get_content_disposition()
    if name or disposition == "attachment" or ctype not in ("text/plain", "text/html"):
        reading.attachments.append(name or _unnamed(ctype, reading.leaves))
        return
    payload = part.get_payload(decode=True)
    data = payload if isinstance(payload, bytes) else b""
    text, defect = charsets.decode(data, part.get_content_charset())
    if defect:
        reading.defects.append(defect)
    if ctype == "text/plain":
        if _param(part, "format") == "flowed":
            text = _unflow(text, _param(part, "delsp") == "yes")
        reading.plain.append(text)
    else:
        reading.markup.append(text)


def _raw_file_name(part: Message) -> str:
    """A file name sent as raw 8-bit bytes, read with the header fallbacks (the library gives U+FFFD)."""
    copy = Message()
    for name, value in part.raw_items():
        if name.lower() in ("content-disposition", "content-type") and isinstance(value, str):
            copy[name] = raw_header_text(value.encode("utf-8", "surrogateescape"))
    return copy.get_filename() or ""


def _param(part: Message, name: str) -> str:
    value = part.get_param(name, "")
    return value.lower() if isinstance(value, str) else ""


def _unnamed(ctype: str, position: int) -> str:
    """part-<n>.<ext>: n is the part's place among the leaves, so a second parse gives the same name."""
    ext = mimetypes.guess_extension(ctype, strict=False) or ".bin"
    return f"part-{position}{ext}"


def _attached_message_name(part: Message, reading: Reading) -> str:
    name = _file_name(part, reading)
    if name:
        return name
    payload = part.get_payload()
    inner = payload[0] if isinstance(payload, list) and payload else None
    subject = decode_words(str(inner.get("subject", "")), None) if isinstance(inner, Message) else ""
    subject = _UNSAFE_NAME.sub(" ", subject).strip()[:120]
    return f"{subject}.eml" if subject else f"message-{reading.leaves}.eml"


def _tnef(part: Message, name: str, reading: Reading) -> None:
    """winmail.dat: the files inside are the attachments; its body counts when the mail has none."""
    payload = part.get_payload(decode=True)
    try:
        tnef = TNEF(payload if isinstance(payload, bytes) else b"")
    except Exception as exc:  # a broken container is still an attachment, listed as it came
        reading.defects.append(f"TnefUnreadable: {type(exc).__name__}")
        reading.attachments.append(name)
        return
    for item in tnef.attachments:
        inner = item.long_filename() or item.name or ""
        if isinstance(inner, bytes):
            inner = inner.decode("cp1252", "replace")
        inner = _UNSAFE_NAME.sub(" ", inner).strip("\x00 ")
        reading.attachments.append(inner or _unnamed("", reading.leaves))
    body = getattr(tnef, "body", None)
    html = getattr(tnef, "htmlbody", None)
    if body:
        reading.plain.append(charsets.decode(body, None)[0] if isinstance(body, bytes) else str(body))
    elif html:
        reading.markup.append(charsets.decode(html, None)[0] if isinstance(html, bytes) else str(html))


def _unflow(text: str, delsp: bool) -> str:
    """RFC 3676: a line ending in a space goes on in the next; quoted and signature lines keep their ends."""
    out: list[str] = []
    carry = ""
    for line in text.splitlines():
        if line == "-- ":
            if carry:
                out.append(carry)
                carry = ""
            out.append(line)
            continue
        if line.startswith(" "):
            line = line[1:]  # space-stuffing
        if line.endswith(" ") and not line.startswith(">"):
            carry += line[:-1] if delsp else line
            continue
        out.append(carry + line)
        carry = ""
    if carry:
        out.append(carry)
    return "\n".join(out)
