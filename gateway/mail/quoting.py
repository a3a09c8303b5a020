"""Removing quoted history from a reply, for Norwegian Outlook, Gmail, iPhone and English clients."""

from __future__ import annotations

import re

from mailparser_reply import EmailReplyParser

# No Norwegian in mail-parser-reply; Danish Outlook uses the same header words (Fra/Sendt/Til/Emne)
# and Swedish covers "skrev", so together with English they catch what our customers send.
_PARSER = EmailReplyParser(languages=["da", "sv", "en"])
_FALLBACK_CUT = re.compile(
    r"^(-{2,}\s*(opprinnelig melding|original message|videresendt melding|forwarded message)\s*-{2,}|"
    r"_{10,}|den .{5,80} skrev .{0,120}:|on .{5,80} wrote:|.{0,40}\bskrev\b.{0,80}<[^>]+>:)\s*$",
    re.I | re.M,
)
_CLIENT_SIGNATURE = re.compile(
    r"^\s*(sendt fra min \w+.*|sent from my \w+.*|(hent|get|sendt fra) outlook for (ios|android).*)$",
    re.I | re.M,
)


def strip_quoted(text: str) -> str:
    """The new part of a reply: quoted history and mail-client signatures removed."""
    try:
        reply = _PARSER.parse_reply(text=text)
    except Exception:  # the library is regex-heavy; a failure must not lose the answer
        reply = text
    cut = _FALLBACK_CUT.search(reply)
    if cut:
        reply = reply[: cut.start()]
    lines = [line for line in reply.splitlines() if not line.lstrip().startswith(">")]
    return _CLIENT_SIGNATURE.sub("", "\n".join(lines)).strip()
