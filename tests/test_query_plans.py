"""Hot queries keep their index once the store is big and ANALYZE has run."""

from __future__ import annotations

from gateway.outbox.queue import Deliverer
from gateway.runtime import Runtime
from gateway.store.search import MATCHES_SQL


def _fill_outbox(runtime: Runtime, sent: int, queued: int) -> None:
    rows = [(f"<sent-{i}@service.example>", "sent") for i in range(sent)]
    rows += [(f"<queued-{i}@service.example>", "queued") for i in range(queued)]
    with runtime.store.write() as conn:
        conn.executemany(
            "INSERT INTO outbox (message_id, kind, mail_from, recipients, raw, status, attempts,"
            " next_attempt_at, created_at) VALUES (?, 'receipt', 'kontakt@service.example', '[]', x'00',"
            " ?, 0, '2026-01-01T00:00:00+00:00', '2026-01-01T00:00:00+00:00')",
            rows,
        )
    runtime.store.conn.execute("ANALYZE")


def test_the_senders_due_query_reads_only_queued_rows_after_analyze(runtime: Runtime) -> None:
    """With 20,000 sent rows and statistics saying so, the due query uses the queued-only index."""
    _fill_outbox(runtime, sent=20_000, queued=3)
    deliverer = Deliverer(runtime.config, runtime.store)
    plan = runtime.store.conn.execute(
        "EXPLAIN QUERY PLAN SELECT id FROM outbox WHERE status = 'queued' AND next_attempt_at <= ?"
        " ORDER BY id LIMIT ?",
        ("2027", 200),
    ).fetchall()
    details = " ".join(str(row[-1]) for row in plan)
    assert "outbox_queued" in details, details
    due = deliverer.due()
    assert [row["message_id"] for row in due] == [f"<queued-{i}@service.example>" for i in range(3)]


def test_search_walks_the_index_newest_first_without_sorting_every_match(runtime: Runtime) -> None:
    """`cases search` reads FTS matches in rowid order and finds messages and cases by key, with no sort."""
    where = "messages_fts MATCH :query AND c.organization = :organization AND c.status = :status"
    plan = runtime.store.conn.execute(
        "EXPLAIN QUERY PLAN " + MATCHES_SQL.format(where=where),
        {"query": '"ruter"*', "organization": "nordby-skole", "status": "open"},
    ).fetchall()
    details = [str(row[-1]) for row in plan]
    assert details[0].startswith("SCAN messages_fts VIRTUAL TABLE"), details
    assert "SEARCH m USING INTEGER PRIMARY KEY (rowid=?)" in details, details
    assert "SEARCH c USING INTEGER PRIMARY KEY (rowid=?)" in details, details
    assert not any("TEMP B-TREE" in d for d in details), details
