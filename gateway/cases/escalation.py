"""The information 2nd line needs before an incident is escalated, found in what customers write."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

from gateway.core import folding
from gateway.core.crashpoints import pausepoint
from gateway.directory.who_wrote import Sender
from gateway.flow.context import Analysis

_PHONE = re.compile(r"(?<!\d)(\+47[ ]?)?(\d{2}[ ]?\d{2}[ ]?\d{2}[ ]?\d{2}|\d{3}[ ]?\d{2}[ ]?\d{3})(?!\d)")
_MAC = re.compile(
    r"\b[0-9a-f]{2}([:\-])(?:[0-9a-f]{2}\1){4}[0-9a-f]{2}\b|\b[0-9a-f]{4}\.[0-9a-f]{4}\.[0-9a-f]{4}\b"
)
_WHEN = re.compile(
    r"\b(i dag|i går|igår|i morges|i formiddag|i ettermiddag|i kveld|i natt|siden|fra kl|kl\.? ?\d|"
    r"\d{1,2}[:.]\d{2}|\d{1,2}\.\s?(jan|feb|mar|apr|mai|jun|jul|aug|sep|okt|nov|des)|\d{1,2}\.\d{1,2}\.|"
    r"mandag|tirsdag|onsdag|torsdag|fredag|lørdag|søndag|today|yesterday|this morning|since|"
    r"monday|tuesday|wednesday|thursday|friday|at \d{1,2}(:\d{2})?|hele tiden|av og til|periodevis)\b",
)
_WIRELESS = re.compile(r"\b(trådløs\w*|wifi|wi-fi|wlan|ssid|eduroam|gjestenett\w*|guest ?(network|wifi))\b")
_WIRED = re.compile(
    r"\b(kablet|kabel\w*|uttak\w*|veggkontakt\w*|nettverkspunkt\w*|datapunkt\w*|"
    r"wall socket|wired|ethernet|patch\w*)\b",
)
_EDUROAM = re.compile(r"\beduroam\b")
# After "brukernavnet (mitt) er": the name itself, looked for in a short slice after the word so
# the search stays bounded whatever follows.
_USER_VALUE = re.compile(
    r"(?:[\s:=]|\b(?:mitt|min|hans|hennes|er|is|var|was|til|brukeren|the|user|på|i|for|eduroam)\b){0,12}"
    r"([\w@][\w.@\-]{0,62}\w)"
)
_USER_VALUE_SPAN = 80
_GUEST = re.compile(r"\b(gjest\w*|guest)\b")
# An address's local part starts where a run of its characters starts, not at every "." or "-"
# inside one: from each of those the engine used to scan the rest of the run again.
_USERNAME = re.compile(
    r"\b(brukernavn\w*|username|user name|bruker-?id)\b|(?<![\w.\-])[\w.\-]+@[\w\-]+\.[a-z]{2,}\b"
)
# A building, then a room somewhere after it; or a room with its number. The first pair is
# looked for in two searches: one regex with ".*?" between them rescanned the rest of the text
# from every building word (375 KB with "bygget" on each line took 34 s).
_BUILDING = re.compile(r"\b(bygg\w*|bygning\w*|building|blokk|fløy|hus)\b")
_ROOM = re.compile(r"\b(rom|room|kontor|klasserom)\b")
_NUMBERED_ROOM = re.compile(r"\b(rom|room|klasserom)\s*(nr\.?\s*)?[a-z]?\d+")
_DEVICE = re.compile(
    r"\b(windows|mac ?os|macbook|ios|ipad ?os|android|linux|ubuntu|chrome ?os|chromebook|"
    r"iphone|ipad|pc|laptop|bærbar\w*|stasjonær\w*|nettbrett|skriver\w*|printer)\b",
)
_TROUBLESHOOT = re.compile(
    r"\b(feilsøk\w*|restart\w*|startet \w+ på nytt|omstart|prøvd|sjekket|ipconfig|"
    r"ping\w*|tracert|traceroute|nav\b|netinfo|tried|checked|rebooted)\b",
)
# The evidence is looked for in the first 64 KB of a message's text: what a person writes to
# describe a fault is at the top, and a stranger's megabyte of text must not cost more.
ANALYSED_CHARS = 65536
_NETINFO_FIELDS = {"mac", "device", "troubleshooting"}
# Mail-client signatures name a device that is not the one with the fault.
# Horizontal blanks only after ^: with \s the engine ran over every blank line below each line start.
_CLIENT_SIGNATURE = re.compile(
    r"^[ \t]*(sendt fra min \w+.*|sent from my \w+.*|(sendt fra|hent|get) outlook for (ios|android).*|"
    r"sendt fra e-post for windows.*|sent from mail for windows.*)$",
    re.I | re.M,
)


@dataclass(frozen=True)
class Evidence:
    text: str
    attachments: list[str]
    sender: Sender

    def netinfo(self) -> str:
        """The attached netinfo file's name ("" when there is none), quoted as the evidence."""
        return next((name for name in self.attachments if name.lower().startswith("netinfo")), "")

    @cached_property
    def folded(self) -> str:
        """The text lower-cased once; every word pattern here is written in lower case."""
        return folding.fold(self.text)

    @cached_property
    def phone(self) -> str | None:
        """The first phone number in the text (two fields want it)."""
        found = _PHONE.search(self.text)
        return found.group(0) if found else None

    def search(self, pattern: re.Pattern[str]) -> str | None:
        found = pattern.search(self.folded)
        return folding.quote(self.text, self.folded, found) if found else None

    def quote(self, start: int, end: int) -> str:
        """The text from start to end of the folded text, in the writer's own letters where possible."""
        source = self.text if len(self.text) == len(self.folded) else self.folded
        return source[start:end]


Detector = Callable[[Evidence], str | None]


def _match(pattern: re.Pattern[str]) -> Detector:
    def detect(evidence: Evidence) -> str | None:
        quote = evidence.search(pattern)
        return quote[:60] if quote is not None else None

    return detect


# A phrase runs from a cue word ("siden", "prøvd") to the end of its clause: a comma, a line end or
# a full stop before a word (not "kl. 08"), and never past a short slice, so the work stays bounded.
# (A real line feed in the class, not a backslash escape: the folding check allows class escapes only.)
_CLAUSE = re.compile("[^\n,;!?]*?(?=[\n,;!?]|\\.\\s+[^\\W\\d_]|\\.?$)")
_PHRASE_CHARS = 60


def _phrase(pattern: re.Pattern[str]) -> Detector:
    """The cue and the words after it, as the customer wrote them ("siden i morges kl. 08:10")."""

    def detect(evidence: Evidence) -> str | None:
        found = pattern.search(evidence.folded)
        if found is None:
            return None
        start = found.start()
        clause = _CLAUSE.match(evidence.folded[start : start + _PHRASE_CHARS])
        length = clause.end() if clause and clause.end() >= found.end() - start else _PHRASE_CHARS
        quote = evidence.quote(start, start + length)
        if len(quote) == _PHRASE_CHARS and " " in quote:
            quote = quote.rsplit(" ", 1)[0]  # cut at a word, not inside one
        return quote.rstrip(" .")

    return detect


def _organisation(evidence: Evidence) -> str | None:
    org = evidence.sender.organization
    return org.name if org else None


def registered_phone(sender: Sender) -> str | None:
    """The phone the registry holds for this contact's address, if any."""
    org = sender.organization
    found = [c.phone for c in (org.contacts if org else ()) if c.email == sender.address and c.phone]
    return found[0] if found else None


def reporter_phone(evidence: Evidence) -> str | None:
    """Where to call the reporter: the registry's number first, else the first one in the mail."""
    return registered_phone(evidence.sender) or evidence.phone


def _contact(evidence: Evidence) -> str | None:
    phone = reporter_phone(evidence)
    return f"{evidence.sender.address}, {phone}" if phone else None


def _username(evidence: Evidence) -> str | None:
    """The user name as the customer wrote it: an address, or the word after "brukernavn"."""
    found = _USERNAME.search(evidence.folded)
    if found is None:
        return None
    if found.group(1) is None:
        return folding.quote(evidence.text, evidence.folded, found)[:60]
    start = found.end()
    value = _USER_VALUE.match(evidence.folded[start : start + _USER_VALUE_SPAN])
    # The word alone is not the name: 2nd line needs the value, so it is still asked for.
    return evidence.quote(start + value.start(1), start + value.end(1)) if value else None


def _description(evidence: Evidence) -> str | None:
    words = evidence.text.split()
    # The customer's own opening words, so 2nd line sees what was described, not a count.
    return " ".join(words[:12])[:60] if len(words) >= 15 else None


def _location(evidence: Evidence) -> str | None:
    """The leftmost of "building … room" and "room 12", as the one regex of both found it."""
    folded, spans = evidence.folded, []
    building = _BUILDING.search(folded)
    room = _ROOM.search(folded, building.end()) if building else None
    if building is not None and room is not None:
        spans.append((building.start(), room.end()))
    numbered = _NUMBERED_ROOM.search(folded)
    if numbered is not None:
        spans.append((numbered.start(), numbered.end()))
    if not spans:
        return None
    start, end = min(spans, key=lambda span: span[0])  # a tie keeps the building's span
    return evidence.quote(start, end)[:60]


def _connection(evidence: Evidence) -> str | None:
    return evidence.search(_WIRELESS) or evidence.search(_WIRED)


@dataclass(frozen=True)
class Field:
    key: str
    nb: str
    en: str
    detect: Detector
    # Conditional fields are needed only when the case's text mentions what they depend on.
    needed_when: re.Pattern[str] | None = None


FIELDS: tuple[Field, ...] = (
    Field("organisation", "navn på virksomheten", "the organisation's name", _organisation),
    Field(
        "contact",
        "kontaktperson med navn, e-post og telefonnummer",
        "a contact person with name, email and phone number",
        _contact,
    ),
    Field(
        "when",
        "når feilen oppstod (siste gang, hvis den kommer og går)",
        "when the fault happened (the last time, if it comes and goes)",
        _phrase(_WHEN),
    ),
    Field(
        "description",
        "en beskrivelse: hva fungerer og hva fungerer ikke, én eller flere brukere",
        "a description: what works and what does not, one user or several",
        _description,
    ),
    Field(
        "connection",
        "trådløst (navn på nettet/SSID) eller kablet (nummeret på veggkontakten)",
        "wireless (the network name/SSID) or wired (the wall socket's number)",
        _connection,
    ),
    Field(
        "username",
        "brukernavnet (gjelder eduroam)",
        "the user name (for eduroam)",
        _username,
        needed_when=_EDUROAM,
    ),
    Field(
        "guest_phone",
        "brukerens telefonnummer (gjelder gjestenett med SMS-pålogging)",
        "the user's phone number (for the guest network with SMS login)",
        lambda e: e.phone,
        needed_when=_GUEST,
    ),
    Field(
        "location",
        "hvor: bygningsnummer eller -navn og romnummer",
        "where: building number or name, and room",
        _location,
    ),
    Field("mac", "MAC-adressen til enheten", "the device's MAC address", _match(_MAC)),
    Field("device", "operativsystem og type enhet", "operating system and device type", _match(_DEVICE)),
    Field(
        "troubleshooting",
        "hva den grunnleggende feilsøkingen viste (legg gjerne ved netinfo.log)",
        "what the basic troubleshooting found (attach netinfo.log if you have it)",
        _phrase(_TROUBLESHOOT),
    ),
)
BY_KEY = {f.key: f for f in FIELDS}


def found_in(evidence: Evidence) -> dict[str, str]:
    """Fields this one message supplies, with a short quote of what showed it."""
    found = _read(_cleaned(evidence), math.inf)
    assert found is not None  # no deadline
    return found


def analyse(subject: str, new_body: str, attachments: list[str], sender: Sender, budget: float) -> Analysis:
    """The fields in a message's new text and the ones it makes required, read within `budget` seconds.

    Runs before the write transaction (pipeline.steps.prepare), so a slow read never holds the
    lock other mail waits on. A running regex cannot be stopped from Python, so the clock is read
    between patterns instead: every pattern here is linear and reads at most ANALYSED_CHARS, so
    one search takes milliseconds and the budget is overrun by at most that much.
    """
    deadline = time.perf_counter() + budget
    evidence = _cleaned(Evidence(f"{subject}\n{new_body[:ANALYSED_CHARS]}", attachments, sender))
    pausepoint("analysis")
    present = _read(evidence, deadline)
    if present is None or time.perf_counter() > deadline:
        return Analysis(skipped=f"the text was not read to the end within {budget:g} s")
    return Analysis(present, tuple(f.key for f in _required_in(evidence.folded)))


def _cleaned(evidence: Evidence) -> Evidence:
    """The first ANALYSED_CHARS of the text, without mail-client signatures."""
    text = evidence.text[:ANALYSED_CHARS]
    return Evidence(_CLIENT_SIGNATURE.sub("", text), evidence.attachments, evidence.sender)


def _read(evidence: Evidence, deadline: float) -> dict[str, str] | None:
    """Every field's detector in turn; None when the clock passed the deadline between two of them."""
    present: dict[str, str] = {}
    for field in FIELDS:
        if time.perf_counter() > deadline:
            return None
        quote = field.detect(evidence)
        if quote is None and field.key in _NETINFO_FIELDS and evidence.netinfo():
            quote = evidence.netinfo()
        if quote is not None:
            present[field.key] = quote
    return present


def required(case_text: str) -> list[Field]:
    return _required_in(folding.fold(case_text))


def _required_in(folded: str) -> list[Field]:
    return [f for f in FIELDS if f.needed_when is None or f.needed_when.search(folded)]


def missing(case_text: str, present: set[str]) -> list[Field]:
    return [f for f in required(case_text) if f.key not in present]


# A registered contact's name, address and organisation are in the registry: of the contact
# field only a phone can be missing, and asking for the rest would tell them we do not know them.
_PHONE_ONLY = {"nb": "et telefonnummer vi kan nå deg på", "en": "a phone number we can reach you on"}


def question(field: Field, sender: Sender, language: str) -> str:
    """How a receipt asks for one missing field, leaving out what the registry already knows."""
    if field.key == "contact" and sender.kind == "contact" and sender.organization is not None:
        return _PHONE_ONLY["en" if language == "en" else "nb"]
    return field.en if language == "en" else field.nb
