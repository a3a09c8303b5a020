"""iCalendar (.ics) files for maintenance windows: one event per change, updated or cancelled in place."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

from icalendar import Calendar, Event, vCalAddress


@dataclass(frozen=True)
class MaintenanceWindow:
    """What a calendar needs to know about one version of a change."""

    uid: str
    sequence: int
    summary: str
    description: str
    starts_at: datetime
    ends_at: datetime
    cancelled: bool = False


def invitation(
    window: MaintenanceWindow,
    timezone: str,
    organizer: tuple[str, str],
    attendee: tuple[str, str],
    stamp: datetime,
) -> bytes:
    """The .ics for one recipient: METHOD:REQUEST for a new or moved window, METHOD:CANCEL to remove it."""
    zone = ZoneInfo(timezone)
    calendar = Calendar()
    # The product is the gateway as this centre runs it: its configured name, never a fixed one.
    calendar.add("prodid", f"-//{organizer[0] or 'gateway'}//gateway//NO")
    calendar.add("version", "2.0")
    calendar.add("method", "CANCEL" if window.cancelled else "REQUEST")
    event = Event()
    # Calendars match updates by UID and keep the version with the highest SEQUENCE.
    event.add("uid", window.uid)
    event.add("sequence", window.sequence)
    event.add("dtstamp", stamp)
    event.add("dtstart", window.starts_at.astimezone(zone))
    event.add("dtend", window.ends_at.astimezone(zone))
    event.add("summary", window.summary)
    event.add("description", window.description)
    event.add("status", "CANCELLED" if window.cancelled else "CONFIRMED")
    # The window is information, not a meeting: it should not block the customer's own calendar.
    event.add("transp", "TRANSPARENT")
    event.add("organizer", _address(*organizer))
    # RSVP=FALSE: calendar clients should not mail accept/decline answers to the service address.
    event.add("attendee", _address(*attendee, RSVP="FALSE", ROLE="NON-PARTICIPANT"))
    calendar.add_component(event)
    # The VTIMEZONE only needs to cover the years the window touches.
    calendar.add_missing_timezones(
        first_date=date(window.starts_at.year, 1, 1), last_date=date(window.ends_at.year + 1, 1, 1)
    )
    return bytes(calendar.to_ical())


def _address(name: str, email: str, **params: str) -> vCalAddress:
    address = vCalAddress(f"mailto:{email}")
    if name:
        address.params["CN"] = name
    for key, value in params.items():
        address.params[key] = value
    return address
