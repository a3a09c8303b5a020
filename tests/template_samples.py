"""Realistic contexts for every template, built from a real store, registry, change and digest figures."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from gateway.cases.commands import Applied
from gateway.cases.escalation import BY_KEY
from gateway.changes.record import Change
from gateway.directory.registry import Agent, Contact, Organization
from gateway.directory.who_wrote import Sender
from gateway.reports.digest import chart
from gateway.reports.figures import Figures, latest_period
from gateway.runtime import Runtime

OSLO = ZoneInfo("Europe/Oslo")
# Each language has an organisation of its own in data/contacts.toml and a registered reporter.
ORGANISATION = {"nb": "nordby-skole", "en": "vestland-college"}
REPORTER = {"nb": "kari.nordmann@nordby-skole.example", "en": "j.whitfield@vestland-college.example"}
# What a customer writes, in the customer's own language: these words end up in staff mail.
TEXT = {
    "nb": "Hei,\n\ningen på rom 204 i bygg A får koblet seg til eduroam siden i morges.\n\nHilsen Kari",
    "en": "Hello,\n\nnobody in room 204 of building A can join eduroam since this morning.\n\nRegards, James",
}
SUBJECT = {"nb": "Nettet er nede i 2. etasje", "en": "The network is down on the 2nd floor"}


@dataclass
class World:
    """Everything the pipeline would have at hand when it renders mail in one language."""

    runtime: Runtime
    language: str
    organization: Organization
    reporter: Contact
    case: dict[str, Any]
    change: Change
    moved: Change
    now: datetime
    bare: bool  # no display names anywhere: the shape a template must also render cleanly

    @property
    def service(self) -> Any:
        return self.runtime.config.service

    @property
    def tag(self) -> str:
        return f"{self.service.case_prefix}#{self.case['id']}"

    @property
    def sender(self) -> Sender:
        name = "" if self.bare else self.reporter.name
        return Sender(
            self.reporter.email, name, "contact", self.organization, frozenset({self.reporter.role})
        )

    @property
    def contact(self) -> Contact:
        return replace(self.reporter, name="") if self.bare else self.reporter

    def base(self) -> dict[str, Any]:
        """What casework.template_context gives every customer and staff template."""
        org = self.organization
        return {
            "service": self.service,
            "case": self.case,
            "tag": self.tag,
            "sender": self.sender,
            "organization": org,
            "local_support": org.contacts_with("local-support"),
            "technical": org.contacts_with("technical"),
            "subject": self.case["subject"],
            "now": self.now,
        }

    def change_context(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "organization": self.organization,
            "contact": self.contact,
            "roles": ["change", "technical"],
            "change": self.change,
            "previous": self.moved,
            "asks_input": True,
        }


def _flag(world: World) -> str:
    """A note for the agent exactly as the shipped rules write it."""
    return next(r.then["flag"] for r in world.runtime.rules() if "flag" in r.then)


def _missing(world: World) -> list[str]:
    fields = [BY_KEY["mac"], BY_KEY["device"]]
    return [f.en if world.language == "en" else f.nb for f in fields]


def _escalation(world: World) -> dict[str, Any]:
    text = TEXT[world.language]
    present = [
        (BY_KEY["location"], "rom 204"),
        (BY_KEY["username"], "kari.n"),
        (BY_KEY["when"], "siden i morges"),
    ]
    case = dict(world.case, requester_name="" if world.bare else world.case["requester_name"])
    return {
        "service": world.service,
        "case": case,
        "organization": world.organization,
        "tag": world.tag,
        "present": present,
        "missing": [BY_KEY["mac"], BY_KEY["device"]],
        # As the messages table keeps them: ISO text in UTC.
        "history": [
            (world.case["created_at"], world.reporter.email, 0, text),
            (
                (world.now + timedelta(minutes=20)).astimezone(ZoneInfo("UTC")).isoformat(),
                "mona@service.example",
                1,
                "Ringt kunden.",
            ),
        ],
    }


def _agents_digest(world: World) -> dict[str, Any]:
    rt = world.runtime
    figures = Figures(rt.config, rt.store, rt.registry(), rt.calendar)
    period = latest_period("daily", world.now, rt.calendar)
    found = figures.agents(period, world.now, once=True)
    return {
        "service": world.service,
        "period": period,
        "figures": found,
        "chart": chart(found.days, world.language),
    }


def _customer_digest(world: World) -> dict[str, Any]:
    rt = world.runtime
    figures = Figures(rt.config, rt.store, rt.registry(), rt.calendar)
    period = latest_period("weekly", world.now, rt.calendar)
    ours = [f for f in figures.customers(period, world.now) if f.organization == world.organization.id]
    return {"service": world.service, "period": period, "figures": ours[0]}


def _undelivered(world: World) -> dict[str, Any]:
    return {
        "service": world.service,
        "change": world.change,
        "organization_name": world.organization.name,
        "recipient": world.reporter.email,
        "kind": "notice",
        "message_id": "<20260302.abc@service.example>",
        "error": "550 5.1.1 mailbox unavailable",
        "notice_deadline": datetime.combine(world.now.date() + timedelta(days=20), time(12), tzinfo=OSLO),
    }


Builder = Callable[[World], dict[str, Any]]

# Keyed by "<audience>/<event>", as under templates/<lang>/. A template without an entry here fails
# the render test by name, so a new template is given realistic data when it is added.
AGENT = Agent("Erik Dahl", "erik@service.example", 1)

SAMPLES: dict[str, Builder] = {
    # A critical report at night: the on-call was called, and the receipt still asks what is missing.
    "customer/receipt": lambda w: w.base() | {
        "case": dict(w.case, priority="critical"), "missing": _missing(w), "missing_keys": ["mac", "device"],
        "on_call_alerted": True,
    },
    "customer/answer": lambda w: {
        "service": w.service, "case": w.case, "tag": w.tag, "text": "Vi har startet svitsjen på nytt.",
        "agent": w.runtime.registry().agents["mona@service.example"],
    },
    "customer/change-confirm": lambda w: w.base() | {"case": None, "tag": "", "token": "KXPT-4M9R"},
    "customer/change-not-allowed": lambda w: w.base() | {"case": None, "tag": ""},
    "customer/end-user-redirect": lambda w: w.base() | {"case": None, "tag": ""},
    "customer/equipment-shop": lambda w: w.base() | {"case": None, "tag": ""},
    "customer/change-notice": lambda w: w.change_context(),
    "customer/change-urgent": lambda w: w.change_context() | {"change": replace(w.change, urgent=True)},
    "customer/change-update": lambda w: w.change_context() | {"change": w.moved, "previous": w.change},
    "customer/change-reminder": lambda w: w.change_context(),
    "customer/change-cancel": lambda w: w.change_context(),
    "customer/change-complete": lambda w: w.change_context(),
    "customer/incident-notice": lambda w: {
        "service": w.service, "case": w.case, "tag": w.tag, "organization": w.organization,
        "message": "", "now": w.now,
    },
    "customer/incident-update": lambda w: SAMPLES["customer/incident-notice"](w) | {"message": TEXT[w.language]},
    "customer/incident-resolved": lambda w: SAMPLES["customer/incident-notice"](w),
    "customer/digest": _customer_digest,
    "customer/local-work": lambda w: {
        "service": w.service, "case": w.case, "tag": w.tag, "organization": w.organization,
        "text": TEXT[w.language], "agent": AGENT,
    },
    # The self-service answer goes to a contact who may not order changes, about a port's VLAN.
    "customer/self-service": lambda w: w.base(),
    # The on-call alert is for critical cases.
    "staff/alert": lambda w: w.base() | {"case": dict(w.case, priority="critical"), "body": TEXT[w.language],
        "phone": w.reporter.phone,
    },
    "staff/notify": lambda w: w.base() | {
        "event": "new-case", "text": TEXT[w.language], "missing": [BY_KEY["mac"]], "flags": [_flag(w)],
    },
    "staff/escalation": _escalation,
    "staff/command-result": lambda w: {
        "kept_whole": False, "commands": True, "service": w.service, "case": w.case, "tag": w.tag,
        "changes": [
            Applied("status", "new", "pending"), Applied("priority", "normal", "critical"),
            Applied("category", "incident", "change"), Applied("owner", "", "erik@service.example"),
            Applied("escalated", new="andrelinje@service.example"),
            Applied("missing", fields=(BY_KEY["mac"], BY_KEY["device"])), Applied("escalation-failed"),
            Applied("local-work", new="drift@fjellvik.kommune.example"),
            Applied("local-work-failed", old="no-local-support", new=w.organization.name),
            Applied("local-work-failed", old="no-organisation"), Applied("local-work-failed", old="no-text"),
        ],
        "errors": [],
    },
    "staff/loop-alert": lambda w: {
        "service": w.service, "sender": w.sender, "organization": w.organization, "count": 20,
        "limit": 20, "event": "receipt", "subject": w.case["subject"], "tag": w.tag, "now": w.now,
    },
    "staff/change-reply": lambda w: {
        "service": w.service, "change": w.change, "sender": w.sender, "subject": "SV: " + w.change.title,
        "body": TEXT[w.language],
    },
    "staff/change-undelivered": _undelivered,
    "staff/digest": _agents_digest,
}  # fmt: skip
