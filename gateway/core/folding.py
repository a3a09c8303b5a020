"""Case-insensitive search done once per text: lower-case the text, match without re.IGNORECASE."""

from __future__ import annotations

import re

# re.IGNORECASE folds every character it compares, and it keeps the regex engine from skipping
# ahead to the characters a pattern can start with: over a typical 250-character mail the
# escalation and rule patterns cost about three times as much as on the lower-cased text.
# A pattern may run on lower-cased text only when everything it matches literally is already
# lower case; escapes are allowed where they name a class (\d \w \s \b ...), escape punctuation
# or refer back to a group. \x41, \N{...} or an upper-case letter keep the pattern on re.I.
_ESCAPE = re.compile(r"\\(\d+|.)", re.S)
_CLASS_ESCAPES = frozenset("dDsSwWbBAZ")
# An inline group that turns a flag off, such as (?-i:...) or (?s-i:...): a case-sensitive stretch.
_FLAG_OFF = re.compile(r"\(\?[a-zA-Z]*-")


def foldable(source: str) -> bool:
    """True when `source` searched in text.lower() finds what it finds in text under re.I."""
    if _FLAG_OFF.search(source):
        return False  # a case-sensitive stretch cannot be told apart once the text is folded
    for found in _ESCAPE.finditer(source):
        escaped = found.group(1)
        if escaped.isdigit():
            # \1 to \9 refer back to a group; \0, \101 and the like are octal characters.
            if len(escaped) > 1 or escaped == "0":
                return False
        elif escaped.isalnum() and escaped not in _CLASS_ESCAPES:
            return False
    plain = _ESCAPE.sub("", source)
    return plain == plain.lower()


def compile_folded(source: str, flags: int = 0) -> tuple[re.Pattern[str], bool]:
    """The pattern and whether it expects folded text (else it carries re.I for the original)."""
    if foldable(source):
        return re.compile(source, flags), True
    return re.compile(source, flags | re.I), False


def fold(text: str) -> str:
    return text.lower()


def quote(text: str, folded: str, found: re.Match[str]) -> str:
    """What matched, in the writer's own letters when lower-casing kept every position."""
    if len(text) == len(folded):
        return text[found.start() : found.end()]
    return found.group(0)  # a few characters (İ) grow when lower-cased: quote the folded text
