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
        "change_kind": {"planned": "planlagt endring", "urgent": "hasteendring"},
        "notice_state": {"sent": "sendt", "queued": "i kø", "failed": "feilet", "none": "ikke sendt"},
        "notice": {
            "notice": "varsel", "urgent": "hastevarsel", "update": "nytt tidspunkt", "cancel": "avlysning",
            "reminder": "påminnelse", "complete": "fullført",
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
        "change_kind": {"planned": "planned change", "urgent": "urgent change"},
        "notice_state": {"sent": "sent", "queued": "queued", "failed": "failed", "none": "not sent"},
        "notice": {
            "notice": "notice", "urgent": "urgent notice", "update": "new time", "cancel": "cancellation",
            "reminder": "reminder", "complete": "completed",
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
