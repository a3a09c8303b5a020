"""What of an unproven sender's words our automatic mail repeats: no links, no addresses, bounded."""

from __future__ import annotations

import re
import unicodedata

# Longest echoed subject: enough to recognise one's own mail, too short to carry a message.
MAX_ECHO = 60
PLACEHOLDER = "[…]"
# Anything a mail client would turn into something to click: scheme URLs, www., addresses, and
# bare domain names (a dotted name ending in a TLD of letters), with any path after them.
_LINKISH = re.compile(
    r"(?i)(?:\b[a-z][a-z0-9+.-]*://\S+|\b(?:mailto|javascript|data|tel|sms|file):\S+|\bwww\.\S+"
    r"|\S+@\S+|\b(?:[a-z0-9-]+\.)+[a-z]{2,}\b\S*)"
)
# The pattern's cost grows with the square of a run without spaces (from every start in "a.a.a…"
# or "aaa…" it scans to the run's end: a 30 KB subject took 21 s inside the write transaction),
# and only MAX_ECHO characters are shown: it reads this much of the text, spaces collapsed.
_READ = 4 * MAX_ECHO


def echo(text: str) -> str:
    """The text with every link-like part replaced, whitespace collapsed, cut to MAX_ECHO characters.

    NFKC first, so a full-width dot or slash cannot hide a domain from the pattern.
    """
    plain = " ".join(unicodedata.normalize("NFKC", text).split())[:_READ]
    plain = " ".join(_LINKISH.sub(PLACEHOLDER, plain).split())
    return plain if len(plain) <= MAX_ECHO else plain[: MAX_ECHO - 1].rstrip() + "…"
