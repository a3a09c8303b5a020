"""The facts rules look at, and the few named predicates that need code rather than a pattern."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.core import folding
from gateway.directory.who_wrote import Sender
from gateway.mail.message import InboundMessage
from gateway.mail.quoting import strip_quoted
from gateway.rules.intent import Intent


@dataclass(frozen=True)
class Facts:
    """Everything a rule may test about one message, computed once before the rules run."""

    message: InboundMessage
    sender: Sender
    case_state: str  # none, or the status of the case the mail threads into
    authenticated: bool
    automated: bool
    open_hours: bool
    intent: Intent = field(default_factory=Intent)
    _folded: dict[str, str] = field(default_factory=dict, repr=False, compare=False)
    _new: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    def text(self, field_name: str) -> str:
        """Rules read the new text: quoted history would make old words fire again."""
        if field_name == "subject":
            return self.message.subject
        if not self._new:
            self._new["body"] = strip_quoted(self.message.body, self.message.subject)
        if field_name == "body":
            return self._new["body"]
        return f"{self.message.subject}\n{self._new['body']}"

    def folded(self, field_name: str) -> str:
        """The lower-cased text, once per field however many rules search it."""
        if field_name not in self._folded:
            self._folded[field_name] = folding.fold(self.text(field_name))
        return self._folded[field_name]


Predicate = Callable[[Facts], str | None]


def _from_monitoring(facts: Facts) -> str | None:
    state = facts.message.header("x-nav-alert-state")
    return f"NAV alert ({state})" if state else None


def _has_netinfo(facts: Facts) -> str | None:
    for name in facts.message.attachments:
        if name.lower().startswith("netinfo"):
            return f"attachment {name}"
    return None


def _several_from_headers(facts: Facts) -> str | None:
    return "more than one From" if facts.message.from_count > 1 else None


def _nav_access(facts: Facts) -> str | None:
    org = facts.sender.organization
    return f"{org.id} has NAV access" if org is not None and org.nav_access else None


PREDICATES: dict[str, Predicate] = {
    "from-monitoring": _from_monitoring,
    "has-netinfo-log": _has_netinfo,
    "nav-access": _nav_access,
    "several-from-headers": _several_from_headers,
}
