"""Agents' mail commands (`#status løst`, `#tildel kari`, …): parsed and checked before anything applies."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from gateway.cases.escalation import Field
from gateway.directory.registry import Registry

# Norwegian and English words for the same command, mapped to one name.
NAMES = {
    "status": "status", "prioritet": "priority", "priority": "priority", "tildel": "assign",
    "assign": "assign", "eskaler": "escalate", "escalate": "escalate", "kategori": "category",
    "category": "category", "intern": "internal", "internal": "internal", "svar": "reply", "reply": "reply",
    "lokalt": "local", "lokal": "local", "local": "local",
}  # fmt: skip
STATUS = {
    "løst": "resolved", "lost": "resolved", "resolved": "resolved", "venter": "pending",
    "pending": "pending", "åpen": "open", "apen": "open", "open": "open", "lukket": "closed",
    "closed": "closed",
}  # fmt: skip
PRIORITY = {
    "kritisk": "critical", "critical": "critical", "høy": "high", "hoy": "high", "high": "high",
    "normal": "normal", "lav": "low", "low": "low",
}  # fmt: skip
CATEGORY = {
    "hendelse": "incident", "incident": "incident", "spørsmål": "question", "question": "question",
    "endring": "change", "change": "change", "utstyr": "equipment", "equipment": "equipment",
    "admin": "admin", "administrasjon": "admin", "annet": "other", "other": "other",
}  # fmt: skip
# Spaces after '#' are allowed: `# intern` is still the command (phones insert them).
_LINE = re.compile(r"^#\s*(\w+)\s*(.*)$")
# A first line that merely looks like an internal marker ("Intern:", "INTERNAL -") keeps the mail in.
# So does one that looks like a request for local work without its '#' ("Lokalt: bytt svitsj"):
# it is neither sent to the customer as an answer nor guessed into a request.
_MARKER = re.compile(
    r"^#?\s*(intern|internt|internal)\b|^#?\s*(lokalt|lokal|local)(\s*(arbeid|work))?\s*[:\-–]", re.I
)
# Invisible characters a client or a paste can put before the '#'.
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad\u180e"))


def normalise(line: str) -> str:
    """NFKC (full-width ＃ becomes #), invisible characters removed, outer space stripped."""
    return unicodedata.normalize("NFKC", line).translate(_INVISIBLE).strip()


NO_VALUE = ("escalate", "internal", "reply")
# Free text: `#lokalt bytt svitsj i rom 12` carries the start of the request on its own line.
FREE_TEXT = ("local",)
# "#lokalt arbeid: bytt svitsj" names the command in two words; the second is not the request.
_LOCAL_WORD = re.compile(r"^(arbeid|work)\s*(?:[:\-–]|$)", re.I)


@dataclass(frozen=True)
class Applied:
    """One thing a command did: a line for the shell (English, as `str`), parts for mail in any language.

    `field` is a case column (status, priority, category, owner) or one of escalated,
    escalation-failed, local-work, local-work-failed and missing (escalation information still
    missing: `fields`).
    """

    field: str
    old: str = ""
    new: str = ""
    fields: tuple[Field, ...] = ()

    def __str__(self) -> str:
        if self.field == "escalated":
            return f"escalated to {self.new}"
        if self.field == "escalation-failed":
            return "escalation NOT sent: service.second_line_address is not configured"
        if self.field == "local-work":
            return f"local work requested from {self.new}"
        if self.field == "local-work-failed":
            return f"local work NOT sent: {self.old}"
        if self.field == "missing":
            return "WARNING: missing escalation information: " + ", ".join(f.nb for f in self.fields)
        return f"{self.field}: {self.old or '-'} -> {self.new}"


# What an agent may write for each checked field, per language: offered when a value is unknown.
CHOICES = {
    "nb": {
        "status": "løst, venter, åpen, lukket", "priority": "kritisk, høy, normal, lav",
        "category": "hendelse, spørsmål, endring, utstyr, admin, annet",
    },
    "en": {
        "status": "resolved, pending, open, closed", "priority": "critical, high, normal, low",
        "category": "incident, question, change, equipment, admin, other",
    },
}  # fmt: skip


class BadValue(ValueError):
    """A command's value that cannot be used: `reason` is unknown-value or no-agent."""

    def __init__(self, message: str, reason: str, name: str, value: str) -> None:
        super().__init__(message)
        self.reason, self.name, self.value = reason, name, value


@dataclass(frozen=True)
class Rejected:
    """A command line that could not be used: English for the shell and history (`str`), parts for mail.

    `reason` is unknown-command, unknown-value or no-agent; `name` the command it was meant as.
    """

    line: str
    reason: str
    name: str = ""
    value: str = ""
    detail: str = ""

    def choices(self, language: str) -> str:
        return CHOICES.get(language, CHOICES["en"]).get(self.name, "")

    def __str__(self) -> str:
        return f"{self.line}: {self.detail or self.reason.replace('-', ' ')}"


@dataclass(frozen=True)
class Command:
    line: str
    name: str
    value: str = ""


@dataclass
class Parsed:
    commands: list[Command]
    errors: list[Rejected]
    text: str

    def has(self, name: str) -> bool:
        return any(c.name == name for c in self.commands)

    def local_work(self) -> str:
        """The request for local work: what follows `#lokalt` on its line, then the text below."""
        heads = [c.value for c in self.commands if c.name == "local" and c.value]
        return "\n\n".join([*heads, self.text]).strip()


def check(name: str, value: str, registry: Registry) -> str | None:
    """The canonical value, or raise ValueError naming what is wrong."""
    if name in NO_VALUE:
        return ""
    if name in FREE_TEXT:
        text = value.strip().lstrip(":-–").strip()
        return _LOCAL_WORD.sub("", text, count=1).lstrip(":-–").strip()
    table = {"status": STATUS, "priority": PRIORITY, "category": CATEGORY}.get(name)
    if table is not None:
        word = value.strip().lower()
        if word not in table:
            message = f"unknown value {value!r}; use one of: {', '.join(sorted(set(table)))}"
            raise BadValue(message, "unknown-value", name, value.strip())
        return table[word]
    agent = registry.agent_by_handle(value.strip().lstrip("@"))
    if agent is None:
        raise BadValue(f"no agent called {value!r}", "no-agent", name, value.strip())
    return agent.email


def parse(body: str, registry: Registry) -> Parsed:
    """Commands are the `#` lines at the very top; the first other line starts the answer."""
    lines = body.splitlines()
    commands: list[Command] = []
    errors: list[Rejected] = []
    index = 0
    while index < len(lines):
        line = normalise(lines[index])
        if not line:
            index += 1
            continue
        found = _LINE.match(line)
        if not found:
            if _MARKER.match(line):
                # Fail safe: it reads as "internal", so it is internal; the line stays in the note.
                commands.append(Command(line, "internal"))
            break
        index += 1
        name = NAMES.get(found.group(1).lower())
        if name is None:
            errors.append(Rejected(line, "unknown-command", value=found.group(1)))
            continue
        try:
            value = check(name, found.group(2), registry)
        except BadValue as exc:
            errors.append(Rejected(line, exc.reason, exc.name, exc.value, str(exc)))
            continue
        commands.append(Command(line, name, value or ""))
    return Parsed(commands, errors, "\n".join(lines[index:]).strip())
