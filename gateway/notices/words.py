"""The words mail shows for stored values (category, priority, status, …), per language, as data."""

from __future__ import annotations

from datetime import datetime

# Cases, changes and digests store English keys; a reader sees them in the mail's own language.
# A value missing here is shown as stored, so a new value is visible rather than an error.
TERMS: dict[str, dict[str, dict[str, str]]] = {
    "nb": {
        "category": {
            "incident": "hendelse", "question": "spørsmål", "change": "endring", "equipment": "utstyr",
            "end-user": "sluttbruker", "monitoring": "overvåking", "admin": "administrasjon",
            "other": "annet",
        },
        "priority": {"critical": "kritisk", "high": "høy", "normal": "normal", "low": "lav"},
        "status": {
            "new": "ny", "open": "åpen", "pending": "venter på kunden", "resolved": "løst",
            "closed": "lukket",
        },
        "customer_status": {"new": "ny", "open": "åpen", "pending": "venter på dere"},
        "severity": {"outage": "nede", "degraded": "redusert", "none": "ingen"},
        "target": {"first-response": "første respons", "resolution": "løsningstid"},
        "field": {"status": "status", "priority": "prioritet", "category": "kategori", "owner": "ansvarlig"},
        # Outgoing mail by its outbox kind, as the digest lists mail that did not arrive.
        "mail": {
            "receipt": "kvittering", "answer": "svar til kunden", "agent-notify": "varsel til saksbehandler",
            "alert": "varsel til beredskapsvakt", "escalation": "eskalering",
            "command-result": "kommandosvar",
            "loop-alert": "varsel om e-postsløyfe", "change-notice": "endringsvarsel",
            "change-urgent": "hasteendring", "change-update": "nytt tidspunkt for endring",
            "change-cancel": "avlyst endring", "change-reminder": "påminnelse om endring",
            "change-complete": "fullført endring", "change-reply": "svar på endringsvarsel",
            "change-undelivered": "endringsvarsel ikke levert", "change-confirm": "bekreftelse av bestilling",
            "change-not-allowed": "avvist bestilling", "end-user-redirect": "henvisning til brukerstøtte",
            "equipment-shop": "henvisning til nettbutikk", "incident-notice": "hendelsesvarsel",
            "incident-update": "oppdatering om hendelse", "incident-resolved": "hendelse løst",
            "local-work": "forespørsel om lokalt arbeid", "self-service": "svar om selvbetjening i NAV",
            "digest-agents": "oversikt til saksbehandlere", "digest-customer": "oversikt til kunde",
        },
        "change_kind": {"planned": "planlagt endring", "urgent": "hasteendring"},
        "notice_state": {"sent": "sendt", "queued": "i kø", "failed": "feilet", "none": "ikke sendt"},
        "notice": {
            "notice": "varsel om planlagt endring", "urgent": "varsel om hasteendring",
            "update": "nytt tidspunkt", "cancel": "avlysning", "reminder": "påminnelse",
            "complete": "melding om fullført endring",
        },
    },
    "en": {
        "category": {
            "incident": "incident", "question": "question", "change": "change", "equipment": "equipment",
            "end-user": "end user", "monitoring": "monitoring", "admin": "administration",
            "other": "other",
        },
        "priority": {"critical": "critical", "high": "high", "normal": "normal", "low": "low"},
        "status": {
            "new": "new", "open": "open", "pending": "waiting for the customer", "resolved": "resolved",
            "closed": "closed",
        },
        "customer_status": {"new": "new", "open": "open", "pending": "waiting for you"},
        "severity": {"outage": "down", "degraded": "degraded", "none": "none"},
        "target": {"first-response": "first response", "resolution": "resolution"},
        "field": {"status": "status", "priority": "priority", "category": "category", "owner": "owner"},
        "mail": {
            "receipt": "receipt", "answer": "answer to the customer", "agent-notify": "notice to agents",
            "alert": "on-call alert", "escalation": "escalation", "command-result": "command result",
            "loop-alert": "mail loop alert", "change-notice": "change notice",
            "change-urgent": "urgent change",
            "change-update": "new time for a change", "change-cancel": "cancelled change",
            "change-reminder": "change reminder", "change-complete": "completed change",
            "change-reply": "reply to a change notice", "change-undelivered": "change notice not delivered",
            "change-confirm": "order confirmation", "change-not-allowed": "order refused",
            "end-user-redirect": "pointer to user support", "equipment-shop": "pointer to the web shop",
            "incident-notice": "incident notice", "incident-update": "incident update",
            "incident-resolved": "incident resolved", "local-work": "request for local work",
            "self-service": "self-service answer (NAV)", "digest-agents": "agents' digest",
            "digest-customer": "customer digest",
        },
        "change_kind": {"planned": "planned change", "urgent": "urgent change"},
        "notice_state": {"sent": "sent", "queued": "queued", "failed": "failed", "none": "not sent"},
        "notice": {
            "notice": "notice of a planned change", "urgent": "notice of an urgent change",
            "update": "new time", "cancel": "cancellation", "reminder": "reminder",
            "complete": "notice of a completed change",
        },
    },
}  # fmt: skip


def term(language: str, kind: str, value: object) -> str:
    """The word for a stored value; the value itself when the table has none."""
    text = "" if value is None else str(value)
    return TERMS.get(language, {}).get(kind, {}).get(text, text)


def moment(value: datetime | str) -> datetime:
    """Stored timestamps come as ISO text from SQLite rows and as datetimes from code."""
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)
