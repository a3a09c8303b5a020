"""Two regex hot spots of the standard library's MIME parser (boundary lines, part endings), made cheap."""

from __future__ import annotations

import email.feedparser
import re
from types import ModuleType
from typing import Any

# The standard library's feed parser compiles one regex per multipart part from its boundary,
# `(?P<sep>--BOUNDARY)(?P<end>--)?(?P<ws>[ \t]*)(?P<linesep>\r\n|\r|\n)?$`. Boundaries are unique
# per message, so the `re` cache never hits and each compile costs about 170 µs: more than the
# rest of parsing a short multipart mail. What follows the boundary is the same every time, so it
# is compiled once here and the boundary itself is compared as a plain string prefix.
_HEAD = "(?P<sep>"
_TAIL = r")(?P<end>--)?(?P<ws>[ \t]*)(?P<linesep>\r\n|\r|\n)?$"
_AFTER = re.compile(_TAIL[1:])
_UNESCAPE = re.compile(r"\\(.)", re.S)
_LINE_END = r"(\r\n|\r|\n)\Z"
_LAST_LINE_END = re.compile(_LINE_END)


class BoundaryMatch:
    """The groups the feed parser reads from a boundary match, with the regex's values.

    Anything else a later feedparser might ask of a match (span, groupdict, ...) is answered by
    the real regex, compiled on that first use, so a change there costs speed, never mail.
    """

    __slots__ = ("_line", "_pattern", "_rest", "_separator")
    _GROUPS = ("sep", "end", "ws", "linesep")

    def __init__(self, pattern: str, separator: str, line: str, rest: re.Match[str]) -> None:
        self._pattern, self._separator, self._line, self._rest = pattern, separator, line, rest

    def group(self, name: int | str = 0) -> str | Any:
        if isinstance(name, int) and 0 < name <= len(self._GROUPS):
            name = self._GROUPS[name - 1]
        if name == 0:
            return self._separator + self._rest.group(0)
        if name == "sep":
            return self._separator
        return self._rest.group(name)

    def __getattr__(self, name: str) -> Any:
        real = re.match(self._pattern, self._line)
        assert real is not None  # the same pattern matched this line
        return getattr(real, name)


class BoundaryPattern:
    """`match(line)` as the compiled boundary regex would answer it: prefix, then the shared tail."""

    __slots__ = ("pattern", "separator")

    def __init__(self, pattern: str, separator: str) -> None:
        self.pattern, self.separator = pattern, separator

    def match(self, line: str) -> BoundaryMatch | None:
        if not line.startswith(self.separator):
            return None
        rest = _AFTER.match(line, len(self.separator))
        return BoundaryMatch(self.pattern, self.separator, line, rest) if rest else None


def boundary_separator(pattern: str) -> str | None:
    """The literal separator inside a feed-parser boundary pattern, or None for any other pattern."""
    if not (pattern.startswith(_HEAD) and pattern.endswith(_TAIL)):
        return None
    escaped = pattern[len(_HEAD) : -len(_TAIL)]
    separator = _UNESCAPE.sub(r"\1", escaped)
    # Only a pattern that is exactly re.escape(separator) is taken over; anything else is compiled.
    return separator if re.escape(separator) == escaped else None


class LineEnd:
    """The feed parser's line-end-at-the-very-end pattern, which it searches whole payloads for.

    A search for an end-anchored pattern tries every position of the text: 50 µs for an
    average part and milliseconds for a large attachment, to look at its last two characters.
    """

    pattern = _LINE_END

    def search(self, text: str) -> re.Match[str] | None:
        return _LAST_LINE_END.search(text, max(0, len(text) - 2))


class _FeedParserRe(ModuleType):
    """Stands in for `re` inside email.feedparser: boundary patterns are matched by hand."""

    def __init__(self) -> None:
        super().__init__("re")

    def __getattr__(self, name: str) -> Any:
        return getattr(re, name)

    def compile(self, pattern: Any, flags: int = 0) -> Any:
        separator = boundary_separator(pattern) if isinstance(pattern, str) and not flags else None
        return re.compile(pattern, flags) if separator is None else BoundaryPattern(pattern, separator)


def install() -> None:
    """Idempotent; parsing behaves exactly as before (tests/test_boundaries.py compares both)."""
    feedparser: Any = email.feedparser  # private names the stubs do not declare
    if not isinstance(feedparser.re, _FeedParserRe):
        feedparser.re = _FeedParserRe()
    eol = getattr(feedparser, "NLCRE_eol", None)
    if isinstance(eol, re.Pattern) and eol.pattern == _LINE_END:
        feedparser.NLCRE_eol = LineEnd()


def uninstall() -> None:
    feedparser: Any = email.feedparser
    feedparser.re = re
    feedparser.NLCRE_eol = _LAST_LINE_END
