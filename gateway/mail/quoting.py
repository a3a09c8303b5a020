"""The new text of a mail: quoted history and client signatures out, forwarded mail and answers kept."""

from __future__ import annotations

import re
from dataclasses import dataclass

# Every pattern below runs on one line at a time, cut to _LINE characters, and has no nested
# repetition: cost is linear in the text whatever a stranger writes.
_LINE = 400
_QUOTED = re.compile(r"^\s*>")
_ATTRIBUTION_VERB = re.compile(r"\b(wrote|writes|skrev|skreiv|schrieb|a écrit|escribió|kirjoitti)\b", re.I)
_ATTRIBUTION_START = re.compile(
    r"^(on|den|på|d\.|am|le|el|\w{2,4}\.?)\s.*?(\d|@)|^[^:]{0,200}(\d{1,2}[:.]\d{2}|@)", re.I
)
_SEPARATOR = re.compile(
    r"^\s*-{2,}\s*(original message|opprinnelig melding|opprinneleg melding|oprindelig meddelelse|"
    r"ursprungligt meddelande|reply message|ursprüngliche nachricht|message d'origine|"
    r"alkuperäinen viesti)\s*-{2,}\s*$",
    re.I,
)
_FORWARD = re.compile(
    r"^\s*(-{2,}\s*(forwarded message|videresendt melding|videresendt e-post|videresendt meddelelse|"
    r"vidarebefordrat meddelande|weitergeleitete nachricht|message transféré)\s*-{2,}|"
    r"(begin forwarded message|begynn videresendt melding|start på videresendt (melding|meddelelse)|"
    r"vidarebefordrat brev|videresendt melding)\s*:)\s*$",
    re.I,
)
# Old Gmail: "2012/11/16 Name <address>" alone above the quote, without a verb.
_DATED_ADDRESS = re.compile(
    r"^\s*\d{4}[/.-]\d{1,2}[/.-]\d{1,2}[^<>]{0,200}<[^<>@\s]{1,200}@[^<>\s]{1,200}>\s*$"
)
_RULE = re.compile(r"^\s*_{20,}\s*$")
# Outlook's header block: From, then Sent/Date and Subject within a few lines (nb, en, sv, da, de).
_BLOCK_FROM = re.compile(r"^\s*\*?(from|fra|från|von|de)\s*:\*?\s*\S", re.I)
_BLOCK_SENT = re.compile(r"^\s*\*?(sent|sendt|skickat|date|dato|datum|gesendet|envoyé)\s*:", re.I)
_BLOCK_SUBJECT = re.compile(r"^\s*\*?(subject|emne|ämne|betreff|objet)\s*:", re.I)
_BLOCK_SPAN = 8
_FORWARD_SUBJECT = re.compile(r"^\s*(fwd?|vs|vb|wg|tr|fw)\s*:", re.I)
_SIGNATURE_DASHES = re.compile(r"^--\s?$")
# A client's line, not a sentence: short, no clause punctuation, near the end of the new text.
_CLIENT_LINE = re.compile(
    r"^\s*(sent from|sendt fra|skickat från|get outlook for|hent outlook for|hentet fra|"
    r"sent with|sendt med|sent via|sendt via|von meinem)\b[^,;:!?]*$",
    re.I,
)
_CLIENT_WORDS = 9
_LINK = re.compile(r"<https?://[^<>\s]{0,300}>")
_URL_ONLY = re.compile(r"^\s*<?https?://\S*>?\s*$")
_BLANK_RUNS = re.compile(r"\n\s*\n(\s*\n)+")


@dataclass(frozen=True)
class NewText:
    """What a person reads as this mail's message; kept_whole when cutting would have left nothing."""

    text: str
    kept_whole: bool


def strip_quoted(text: str, subject: str = "") -> str:
    """The new part of a mail; the whole text when nothing would be left (never an empty answer)."""
    return new_text(text, subject).text


def new_text(text: str, subject: str = "") -> NewText:
    """Quoted history and client signatures cut; answers under a quote and forwarded mail kept."""
    lines = text.replace("\r\n", "\n").split("\n")
    short = [line[:_LINE] for line in lines]
    forwarding = bool(_FORWARD_SUBJECT.match(subject))
    start = _forward_start(short, forwarding)
    head = _own_text(lines[:start], short[:start])
    result = _tidy("\n".join([*head, *lines[start:]]))
    if not result:
        return NewText(text.strip(), True)
    return NewText(result, False)


def _forward_start(short: list[str], forwarding: bool) -> int:
    """Where forwarded mail begins (it is content); a reply header counts when the subject says Fwd/VS."""
    for i, line in enumerate(short):
        if _FORWARD.match(line):
            return i
        if forwarding and _header_length(short, i):
            return i
    return len(short)


def _own_text(lines: list[str], short: list[str]) -> list[str]:
    """The writer's own lines: before the first quote header, plus any answer written under the quote."""
    kept: list[str] = []
    i = 0
    while i < len(lines):
        length = _header_length(short, i)
        if length:
            after = i + length
            if not _answered_below(short, after):
                break
            i = after
            continue
        if not _QUOTED.match(short[i]):
            kept.append(lines[i])
        i += 1
    return _without_signature(kept)


def _header_length(short: list[str], i: int) -> int:
    """Lines taken by a quote header starting at line i, 0 when none starts there."""
    line = short[i]
    if _SEPARATOR.match(line):
        return 1
    if _attribution(line):
        return 1
    if _DATED_ADDRESS.match(line):
        following = _next_filled(short, i + 1)
        return 1 if following < len(short) and _QUOTED.match(short[following]) else 0
    nxt = short[i + 1] if i + 1 < len(short) else ""
    if line.strip() and len(nxt) < 80 and _attribution(f"{line} {nxt}"):
        return 2
    if _RULE.match(line) and i + 1 < len(short):
        following = _block(short, _next_filled(short, i + 1))
        return following and (_next_filled(short, i + 1) - i + following)
    return _block(short, i)


def _attribution(line: str) -> bool:
    stripped = line.strip()
    return bool(
        stripped.endswith(":") and _ATTRIBUTION_VERB.search(stripped) and _ATTRIBUTION_START.search(stripped)
    )


def _block(short: list[str], i: int) -> int:
    """An Outlook From/Sent/To/Subject block at line i: its length up to the Subject line."""
    if i >= len(short) or not _BLOCK_FROM.match(short[i]):
        return 0
    sent = False
    for j in range(i + 1, min(i + _BLOCK_SPAN, len(short))):
        sent = sent or bool(_BLOCK_SENT.match(short[j]))
        if sent and _BLOCK_SUBJECT.match(short[j]):
            return j - i + 1
    return 0


def _next_filled(short: list[str], i: int) -> int:
    while i < len(short) and not short[i].strip():
        i += 1
    return i


def _answered_below(short: list[str], after: int) -> bool:
    """A quote in '>' lines with the writer's own text after it: an answer under (or inside) the quote."""
    first = _next_filled(short, after)
    if first >= len(short) or not _QUOTED.match(short[first]):
        return False
    return any(line.strip() and not _QUOTED.match(line) for line in short[first:])


def _without_signature(lines: list[str]) -> list[str]:
    """Cut at a '-- ' line; drop mail-client lines ('Sendt fra min iPhone') near the end."""
    for i, line in enumerate(lines):
        if _SIGNATURE_DASHES.match(line.rstrip("\r")):
            lines = lines[:i]
            break
    filled = [i for i, line in enumerate(lines) if line.strip()]
    for i in filled[-3:]:
        line = _LINK.sub("", lines[i][:_LINE])
        if _CLIENT_LINE.match(line) and len(line.split()) <= _CLIENT_WORDS:
            lines[i] = ""
            if i + 1 < len(lines) and _URL_ONLY.match(lines[i + 1][:_LINE]):
                lines[i + 1] = ""
    return lines


def _tidy(text: str) -> str:
    return _BLANK_RUNS.sub("\n\n", text).strip()
