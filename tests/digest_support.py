"""Helpers for the digest and report tests: a store filled by direct SQL, and generated registries."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from gateway.core import clock
from gateway.store.database import Store
from tests.support import REPO, write_config


def digest_config(tmp: Path, registry: Path | None = None, **extra: str) -> Path:
    """A gateway.toml without a relay (mail goes to files), optionally over another registry."""
    path = write_config(tmp, **extra)
    if registry is not None:
        text = path.read_text(encoding="utf-8")
        path.write_text(text.replace(str(REPO / "data" / "contacts.toml"), str(registry)), encoding="utf-8")
    return path


def many_organisations(tmp: Path, count: int, english_every: int = 3) -> Path:
    """A registry of `count` organisations, each with its own local-support point; two line-1 agents."""
    lines = []
    for n in range(count):
        language = "en" if n % english_every == 0 else "nb"
        lines += [
            "[[organization]]",
            f'id = "org-{n:02d}"',
            f'name = "Organisasjon {n:02d}"',
            f'domains = ["org{n:02d}.example"]',
            f'language = "{language}"',
            "  [[organization.contact]]",
            '  role = "local-support"',
            f'  name = "Brukerstøtte {n:02d}"',
            f'  email = "support@org{n:02d}.example"',
            "",
        ]
    lines += [
        "[[agent]]",
        'name = "Mona Sørensen"',
        'email = "mona@service.example"',
        "line = 1",
        "[[agent]]",
        'name = "Erik Dahl"',
        'email = "erik@service.example"',
        "line = 1",
        "[[agent]]",
        'name = "Andre linje"',
        'email = "andrelinje@service.example"',
        "line = 2",
    ]
    path = tmp / "contacts.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def add_case(
    store: Store,
    subject: str,
    created: datetime,
    organization: str | None = "nordby-skole",
    status: str = "open",
    category: str = "incident",
    priority: str = "normal",
    resolved: datetime | None = None,
    first_response: datetime | None = None,
) -> int:
    with store.write() as conn:
        cursor = conn.execute(
            "INSERT INTO cases (subject, status, category, priority, organization, requester, created_at,"
            " updated_at, first_response_at, resolved_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                subject,
                status,
                category,
                priority,
                organization,
                "kari.nordmann@nordby-skole.example",
                clock.iso(created),
                clock.iso(created),
                clock.iso(first_response) if first_response else None,
                clock.iso(resolved) if resolved else None,
            ),
        )
        return int(cursor.lastrowid or 0)


def add_event(store: Store, case_id: int, action: str, at: datetime) -> None:
    with store.write() as conn:
        conn.execute(
            "INSERT INTO events (case_id, at, actor, action) VALUES (?, ?, 'gateway', ?)",
            (case_id, clock.iso(at), action),
        )


def add_message(
    store: Store, at: datetime, case_id: int | None = None, disposition: str = "case", subject: str = "Hei"
) -> None:
    with store.write() as conn:
        conn.execute(
            "INSERT INTO messages (message_id, direction, case_id, disposition, source, subject, created_at)"
            " VALUES (?, 'in', ?, ?, 'test', ?, ?)",
            (f"<{clock.token()}@test>", case_id, disposition, subject, clock.iso(at)),
        )


def add_quarantined(store: Store, at: datetime) -> None:
    with store.write() as conn:
        digest = clock.token(32)
        conn.execute(
            "INSERT INTO raw_messages (sha256, size, raw, stored_at) VALUES (?, 1, x'00', ?)",
            (digest, clock.iso(at)),
        )
        conn.execute(
            "INSERT INTO quarantine (sha256, source, error, created_at) VALUES (?, 'smtp', 'boom', ?)",
            (digest, clock.iso(at)),
        )


def add_failed_mail(store: Store, at: datetime, to: str, error: str) -> None:
    with store.write() as conn:
        conn.execute(
            "INSERT INTO outbox (message_id, kind, mail_from, recipients, raw, status, next_attempt_at,"
            " last_error, created_at) VALUES (?, 'receipt', 'kontakt@service.example', ?, x'00', 'failed',"
            " ?, ?, ?)",
            (f"<{clock.token()}@service.example>", json.dumps([to]), clock.iso(at), error, clock.iso(at)),
        )


def add_change(
    store: Store, organizations: list[str], title: str, starts: datetime, ends: datetime, urgent: bool = False
) -> int:
    """A planned change with no notice sent yet, the way gateway.changes would record it."""
    with store.write() as conn:
        cursor = conn.execute(
            "INSERT INTO changes (uid, title, urgent, status, starts_at, ends_at, created_by, created_at,"
            " updated_at) VALUES (?, ?, ?, 'planned', ?, ?, 'mona', ?, ?)",
            (clock.token(), title, int(urgent), clock.iso(starts), clock.iso(ends), clock.iso(), clock.iso()),
        )
        change_id = int(cursor.lastrowid or 0)
        conn.executemany(
            "INSERT INTO change_organizations (change_id, organization) VALUES (?, ?)",
            [(change_id, org) for org in organizations],
        )
        return change_id
