"""The one seam for "now" and for fresh identifiers, so tests can pin both."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime


def now() -> datetime:
    """The current instant, always timezone-aware UTC (freezegun pins this)."""
    return datetime.now(UTC)


def iso(moment: datetime | None = None) -> str:
    """A sortable UTC timestamp for the database."""
    if moment is None:
        return now().isoformat(timespec="microseconds")  # now() is UTC already: ~30 calls per message
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def parse_iso(value: str) -> datetime:
    return datetime.fromisoformat(value)


def token(nbytes: int = 8) -> str:
    return secrets.token_hex(nbytes)


def new_message_id(domain: str) -> str:
    """A Message-ID for mail we send; time first so ids sort and stay unique across hosts."""
    return f"<{now().strftime('%Y%m%d%H%M%S%f')}.{token(6)}@{domain}>"
