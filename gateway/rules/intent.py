"""What a mail asks for: weighed signals from rules/intent.toml, separate from who wrote it."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from gateway.core import folding
from gateway.mail.quoting import strip_quoted

INTENTS = ("report", "request", "question", "purchase", "admin")
# Signals that do not vote for a category but say how wide and how bad a fault is, or what the
# mail is about (a topic: the signal's name, for rules that answer one narrow kind of request).
MEASURES = ("scope", "severity", "topic")
SEVERITIES = ("outage", "degraded")
# A group that is itself repeated and holds a repetition can backtrack exponentially.
_NESTED = re.compile(r"\)(?:[*+]|\{\d*,?\d*\})")
_REPEAT_INSIDE = re.compile(r"(?<!\\)(?:[*+]|\{\d*,\d*\})")
_BACKREF = re.compile(r"\\[1-9]")


class IntentError(Exception):
    """An intent vocabulary that cannot be used; names the file and the reason."""


@dataclass(frozen=True)
class Signal:
    name: str
    votes: str  # an intent, or scope/severity
    weight: float
    pattern: re.Pattern[str]
    level: str = ""  # for severity: outage or degraded


@dataclass(frozen=True)
class Vocabulary:
    signals: tuple[Signal, ...]
    min_score: float = 2.0
    margin: float = 2.0
    max_chars: int = 65536
    request_note: float = 2.0  # a report with this much request weight also notes the request
    # Common misspellings ("ikek") read as the word meant, before any signal is tried.
    spelling: dict[str, str] = field(default_factory=dict)
    respell: re.Pattern[str] | None = None

    @classmethod
    def load(cls, path: Path) -> Vocabulary:
        """Read and check the vocabulary once; any problem names the file and the reason."""
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise IntentError(f"{path}: missing (the intent vocabulary is required)") from None
        except tomllib.TOMLDecodeError as exc:
            raise IntentError(f"{path.name}: not valid TOML ({exc})") from None
        unknown_tables = set(data) - {"settings", "signal", "spelling"}
        if unknown_tables:
            raise IntentError(f"{path.name}: unknown table(s) {sorted(unknown_tables)}")
        settings = data.get("settings", {})
        unknown = set(settings) - {"min_score", "margin", "max_chars", "request_note"}
        if unknown:
            raise IntentError(f"{path.name}: unknown setting(s) {sorted(unknown)}")
        signals = tuple(_signal(entry, path.name, i) for i, entry in enumerate(data.get("signal", [])))
        names = [s.name for s in signals]
        if len(set(names)) != len(names):
            raise IntentError(f"{path.name}: a signal name is used twice")
        if not any(s.votes == "report" for s in signals):
            raise IntentError(f"{path.name}: no report signals; fault reports could not be recognised")
        spelling = _spelling(data.get("spelling", {}), path.name)
        try:
            return cls(
                signals,
                float(settings.get("min_score", 2.0)),
                float(settings.get("margin", 2.0)),
                int(settings.get("max_chars", 65536)),
                float(settings.get("request_note", 2.0)),
                spelling,
                re.compile(r"\b(?:" + "|".join(map(re.escape, spelling)) + r")\b") if spelling else None,
            )
        except (TypeError, ValueError) as exc:
            raise IntentError(f"{path.name}: settings: {exc}") from None


def _spelling(table: Any, source: str) -> dict[str, str]:
    if not isinstance(table, dict):
        raise IntentError(f"{source} spelling: must be a table of misspelling = word")
    for wrong, right in table.items():
        if not re.fullmatch(r"[^\W\d_]+", wrong) or wrong != wrong.lower() or not isinstance(right, str):
            raise IntentError(f"{source} spelling.{wrong}: a lower-case word mapped to the word meant")
    return dict(table)


def _signal(entry: Any, source: str, index: int) -> Signal:
    where = f"{source} signal {entry.get('name', '#' + str(index + 1)) if isinstance(entry, dict) else index}"
    if not isinstance(entry, dict):
        raise IntentError(f"{where}: must be a table")
    unknown = set(entry) - {"name", "votes", "weight", "patterns", "level", "note"}
    if unknown:
        raise IntentError(f"{where}: unknown field(s) {sorted(unknown)}")
    name, votes, weight = entry.get("name"), entry.get("votes"), entry.get("weight", 1.0)
    if not isinstance(name, str) or not name:
        raise IntentError(f"{where}: name must be a non-empty string")
    if votes not in INTENTS + MEASURES:
        raise IntentError(f"{where}: votes must be one of {', '.join(INTENTS + MEASURES)}")
    if not isinstance(weight, int | float) or isinstance(weight, bool):
        raise IntentError(f"{where}: weight must be a number")
    level = entry.get("level", "outage" if votes == "severity" else "")
    if votes == "severity" and level not in SEVERITIES:
        raise IntentError(f"{where}: level must be one of {', '.join(SEVERITIES)}")
    patterns = entry.get("patterns")
    if not isinstance(patterns, list) or not patterns or not all(isinstance(p, str) for p in patterns):
        raise IntentError(f"{where}: patterns must be a non-empty list of strings")
    for p in patterns:
        _check_linear(p, where)
    source_re = _joined(patterns)
    if not folding.foldable(source_re.replace("\\n", "")):  # a newline has no case
        raise IntentError(f"{where}: patterns must be lower case (they search lower-cased text)")
    try:
        pattern = re.compile(source_re)
    except re.error as exc:
        raise IntentError(f"{where}: bad pattern ({exc})") from None
    return Signal(name, votes, float(weight), pattern, level)


def _joined(patterns: list[str]) -> str:
    """One alternation; a shared leading \\b is tested once per position, not once per pattern."""
    bounded = [p[2:] for p in patterns if p.startswith("\\b") and not _top_level_bar(p)]
    rest = [p for p in patterns if not p.startswith("\\b") or _top_level_bar(p)]
    parts = ["\\b(?:" + "|".join(f"(?:{p})" for p in bounded) + ")"] if bounded else []
    return "|".join(parts + [f"(?:{p})" for p in rest])


def _top_level_bar(pattern: str) -> bool:
    """True when the pattern is itself an alternation outside any group or character class."""
    depth, escaped, in_class = 0, False, False
    for char in pattern:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "|" and depth == 0:
            return True
    return False


def _check_linear(pattern: str, where: str) -> None:
    """Refuse what could backtrack badly on a stranger's text: repeated groups that repeat inside."""
    if _BACKREF.search(pattern):
        raise IntentError(f"{where}: back-references are not allowed ({pattern!r})")
    for found in _NESTED.finditer(pattern):
        depth, start = 0, found.start()
        while start > 0:  # walk back to the group's opening parenthesis
            start -= 1
            if pattern[start] == ")" and pattern[start - 1 : start] != "\\":
                depth += 1
            elif pattern[start] == "(" and pattern[start - 1 : start] != "\\":
                if depth == 0:
                    break
                depth -= 1
        if _REPEAT_INSIDE.search(pattern[start + 1 : found.start()]):
            raise IntentError(f"{where}: nested repetition is not allowed ({pattern!r})")


@dataclass(frozen=True)
class Fired:
    signal: str
    votes: str
    weight: float
    words: tuple[str, ...]


@dataclass(frozen=True)
class Intent:
    """The category a mail asks for, how sure that is, and why."""

    category: str = "question"
    clear: bool = False
    scores: dict[str, float] = field(default_factory=dict)
    fired: tuple[Fired, ...] = ()
    scope: str = "local"  # wide: a whole site or all users
    severity: str = "none"  # outage, degraded or none
    also_request: bool = False  # a report that also asks for a change
    topics: tuple[str, ...] = ()  # names of the topic signals that fired

    @property
    def outage(self) -> bool:
        return self.category == "report" and self.scope == "wide" and self.severity == "outage"

    def summary(self) -> str:
        scores = " ".join(f"{k}={v:g}" for k, v in sorted(self.scores.items(), key=lambda kv: -kv[1]))
        head = f"{self.category} ({'clear' if self.clear else 'not clear'}); scope={self.scope}"
        head += f" severity={self.severity}; scores {scores or 'none'}"
        head += f"; topics {', '.join(self.topics)}" if self.topics else ""
        return head + ("; also asks for a change" if self.also_request else "")

    def signals_text(self) -> str:
        words = (f"{f.signal} ({f.votes} {f.weight:+g}): {', '.join(f.words)}" for f in self.fired)
        return "; ".join(words) or "no signal fired"


# A sign-off on a line of its own ends the new text: signatures and disclaimers below it say
# nothing about what is asked ("mottatt ved en feil" is no fault report).
_SIGN_OFF = re.compile(
    r"^[ \t]*(mvh|m\.v\.h\.?|med vennlig hilsen|vennlig hilsen|venleg helsing|beste hilsen|hilsen|helsing"
    r"|hilsing|kind regards|best regards|regards|best wishes|cheers|br|--)[ \t,.!]*[^\n]{0,40}$"
    r"|^[ \t]*(takk|thanks|thank you|many thanks|ha en fin dag|have a nice day)[^\n]{0,20}$",
    re.I | re.M,
)


# Signs that a body carries quoted or forwarded history; without any, the reply parser (a third of
# the step's time) has nothing to remove that the sign-off cut below does not.
_QUOTE_HINTS = (
    "\n>",
    "skrev",
    "wrote",
    "fra:",
    "from:",
    "sendt:",
    "sent:",
    "opprinnelig",
    "original",
    "videresend",
    "forward",
    "____",
)


def new_text(body: str, limit: int = 65536) -> str:
    """The customer's own words: quoted history, client footers and what follows a sign-off removed."""
    text = body[:limit]
    folded = text.lower()
    if text.startswith(">") or any(hint in folded for hint in _QUOTE_HINTS):
        text = strip_quoted(text)
    cut = _SIGN_OFF.search(text, 1)
    return text[: cut.start()] if cut else text.strip()


def read_mail(vocabulary: Vocabulary, subject: str, body: str) -> Intent:
    """The intent of a mail from its subject and body as received."""
    return read(vocabulary, subject, new_text(body, vocabulary.max_chars))


# A letter typed three times or more ("nettt") is read as two.
_TRIPLED = re.compile(r"([^\W\d_])\1{2,}")


def read(vocabulary: Vocabulary, subject: str, new_text: str) -> Intent:
    """Weigh every signal over the subject and the new text of the body (bounded)."""
    text = _TRIPLED.sub(r"\1\1", folding.fold(f"{subject}\n{new_text}"[: vocabulary.max_chars]))
    if vocabulary.respell is not None:
        text = vocabulary.respell.sub(lambda m: vocabulary.spelling[m.group(0)], text)
    scores = dict.fromkeys(INTENTS, 0.0)
    fired: list[Fired] = []
    wide, severity, topics = False, "none", []
    for signal in vocabulary.signals:
        words: list[str] = []
        for found in signal.pattern.finditer(text):
            if found.group(0).strip() not in words:
                words.append(found.group(0).strip())
            if len(words) == 3:
                break
        if not words:
            continue
        fired.append(Fired(signal.name, signal.votes, signal.weight, tuple(words)))
        if signal.votes == "scope":
            wide = True
        elif signal.votes == "topic":
            topics.append(signal.name)
        elif signal.votes == "severity":
            severity = "outage" if "outage" in (severity, signal.level) else signal.level
        else:
            scores[signal.votes] += signal.weight
    intent = _conclude(vocabulary, scores, tuple(fired), wide, severity)
    return replace(intent, topics=tuple(topics)) if topics else intent


def _conclude(
    vocabulary: Vocabulary, scores: dict[str, float], fired: tuple[Fired, ...], wide: bool, severity: str
) -> Intent:
    ranked = sorted(INTENTS, key=lambda k: (-scores[k], INTENTS.index(k)))
    top, second = ranked[0], ranked[1]
    if scores[top] < vocabulary.min_score:
        # Nothing stands out: a person reads it as a question, but any sign of a fault (a symptom,
        # a whole site, a severity word) makes it a report, so that a case for a fault opens.
        faulty = scores["report"] > 0 or wide or severity != "none"
        top = "report" if faulty and scores["report"] >= scores[top] else "question"
    clear = scores[top] >= vocabulary.min_score and scores[top] - scores[second] >= vocabulary.margin
    if top != "report" and scores["report"] > 0:
        clear = False  # any sign of a fault: never answered without a case
    shown = {k: v for k, v in scores.items() if v}
    also = top == "report" and scores["request"] >= vocabulary.request_note
    return Intent(top, clear, shown, fired, "wide" if wide else "local", severity, also)
