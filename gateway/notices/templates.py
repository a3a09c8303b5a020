"""Mail text from Jinja2 templates, by language, audience and event; headers stay in Python."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, StrictUndefined, TemplateNotFound

from gateway.directory.registry import ROLE_NAMES_EN, ROLES
from gateway.notices.words import TERMS, moment, term

MONTHS_NB = (
    "januar",
    "februar",
    "mars",
    "april",
    "mai",
    "juni",
    "juli",
    "august",
    "september",
    "oktober",
    "november",
    "desember",
)
WEEKDAYS_NB = ("mandag", "tirsdag", "onsdag", "torsdag", "fredag", "lørdag", "søndag")


@dataclass(frozen=True)
class Rendered:
    subject: str
    body: str


def format_phone(number: str) -> str:
    """Norwegian numbers in pairs: 73557900 -> 73 55 79 00; others untouched."""
    digits = "".join(ch for ch in number if ch.isdigit())
    if len(digits) == 8 and not number.strip().startswith("+"):
        return " ".join(digits[i : i + 2] for i in range(0, 8, 2))
    return number.strip()


class Templates:
    """One Jinja2 environment over templates/<lang>/<audience>/<event>.txt.j2."""

    def __init__(self, directory: Path, timezone: str = "Europe/Oslo") -> None:
        self.directory = directory
        self.zone = ZoneInfo(timezone)
        self.env = Environment(
            loader=FileSystemLoader(str(directory)),
            # Loaded once: a template deployed ahead of its code must not change a running gateway
            # mid-stream (restart to take new templates), and no stat() per rendered mail.
            auto_reload=False,
            undefined=StrictUndefined,
            autoescape=False,
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["phone"] = format_phone
        self.env.filters["date_nb"] = self._date_nb
        self.env.filters["date_en"] = self._date_en
        self.env.filters["datetime_nb"] = self._datetime_nb
        self.env.filters["datetime_en"] = self._datetime_en
        self.env.filters["short_nb"] = self._short_nb
        self.env.filters["short_en"] = self._short_en
        self.env.filters["role_nb"] = lambda role: ROLES.get(role, role)
        self.env.filters["role_en"] = lambda role: ROLE_NAMES_EN.get(role, role)
        # `{{ case.priority | nb("priority") }}`: stored English keys shown as words of the mail's language.
        self.env.filters["nb"] = lambda value, kind: term("nb", kind, value)
        self.env.filters["en"] = lambda value, kind: term("en", kind, value)
        self.env.filters["window_nb"] = self._window_nb
        self.env.filters["window_en"] = self._window_en
        self.env.globals["terms"] = TERMS
        # HTML parts get their own environment so autoescape is on for them and off for text mail.
        self.html_env = Environment(
            loader=FileSystemLoader(str(directory)),
            undefined=StrictUndefined,
            autoescape=True,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.html_env.filters.update(self.env.filters)
        self.html_env.globals.update(self.env.globals)

    def _local(self, value: datetime | str) -> datetime:
        local = moment(value)
        return local.astimezone(self.zone) if local.tzinfo else local

    def _date_nb(self, value: datetime | str) -> str:
        local = self._local(value)
        return f"{WEEKDAYS_NB[local.weekday()]} {local.day}. {MONTHS_NB[local.month - 1]} {local.year}"

    def _date_en(self, value: datetime | str) -> str:
        local = self._local(value)
        return f"{local:%A} {local.day} {local:%B %Y}"

    def _short_nb(self, value: datetime | str) -> str:
        # Table cells on a phone have no room for the weekday and the full month.
        local = self._local(value)
        month = MONTHS_NB[local.month - 1]
        # Bokmål abbreviates only the long names: "nov.", but "mai" and "juni" stay whole.
        short = month if len(month) <= 4 else month[:3] + "."
        return f"{local.day}. {short} {local.year}"

    def _short_en(self, value: datetime | str) -> str:
        local = self._local(value)
        return f"{local.day} {local:%b %Y}"

    def _datetime_nb(self, value: datetime | str) -> str:
        return f"{self._date_nb(value)} kl. {self._local(value):%H:%M}"

    def _datetime_en(self, value: datetime | str) -> str:
        return f"{self._date_en(value)} at {self._local(value):%H:%M}"

    def _window_nb(self, start: datetime | str, end: datetime | str) -> str:
        """A window on one local day names its date once: "… 2026 kl. 08:00–10:00"."""
        first, last = self._local(start), self._local(end)
        if first.date() == last.date():
            return f"{self._date_nb(first)} kl. {first:%H:%M}–{last:%H:%M}"
        return f"{self._datetime_nb(first)} – {self._datetime_nb(last)}"

    def _window_en(self, start: datetime | str, end: datetime | str) -> str:
        first, last = self._local(start), self._local(end)
        if first.date() == last.date():
            return f"{self._date_en(first)}, {first:%H:%M}–{last:%H:%M}"
        return f"{self._datetime_en(first)} – {self._datetime_en(last)}"

    def render(self, language: str, audience: str, event: str, context: dict[str, Any]) -> Rendered:
        """Render the subject and body blocks of one template."""
        template = self.env.get_template(f"{language}/{audience}/{event}.txt.j2")
        ctx = template.new_context(dict(context))
        subject = "".join(template.blocks["subject"](ctx)).strip()
        body = "".join(template.blocks["body"](ctx)).strip() + "\n"
        return Rendered(subject=" ".join(subject.split()), body=body)

    def render_html(self, language: str, audience: str, event: str, context: dict[str, Any]) -> str:
        """Render templates/<lang>/<audience>/<event>.html.j2 as a whole document, autoescaped."""
        template = self.html_env.get_template(f"{language}/{audience}/{event}.html.j2")
        return template.render(dict(context))

    def events(self, audience: str) -> set[str]:
        """Events with a template in every language, so rules can only name complete ones."""
        found: list[set[str]] = []
        for lang_dir in sorted(p for p in self.directory.iterdir() if p.is_dir()):
            folder = lang_dir / audience
            found.append({p.name.removesuffix(".txt.j2") for p in folder.glob("*.txt.j2")})
        return set.intersection(*found) if found else set()

    def exists(self, language: str, audience: str, event: str) -> bool:
        try:
            self.env.get_template(f"{language}/{audience}/{event}.txt.j2")
        except TemplateNotFound:
            return False
        return True
