"""Broken header blocks made readable: a banner above the headers, unindented folds, stray lines."""

from __future__ import annotations

import re

# A header line as RFC 5322 writes it, or with the obsolete space before the colon.
_FIELD = re.compile(rb"^([!-9;-~]+)[ \t]*:")
_SPACED_FIELD = re.compile(rb"^([!-9;-~]+)[ \t]+:")
# A line that names a field but lost its colon (a scanner's stamp): dropped, not folded into a value.
_STAMP = re.compile(rb"^[A-Za-z][A-Za-z0-9]*(?:-[A-Za-z0-9]+)+[ \t]")
# An archive tool's banner ("---- Original email message ----") before the first header.
_BANNER = re.compile(rb"^[ \t]*[-=*_]{2,}[^\r\n:]{0,80}[-=*_]{2,}[ \t]*$")
# Longer lines are not tried: the pattern's three overlapping runs make its cost grow with the
# square of a line of dashes (3,000 bytes took 6 s, a 30 KB first line minutes, in the worker).
_BANNER_MAX = 200
# Fields whose presence below a broken line proves the block goes on past it.
_KNOWN = (
    b"from",
    b"subject",
    b"to",
    b"cc",
    b"date",
    b"message-id",
    b"content-type",
    b"mime-version",
    b"content-transfer-encoding",
    b"reply-to",
    b"in-reply-to",
    b"references",
    b"received",
    b"return-path",
)
_BLOCK_LIMIT = 256 * 1024


def needs_repair(raw: bytes, defect_names: list[str], has_from: bool) -> bool:
    """Cheap test on the parser's own findings: only mail it could not read comes here."""
    return not has_from or "MissingHeaderBodySeparatorDefect" in defect_names


def repair(raw: bytes) -> tuple[bytes, list[str]] | None:
    """The message with a readable header block, and what was repaired; None when nothing was."""
    head, sep, body = _split(raw[:_BLOCK_LIMIT])
    lines = head.splitlines(keepends=True)
    notes: list[str] = []
    banner = len(lines[0]) <= _BANNER_MAX and _BANNER.match(lines[0]) if lines else None
    if banner and len(lines) > 1 and _FIELD.match(lines[1]):
        lines = lines[1:]
        notes.append("HeaderRepaired: banner line before the headers")
    last_known = max((i for i, line in enumerate(lines) if _is_known(line)), default=-1)
    out: list[bytes] = []
    for i, line in enumerate(lines):
        spaced = _SPACED_FIELD.match(line)
        if spaced:
            out.append(spaced.group(1) + b":" + line[spaced.end() :])
            notes.append("HeaderRepaired: space before colon")
        elif _FIELD.match(line) or line[:1] in (b" ", b"\t") or i > last_known:
            out.append(line)
        elif _STAMP.match(line):
            notes.append("HeaderRepaired: line without colon dropped")
        elif out:
            out.append(b" " + line)
            notes.append("HeaderRepaired: unindented continuation")
    if not notes:
        return None
    return b"".join(out) + sep + body + raw[_BLOCK_LIMIT:], sorted(set(notes))


def _is_known(line: bytes) -> bool:
    match = _FIELD.match(line)
    return match is not None and match.group(1).lower() in _KNOWN


def _split(raw: bytes) -> tuple[bytes, bytes, bytes]:
    """Header block, the blank line, the rest: the first empty line ends the headers."""
    match = re.search(rb"\n\r?\n", raw)
    if not match:
        return raw, b"", b""
    return raw[: match.start() + 1], raw[match.start() + 1 : match.end()], raw[match.end() :]
