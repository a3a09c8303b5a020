"""A store from the first schema opens with today's code, gains every later migration and keeps working."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from gateway.core.config import Config
from gateway.ops.queries import list_cases, show_case
from gateway.pipeline.process import process
from gateway.runtime import Runtime
from gateway.store.database import Store
from gateway.store.schema import migrations
from gateway.store.search import search_cases
from tests.support import mail

FIXTURE = Path(__file__).parent / "fixtures" / "schema_v1.sql"


def _load_fixture(config: Config) -> None:
    """Recreate the old database file from its SQL dump, where the config expects the store."""
    config.storage.path.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(config.storage.database)
    conn.executescript(FIXTURE.read_text(encoding="utf-8"))
    conn.close()


def test_old_store_gains_every_migration_and_keeps_its_rows(config: Config) -> None:
    """Opening a v1 store applies and records every newer migration; old cases, mail and outbox still read."""
    _load_fixture(config)
    store = Store(config.storage.database)
    try:
        applied = [m.name for m in migrations.applied(store.db)]
        assert applied[:2] == ["m001_core", "m002_imap"]
        assert sorted(applied) == sorted(m.name for m in migrations._migrations)
        assert migrations.pending(store.db) == []
        assert store.one("PRAGMA integrity_check")["integrity_check"] == "ok"
        cases = list_cases(store)
        assert [(c["id"], c["organization"]) for c in cases] == [(2, "fjellvik-kommune"), (1, "nordby-skole")]
        case = show_case(store, 1)
        assert case is not None
        assert [m["direction"] for m in case["messages"]] == ["in", "out"]
        assert case["messages"][1]["subject"] == "[SSC#1] Nettet er nede på lærerrommet"
        # The search index added later covers the mail stored before it existed.
        assert [c["id"] for c in search_cases(store, "lærerrommet")] == [1]
    finally:
        store.close()


def test_reply_threads_into_a_case_from_the_old_schema(config: Config) -> None:
    """A reply to a receipt sent under the old schema joins that case, which numbering continues after."""
    _load_fixture(config)
    runtime = Runtime(config)
    try:
        reply = mail(
            sender="IT-brukerstøtte Nordby skole <it@nordby-skole.example>",
            subject="SV: [SSC#1] Nettet er nede på lærerrommet",
            body="Nå virker det igjen på lærerrommet, takk.\n",
            headers={"In-Reply-To": "<v1-receipt-1@service.example>"},
        )
        result = process(runtime, reply, "smtp")
        assert (result.outcome, result.case_id) == ("appended", 1)
        fresh = process(runtime, mail(subject="Skriveren på biblioteket er borte"), "smtp")
        assert (fresh.outcome, fresh.case_id) == ("opened", 3)
        assert [c["id"] for c in search_cases(runtime.store, "takk")] == [1]
    finally:
        runtime.close()
