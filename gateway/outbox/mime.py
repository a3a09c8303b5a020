"""MIME bodies of the mail we send: text, an HTML alternative and attachments, every line short."""

from __future__ import annotations

import base64
import quopri
import re
import uuid
from urllib.parse import quote

from gateway.outbox.headers import one_line

# A media type as RFC 2045 writes it, with up to four token parameters (an .ics part needs its
# charset and method); anything else is sent as application/octet-stream.
_MEDIA_TYPE = re.compile(
    r"[A-Za-z0-9!#$&^_.+-]{1,64}/[A-Za-z0-9!#$&^_.+-]{1,64}"
    r"(?:; ?[A-Za-z0-9_-]{1,32}=[A-Za-z0-9_.-]{1,32}){0,4}"
)
# Characters of an RFC 2231 file name per continuation: well inside a 78-character line.
_NAME_CHUNK = 54


def text_part(subtype: str, text: str) -> bytes:
    """A UTF-8 text part, quoted-printable so that no line passes 76 characters."""
    encoded = quopri.encodestring(text.replace("\r\n", "\n").encode("utf-8"))
    head = f'Content-Type: text/{subtype}; charset="utf-8"\r\nContent-Transfer-Encoding: quoted-printable\r\n'
    return head.encode("ascii") + b"\r\n" + encoded.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def attachment_part(name: str, media_type: str, data: bytes) -> bytes:
    """An attachment in base64, its file name in RFC 2231 continuations of short lines."""
    kind = media_type if _MEDIA_TYPE.fullmatch(media_type) else "application/octet-stream"
    encoded = quote(one_line(name), safe="")
    chunks: list[str] = []
    start = 0
    while start < len(encoded) or not chunks:
        end = min(start + _NAME_CHUNK, len(encoded))
        if "%" in encoded[end - 2 : end] and end < len(encoded):
            end = encoded.rindex("%", start, end)  # never cut a %XX triple
        chunks.append(encoded[start:end])
        start = end
    params = ";\r\n".join(
        f" filename*{i}*=utf-8''{chunk}" if i == 0 else f" filename*{i}*={chunk}"
        for i, chunk in enumerate(chunks)
    )
    head = (
        f"Content-Type: {kind}\r\nContent-Transfer-Encoding: base64\r\n"
        f"Content-Disposition: attachment;\r\n{params}\r\n"
    )
    return head.encode("ascii") + b"\r\n" + base64.encodebytes(data).replace(b"\n", b"\r\n")


def multipart(subtype: str, parts: list[bytes]) -> bytes:
    """Parts joined under a fresh boundary that no part can contain."""
    boundary = f"=_{uuid.uuid4().hex}"
    head = f'Content-Type: multipart/{subtype}; boundary="{boundary}"\r\n\r\n'.encode("ascii")
    separator = f"\r\n--{boundary}\r\n".encode("ascii")
    body = separator.join([b"", *parts])[2:]  # the first delimiter needs no line break before it
    return head + body + f"\r\n--{boundary}--\r\n".encode("ascii")


def body(text: str, html: str, attachments: list[tuple[str, str, bytes]]) -> bytes:
    """The MIME entity (headers from Content-Type on) for a text, its HTML and its attachments."""
    content = text_part("plain", text)
    if html:
        content = multipart("alternative", [content, text_part("html", html)])
    if not attachments:
        return content
    return multipart("mixed", [content, *(attachment_part(*item) for item in attachments)])
