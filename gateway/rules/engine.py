"""The rules engine: rules/*.toml compiled at load into checks, run in file-name order."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from gateway.core import folding
from gateway.rules.predicates import PREDICATES, Facts

INTENT_FILE = "intent.toml"
NAME = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
CATEGORIES = ("incident", "question", "change", "equipment", "admin", "end-user", "monitoring", "other")
PRIORITIES = ("critical", "high", "normal", "low")
SENDER_KINDS = ("agent", "contact", "end-user", "unknown")
CASE_STATES = ("none", "new", "open", "pending", "resolved", "closed")
ACTIONS = (
    "category",
    "priority",
    "queue",
    "reply",
    "hold",
    "refuse",
    "notify",
    "stop",
    "ask_missing",
    "confirm",
    "flag",
    "resolve",
)
# What the intent step found, as rules may test it (gateway.rules.intent).
INTENT_CHOICES = {
    "intent": ("report", "request", "question", "purchase", "admin"),
    "scope": ("wide", "local"),
    "severity": ("outage", "degraded", "none"),
}

Check = Callable[[Facts], str | None]
_INTENT_ATTR = {"intent": "category", "scope": "scope", "severity": "severity"}
INTENT_KEYS = (*_INTENT_ATTR, "intent_clear", "also_request", "topic")


class RuleError(Exception):
    """A rule file that cannot be used; names the file, the rule and the reason."""


@dataclass(frozen=True)
class Rule:
    name: str
    source: str
    check: Check
    then: dict[str, Any]
    description: str = ""


@dataclass
class Decision:
    """What the rules concluded for one message; reasons say which rule said what."""

    category: str = "question"
    priority: str = "normal"
    queue: str = "first-line"
    replies: list[str] = field(default_factory=list)
    hold: str | None = None
    refuse: str | None = None
    confirm: str | None = None
    notify: list[str] = field(default_factory=list)
    ask_missing: bool = False
    # Notes for the agent who reads the case, e.g. a possible change order that was not obeyed.
    flags: list[str] = field(default_factory=list)
    # Why the new case is resolved as soon as it opens (the reply answered it), or None.
    resolve: str | None = None
    fired: list[tuple[str, str]] = field(default_factory=list)

    def apply(self, rule: Rule, why: str) -> bool:
        """Apply a rule's actions; return True when evaluation should stop."""
        self.fired.append((rule.name, why))
        then = rule.then
        self.category = then.get("category", self.category)
        self.priority = then.get("priority", self.priority)
        self.queue = then.get("queue", self.queue)
        if "reply" in then and then["reply"] not in self.replies:
            self.replies.append(then["reply"])
        if "hold" in then:
            self.hold = then["hold"]
        if "refuse" in then:
            self.refuse = then["refuse"]
        if "confirm" in then:
            self.confirm = then["confirm"]
        for target in _as_list(then.get("notify", [])):
            if target not in self.notify:
                self.notify.append(target)
        if "flag" in then and then["flag"] not in self.flags:
            self.flags.append(then["flag"])
        self.ask_missing = self.ask_missing or bool(then.get("ask_missing", False))
        if "resolve" in then:
            self.resolve = then["resolve"]
        return bool(then.get("stop", False))


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _regex(value: Any, where: str) -> re.Pattern[str]:
    return re.compile(_source(value, where), re.I)


def _source(value: Any, where: str) -> str:
    """One alternation of a rule's patterns, checked to compile."""
    patterns = _as_list(value)
    if not all(isinstance(p, str) for p in patterns):
        raise RuleError(f"{where}: patterns must be strings")
    source = "|".join(f"(?:{p})" for p in patterns)
    try:
        re.compile(source, re.I)
    except re.error as exc:
        raise RuleError(f"{where}: bad pattern ({exc})") from None
    return source


def _choices(value: Any, allowed: tuple[str, ...], where: str) -> set[str]:
    items = set(_as_list(value))
    unknown = items - set(allowed)
    if unknown:
        raise RuleError(f"{where}: unknown value(s) {sorted(unknown)}; allowed: {', '.join(allowed)}")
    return items


def _text_check(field_name: str, source: str) -> Check:
    pattern, folded = folding.compile_folded(source)

    def check(facts: Facts) -> str | None:
        text = facts.text(field_name)
        searched = facts.folded(field_name) if folded else text
        found = pattern.search(searched)
        return f"{field_name} matches {folding.quote(text, searched, found)!r}" if found else None

    return check


def _compile_condition(key: str, value: Any, where: str) -> Check:
    here = f"{where} when.{key}"
    if key in ("all", "any"):
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise RuleError(f"{here}: must be an array of condition tables")
        parts = [compile_when(v, here) for v in value]
        return _all(parts) if key == "all" else _any(parts)
    if key == "not":
        if not isinstance(value, dict):
            raise RuleError(f"{here}: must be a condition table")
        inner = compile_when(value, here)
        return lambda facts: None if inner(facts) else "negated condition does not hold"
    if key == "sender":
        kinds = _choices(value, SENDER_KINDS, here)
        return lambda f: f"sender is {f.sender.kind}" if f.sender.kind in kinds else None
    if key == "role":
        from gateway.directory.registry import ROLES

        roles = _choices(value, tuple(ROLES), here)
        return lambda f: (
            f"sender is {', '.join(sorted(f.sender.roles & roles))}" if f.sender.roles & roles else None
        )
    if key == "organization":
        orgs = set(_as_list(value))
        return lambda f: (
            f"organisation {f.sender.organization.id}"
            if f.sender.organization and f.sender.organization.id in orgs
            else None
        )
    if key == "case":
        states = _choices(value, CASE_STATES, here)
        return lambda f: f"case is {f.case_state}" if f.case_state in states else None
    if key in ("subject", "body", "text"):
        return _text_check(key, _source(value, here))
    if key == "header":
        if not isinstance(value, dict):
            raise RuleError(f"{here}: must be a table of header = pattern")
        pairs = [(name.lower(), _regex(p, f"{here}.{name}")) for name, p in value.items()]
        return _header_check(pairs)
    if key == "attachment":
        globs = [str(g).lower() for g in _as_list(value)]
        return lambda f: next(
            (f"attachment {n}" for n in f.message.attachments if any(fnmatch(n.lower(), g) for g in globs)),
            None,
        )
    if key in INTENT_KEYS:
        return _intent_condition(key, value, here)
    if key in ("authenticated", "automated", "open_hours"):
        if not isinstance(value, bool):
            raise RuleError(f"{here}: must be true or false")
        return lambda f: f"{key} is {value}" if getattr(f, key) == value else None
    if key == "predicate":
        names = _as_list(value)
        for name in names:
            if name not in PREDICATES:
                raise RuleError(
                    f"{here}: unknown predicate {name!r} (known: {', '.join(sorted(PREDICATES))})"
                )
        return _all([_predicate(n) for n in names])
    raise RuleError(f"{here}: unknown condition")


def _intent_condition(key: str, value: Any, here: str) -> Check:
    """A condition on what the mail asks for (gateway.rules.intent), not on its words."""
    if key in INTENT_CHOICES:
        return _intent_check(key, _choices(value, INTENT_CHOICES[key], here))
    if key == "topic":
        topics = set(_as_list(value))
        if not topics or not all(isinstance(t, str) and NAME.match(t) for t in topics):
            raise RuleError(f"{here}: must be one or more kebab-case topic names from {INTENT_FILE}")
        return _topic_check(topics)
    if not isinstance(value, bool):
        raise RuleError(f"{here}: must be true or false")
    attr = "clear" if key == "intent_clear" else key
    return lambda f: f"{key} is {value}" if getattr(f.intent, attr) == value else None


def _topic_check(wanted: set[str]) -> Check:
    def check(facts: Facts) -> str | None:
        found = wanted.intersection(facts.intent.topics)
        return f"topic {', '.join(sorted(found))}" if found else None

    return check


def _intent_check(key: str, wanted: set[str]) -> Check:
    attr = _INTENT_ATTR[key]

    def check(facts: Facts) -> str | None:
        found = getattr(facts.intent, attr)
        return f"{key} is {found}" if found in wanted else None

    return check


def _predicate(name: str) -> Check:
    func = PREDICATES[name]
    return lambda facts: func(facts)


def _header_check(pairs: list[tuple[str, re.Pattern[str]]]) -> Check:
    def check(facts: Facts) -> str | None:
        for name, pattern in pairs:
            values = facts.message.headers.get(name, [])
            if not any(pattern.search(v) for v in values):
                return None
        return "header " + ", ".join(name for name, _ in pairs)

    return check


def _all(parts: list[Check]) -> Check:
    def check(facts: Facts) -> str | None:
        reasons = []
        for part in parts:
            why = part(facts)
            if why is None:
                return None
            reasons.append(why)
        return "; ".join(reasons)

    return check


def _any(parts: list[Check]) -> Check:
    def check(facts: Facts) -> str | None:
        for part in parts:
            why = part(facts)
            if why is not None:
                return why
        return None

    return check


def compile_when(when: dict[str, Any], where: str) -> Check:
    if not when:
        return lambda facts: "always"
    return _all([_compile_condition(k, v, where) for k, v in when.items()])


def _check_then(then: Any, where: str, templates: set[str] | None) -> dict[str, Any]:
    if not isinstance(then, dict) or not then:
        raise RuleError(f"{where}: 'then' must be a non-empty table")
    for key, value in then.items():
        if key not in ACTIONS:
            raise RuleError(f"{where} then.{key}: unknown action (known: {', '.join(ACTIONS)})")
        if key == "category":
            _choices(value, CATEGORIES, f"{where} then.category")
        if key == "priority":
            _choices(value, PRIORITIES, f"{where} then.priority")
        if key in ("reply", "refuse", "confirm") and templates is not None and value not in templates:
            raise RuleError(f"{where} then.{key}: no template {value!r} for every language")
        if key == "flag" and (not isinstance(value, str) or not value.strip()):
            raise RuleError(f"{where} then.flag: must be a non-empty text for the agent")
        if key == "resolve" and (not isinstance(value, str) or not value.strip()):
            raise RuleError(f"{where} then.resolve: must be a non-empty reason for the case's history")
        if key in ("stop", "ask_missing") and not isinstance(value, bool):
            raise RuleError(f"{where} then.{key}: must be true or false")
    return dict(then)


def load_rules(directory: Path, templates: set[str] | None = None) -> list[Rule]:
    """Load and compile every rules/*.toml in name order; any problem stops the load."""
    rules: list[Rule] = []
    seen: dict[str, str] = {}
    for path in sorted(directory.glob("*.toml")):
        if path.name == INTENT_FILE:
            continue  # the intent vocabulary, read by gateway.rules.intent
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise RuleError(f"{path.name}: not valid TOML ({exc})") from None
        for index, entry in enumerate(data.get("rule", [])):
            name = entry.get("name")
            where = f"{path.name} rule {name or '#' + str(index + 1)}"
            if not isinstance(name, str) or not NAME.match(name):
                raise RuleError(f"{where}: name must be kebab-case")
            if name in seen:
                raise RuleError(f"{where}: name already used in {seen[name]}")
            seen[name] = path.name
            unknown = set(entry) - {"name", "when", "then", "description"}
            if unknown:
                raise RuleError(f"{where}: unknown field(s) {sorted(unknown)}")
            when = entry.get("when", {})
            if not isinstance(when, dict):
                raise RuleError(f"{where}: 'when' must be a table")
            rules.append(
                Rule(
                    name=name,
                    source=path.name,
                    check=compile_when(when, where),
                    then=_check_then(entry.get("then"), where, templates),
                    description=str(entry.get("description", "")),
                )
            )
    return rules


def decide(rules: list[Rule], facts: Facts) -> Decision:
    decision = Decision()
    for rule in rules:
        why = rule.check(facts)
        if why is not None and decision.apply(rule, why):
            break
    return decision
