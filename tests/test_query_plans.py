"""Hot queries keep their index once the store is big and ANALYZE has run."""

from __future__ import annotations

from gateway.outbox.queue import Deliverer
from gateway.runtime import Runtime


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
