"""Header lines of the mail we send: folded at spaces, encoded (RFC 2047) where text needs it."""

from __future__ import annotations

import base64
from email.utils import formataddr

# Longest plain word left as it is: with the header's name it still fits a 78-character line,
# and anything longer (a stranger's 3,000-character subject) becomes encoded-words instead.
LONGEST_WORD = 66
# Bytes of text per encoded-word: 60 base64 characters, 72 with the markers, 73 after the fold.
WORD_BYTES = 45
# Message identifiers longer than this are dropped from In-Reply-To and References: they cannot
# be encoded or folded, and a line over 998 octets makes the relay refuse the whole mail.
LONGEST_ID = 900


def one_line(value: str) -> str:
    """Text from customers reaches headers (subjects, names): CR/LF must never start a new header."""
    return " ".join(value.split())


def plain(value: str) -> bool:
    """True when the text can stand in a header as it is: printable ASCII, short words, no '=?'."""
    if not (value.isascii() and value.isprintable()) or "=?" in value:
        return False
    return len(value) <= LONGEST_WORD or all(len(word) <= LONGEST_WORD for word in value.split(" "))


def header_line(name: str, value: str) -> bytes:
    """One header field for unstructured text, folded so that no line passes 78 characters."""
    if not plain(value):
        return f"{name}: {encoded_words(value)}\r\n".encode("ascii")
    return folded(name, value)


def folded(name: str, value: str) -> bytes:
    """A header field of ASCII words, folded at its spaces (structured fields: addresses, ids)."""
    if len(name) + len(value) < 77:  # most headers: nothing to fold
        return f"{name}: {value}\r\n".encode()  # UTF-8 only for an internationalised address
    lines, line = [], f"{name}:"
    for word in value.split(" "):
        if len(line) + 1 + len(word) > 78 and line != f"{name}:":
            lines.append(line)
            line = ""
        line += " " + word
    lines.append(line)
    return ("\r\n".join(lines) + "\r\n").encode()


def address_line(name: str, display: str, address: str) -> bytes:
    """A mailbox header (From): the display name encoded where it is not plain text.

    A long ASCII name stays one quoted string, as readers put a space between the encoded-words
    of a display name that RFC 2047 says to join.
    """
    if display.isascii() and display.isprintable() and "=?" not in display and len(display) < LONGEST_ID:
        return folded(name, formataddr((display, address)))
    return f"{name}: {encoded_words(display)}\r\n <{address}>\r\n".encode("ascii")


def message_ids(ids: list[str]) -> str:
    """Message identifiers for In-Reply-To and References, each short enough for one line."""
    return " ".join(i for i in ids if len(i) <= LONGEST_ID and i.isascii() and i.isprintable())


def encoded_words(value: str) -> str:
    """RFC 2047 base64 words of at most 45 bytes each, never splitting a UTF-8 character."""
    data, words, start = value.encode("utf-8"), [], 0
    while start < len(data):
        end = min(start + WORD_BYTES, len(data))
        while end < len(data) and data[end] & 0xC0 == 0x80:
            end -= 1  # back off to the first byte of the character that would be cut
        words.append(data[start:end])
        start = end
    return "\r\n ".join(f"=?utf-8?b?{base64.b64encode(w).decode('ascii')}?=" for w in words or [b""])
