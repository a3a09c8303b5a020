"""Limits on hostile mail: a linear pre-scan before the parse, and a hard time bound on the parse itself."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from dataclasses import dataclass

log = logging.getLogger("gateway.limits")

# The shapes that make the standard library's parser, mail-parser or getaddresses slow,
# deep in recursion or huge in memory. Each limit is far above anything a person sends:
# the public corpus (../shared/corpus) peaks at 5 levels, 12 parts and 22 addresses.
MAX_NESTING = 40  # multipart and message/rfc822 levels, one inside the other
MAX_MIME_PARTS = 2000  # boundary delimiter lines in the whole message
MAX_ENCODED_WORDS = 1000  # =?charset?q?...?= in the top-level header
MAX_ADDRESSES = 1000  # '@' in From, To and Cc together
MAX_ADDRESS_GROUPS = 200  # ':' in those fields; getaddresses recurses once per group
MAX_HEADER_LINE = 64 * 1024  # bytes in one physical line of the top-level header

# Above this size, or this close to a limit, the parse is first tried in a child process
# that is killed after PARSE_TIMEOUT_SECONDS.
ISOLATE_ABOVE_BYTES = 1024 * 1024
ISOLATE_FRACTION = 0.5
PARSE_TIMEOUT_SECONDS = 10.0
PARSE_MEMORY_BYTES = 1024 * 1024 * 1024
EXIT_TOO_COMPLEX = 65  # the child's exit codes (sysexits: data error, OS error)
EXIT_MEMORY = 71

_HEADER_END = re.compile(rb"\r?\n\r?\n")
_ENCODED_WORD = re.compile(rb"=\?[^?\s]+\?[bBqQ]\?")
_ADDRESS_FIELD = re.compile(rb"^(?:from|to|cc)[ \t]*:(.*(?:\r?\n[ \t].*)*)", re.I | re.M)
# One regex pass finds the only lines that decide the MIME structure: Content-Type fields
# (with their folded continuation lines) and lines starting with "--" (maybe a delimiter).
# Matched after a newline rather than at ^ under re.M: a literal first character lets the regex
# engine jump from newline to newline instead of trying every byte of a 50 KB attachment.
_STRUCTURE = re.compile(
    rb"\n(?:content-type[ \t]*:(?P<ctype>.*(?:\r?\n[ \t].*)*)|--(?P<delim>.*?)\r?$)",
    re.I | re.M,
)
_BOUNDARY = re.compile(rb"""boundary\s*=\s*(?:"([^"]*)"|([^\s;"]+))""", re.I)
_MESSAGE_TYPE = re.compile(rb"^\s*message/(?:rfc822|global)\b", re.I)


class MessageTooComplex(ValueError):
    """A message shaped to exhaust the parser; it is quarantined whole with this reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Shape:
    """What the pre-scan counted; cheap to compute, and enough to refuse the known bad shapes."""

    size: int
    nesting: int
    parts: int
    encoded_words: int
    addresses: int
    address_groups: int
    longest_header_line: int

    def excess(self) -> str | None:
        """The first limit this message breaks, as a reason an operator can read, or None."""
        checks = (
            (self.nesting, MAX_NESTING, "MIME nesting depth"),
            (self.parts, MAX_MIME_PARTS, "MIME parts"),
            (self.encoded_words, MAX_ENCODED_WORDS, "encoded-words in the header"),
            (self.addresses, MAX_ADDRESSES, "addresses in From/To/Cc"),
            (self.address_groups, MAX_ADDRESS_GROUPS, "address groups (':') in From/To/Cc"),
            (self.longest_header_line, MAX_HEADER_LINE, "bytes in one header line"),
        )
        for value, limit, what in checks:
            if value > limit:
                return f"{what}: {value} (limit {limit})"
        return None

    @property
    def near_limits(self) -> bool:
        """Big or close to a limit: worth parsing where a runaway parse can be killed."""
        if self.size > ISOLATE_ABOVE_BYTES:
            return True
        pairs = (
            (self.nesting, MAX_NESTING),
            (self.parts, MAX_MIME_PARTS),
            (self.encoded_words, MAX_ENCODED_WORDS),
            (self.addresses, MAX_ADDRESSES),
            (self.address_groups, MAX_ADDRESS_GROUPS),
            (self.longest_header_line, MAX_HEADER_LINE),
        )
        return any(value > limit * ISOLATE_FRACTION for value, limit in pairs)


def measure(raw: bytes) -> Shape:
    """Count the expensive features in one linear pass over the bytes, without parsing MIME."""
    end = _HEADER_END.search(raw)
    header = raw[: end.start()] if end else raw
    address_fields = [m.group(1) for m in _ADDRESS_FIELD.finditer(header)]
    nesting, parts = _structure(raw)
    return Shape(
        size=len(raw),
        nesting=nesting,
        parts=parts,
        encoded_words=sum(1 for _ in _ENCODED_WORD.finditer(header)),
        addresses=sum(f.count(b"@") for f in address_fields),
        address_groups=sum(f.count(b":") for f in address_fields),
        longest_header_line=max((len(line) for line in header.split(b"\n")), default=0),
    )


def _structure(raw: bytes) -> tuple[int, int]:
    """Nesting depth and part count, following boundaries the way the parser will.

    A stack of open multiparts, each with the depth it opened at: a delimiter of an outer
    boundary also ends every inner one (as the parser treats it), so broken mail with
    missing end boundaries does not pile up. message/rfc822 adds a level with no boundary.
    """
    stack: list[tuple[bytes, int]] = []
    depth = deepest = parts = 0
    for match in _STRUCTURE.finditer(b"\n" + raw):  # the first line starts after a newline too
        ctype = match.group("ctype")
        if ctype is not None:
            if _MESSAGE_TYPE.match(ctype):
                depth += 1
            found = _BOUNDARY.search(ctype)
            boundary = (found.group(1) or found.group(2)) if found else None
            if boundary and _find(stack, boundary) is None:
                depth += 1
                stack.append((boundary, depth))
            deepest = max(deepest, depth)
            continue
        line = match.group("delim").rstrip(b" \t")
        closed = _find(stack, line[:-2]) if line.endswith(b"--") else None
        if closed is not None:
            del stack[closed:]
            depth = stack[-1][1] if stack else 0
            continue
        index = _find(stack, line)
        if index is not None:
            del stack[index + 1 :]
            depth = stack[index][1]
            parts += 1
    return deepest, parts


def _find(stack: list[tuple[bytes, int]], name: bytes) -> int | None:
    # Only the innermost levels are searched: deeper stacks are refused anyway, so this
    # keeps the scan linear even for a message that declares thousands of boundaries.
    for index in range(len(stack) - 1, max(-1, len(stack) - MAX_NESTING - 2), -1):
        if stack[index][0] == name:
            return index
    return None


def check(raw: bytes) -> Shape:
    """Raise MessageTooComplex for a known hostile shape; otherwise return what was counted."""
    shape = measure(raw)
    reason = shape.excess()
    if reason is not None:
        raise MessageTooComplex(reason)
    return shape


def probe(raw: bytes, timeout: float | None = None) -> None:
    """Parse once in a child process under a time and memory bound; raise if it does not finish.

    Why a child process only for big or near-limit mail: the pre-scan is linear and refuses
    the shapes known to make parsing super-linear, and what it lets through parses in well
    under a second (a 25 MB attachment: 0.7 s; a message at every limit at once: 0.15 s).
    A thread cannot be stopped and signal.alarm only works in the main thread, so the one
    hard bound is a process we can kill. Starting one costs ~0.15 s, which we pay only where
    an unknown slow path in the standard library or mail-parser could hurt. The child
    parses and exits; the worker then parses again itself, knowing it will finish.
    """
    limit = PARSE_TIMEOUT_SECONDS if timeout is None else timeout
    try:
        child = subprocess.run(
            [sys.executable, "-m", "gateway.mail.parse_probe"],
            input=raw,
            capture_output=True,
            timeout=limit,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise MessageTooComplex(f"parsing took longer than {limit:g} s; the parse was stopped") from None
    if child.returncode == EXIT_TOO_COMPLEX:
        raise MessageTooComplex(child.stderr.decode("utf-8", "replace").strip()[-300:])
    if child.returncode == EXIT_MEMORY:
        raise MessageTooComplex(f"parsing needed more than {PARSE_MEMORY_BYTES // 2**20} MB")
    if child.returncode < 0:
        # Killed by a signal (an allocation failing in C code aborts): the worker must not try.
        raise MessageTooComplex(f"the parse crashed (signal {-child.returncode})")
    if child.returncode != 0:
        # The parser's own failure: the worker's parse raises it again, with a traceback
        # for the quarantine. Logged in case the child itself cannot start.
        log.warning(
            "parse probe exited %s: %s", child.returncode, child.stderr[-300:].decode("utf-8", "replace")
        )
