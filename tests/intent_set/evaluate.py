"""The labelled intent set through the gateway's real decision path: prepare() and the shipped rules."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

from gateway.changes import confirmations
from gateway.directory.registry import Contact
from gateway.flow.context import facts_for
from gateway.mail.auth import Verdict
from gateway.pipeline.steps import prepare
from gateway.rules.engine import Decision, decide
from gateway.runtime import Runtime

DEV = Path(__file__).with_name("dev.jsonl")
INTENTS = ("report", "request", "question", "purchase", "admin")
# The case category each label should end in (a refusal or confirmation keeps the order's category).
EXPECTED_CATEGORY = {
    "report": "incident",
    "request": "change",
    "question": "question",
    "purchase": "equipment",
    "admin": "admin",
}
CATEGORY_TO_INTENT = {v: k for k, v in EXPECTED_CATEGORY.items()}


def load(path: Path = DEV) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def holdout(records: list[dict[str, object]]) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    """Every 5th mail was set aside before the vocabulary was tuned: (tuned on, held out)."""
    return (
        [r for i, r in enumerate(records) if i % 5 != 4],
        [r for i, r in enumerate(records) if i % 5 == 4],
    )


def contact_for(runtime: Runtime, role: str) -> Contact:
    """A registered contact with the role; for other roles one who is not also Teknisk ansvarlig."""
    for org in runtime.registry().organizations.values():
        for contact in org.contacts_with(role):
            if role == "technical" or "technical" not in org.roles_of(contact.email):
                return contact
    raise LookupError(f"no contact with role {role} in the registry")


def as_mail(record: dict[str, object], contact: Contact) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"{contact.name} <{contact.email}>"
    msg["To"] = "kontakt@service.example"
    msg["Subject"] = str(record["subject"])
    msg["Message-ID"] = f"<{record['id']}@client.example>"
    msg.set_content(str(record["body"]))
    return bytes(msg)


@dataclass
class Outcome:
    record: dict[str, object]
    decision: Decision
    intent: str  # what the gateway made of it, as a label
    costly: list[str] = field(default_factory=list)


def run_one(runtime: Runtime, record: dict[str, object], authenticated: bool, open_hours: bool) -> Outcome:
    """One mail decided as the pipeline decides it, from a contact of the mail's role."""
    ctx = prepare(runtime, as_mail(record, contact_for(runtime, str(record["role"]))), "pipe", None)
    if authenticated:
        ctx.verdict = Verdict(True, "evaluated as authenticated")
    facts = dataclasses.replace(facts_for(runtime, ctx), open_hours=open_hours)
    ctx.decision = decide(runtime.rules(), facts)
    confirmations.should_ask(ctx)
    d = ctx.decision
    got = CATEGORY_TO_INTENT.get(d.category, d.category)
    costly = []
    if record["intent"] == "report":
        for what, happened in (("held", d.hold), ("refused", d.refuse), ("asked to confirm", d.confirm)):
            if happened:
                costly.append(f"fault report {what} ({happened})")
        if d.category != "incident":
            costly.append(f"fault report opened as {d.category}")
    if record["outage"] and d.priority != "critical":
        costly.append(f"outage at priority {d.priority}")
    if record["outage"] and not open_hours and "on-call" not in d.notify:
        costly.append("outage at night without on-call alert")
    return Outcome(record, d, got, costly)


@dataclass
class Report:
    outcomes: list[Outcome]

    def accuracy(self, label: str | None = None) -> tuple[int, int]:
        chosen = [o for o in self.outcomes if label is None or o.record["intent"] == label]
        return sum(o.intent == o.record["intent"] for o in chosen), len(chosen)

    def confusion(self) -> Counter[tuple[str, str]]:
        return Counter((str(o.record["intent"]), o.intent) for o in self.outcomes)

    def costly(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.costly]

    def outages(self) -> tuple[int, int]:
        outages = [o for o in self.outcomes if o.record["outage"]]
        return sum(o.decision.priority == "critical" for o in outages), len(outages)


def run(runtime: Runtime, records: list[dict[str, object]], authenticated: bool, open_hours: bool) -> Report:
    return Report([run_one(runtime, r, authenticated, open_hours) for r in records])


def render(report: Report, title: str) -> str:
    """Accuracy per category and overall, the confusion matrix, costly errors and outages critical."""
    right, total = report.accuracy()
    lines = [f"{title}: {right}/{total} right ({100 * right / max(total, 1):.1f} %)"]
    for label in INTENTS:
        r, t = report.accuracy(label)
        lines.append(f"  {label:<9} {r:>3}/{t:<3} {100 * r / max(t, 1):5.1f} %")
    got = sorted({o.intent for o in report.outcomes} | set(INTENTS), key=_order)
    conf = report.confusion()
    lines.append("  confusion (rows: label, columns: gateway)")
    lines.append("  " + " " * 10 + "".join(f"{g[:8]:>9}" for g in got))
    for label in INTENTS:
        lines.append(f"  {label:<10}" + "".join(f"{conf[(label, g)]:>9}" for g in got))
    crit, outages = report.outages()
    lines.append(f"  costly errors: {len(report.costly())}; outages critical: {crit}/{outages}")
    lines += [f"    {o.record['id']}: {'; '.join(o.costly)}" for o in report.costly()]
    return "\n".join(lines)


def _order(label: str) -> tuple[int, str]:
    return (INTENTS.index(label) if label in INTENTS else len(INTENTS), label)
