"""Time the agents' digest and `gateway report` over a store of 100,000 cases (not a test).

Fills a temporary store by direct SQL in one transaction: a year of cases over the repo's
registry, about 12% still open, with history that the digest queries (asked-missing events,
inbound replies), held mail, quarantine and failed outgoing mail. Then times the figures, the
agents' digest (figures plus text and HTML) and the report's JSON, CSV and terminal tables, for a
Tuesday morning passed in as `now` (freezegun would freeze the timer as well).

    .venv/bin/python bench/digest_100k.py [--cases N]
"""

from __future__ import annotations

import argparse
import io
import json
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rich.console import Console

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from gateway import clock  # noqa: E402
from gateway.core.config import load_config  # noqa: E402
from gateway.reports.digest import build  # noqa: E402
from gateway.reports.figures import Figures, latest_period  # noqa: E402
from gateway.reports.tables import as_json, csv_rows, print_tables  # noqa: E402
from gateway.runtime import Runtime  # noqa: E402
from tests.support import write_config  # noqa: E402

NOW = datetime(2026, 11, 24, 5, 0, tzinfo=UTC)  # 06:00 in Oslo, when cron runs
ORGS = ("nordby-skole", "fjellvik-kommune", "vestland-college", None)
CATEGORIES = ("incident", "incident", "question", "change", "equipment", "other")
PRIORITIES = ("critical", "high", "normal", "normal", "normal", "low")


def fill(store_conn, cases: int, rng: random.Random) -> None:  # type: ignore[no-untyped-def]
    """One transaction of bulk inserts; ids are assigned in creation order like the real thing."""
    start = NOW - timedelta(days=365)
    step = timedelta(days=365) / cases
    case_rows, event_rows, message_rows = [], [], []
    for n in range(1, cases + 1):
        created = start + step * n
        open_case = rng.random() < 0.12 or created > NOW - timedelta(days=3)
        status = (
            rng.choice(("new", "open", "open", "pending"))
            if open_case
            else rng.choice(("resolved", "closed"))
        )
        resolved = None if open_case else clock.iso(created + timedelta(hours=rng.uniform(0.5, 200)))
        responded = (
            clock.iso(created + timedelta(minutes=rng.uniform(5, 600))) if rng.random() < 0.7 else None
        )
        stamp = clock.iso(created)
        case_rows.append(
            (
                n,
                f"Nettet er nede på rom {n % 500}",
                status,
                rng.choice(CATEGORIES),
                rng.choice(PRIORITIES),
                rng.choice(ORGS),
                "kari.nordmann@nordby-skole.example",
                stamp,
                stamp,
                responded,
                resolved,
            )
        )
        event_rows.append((n, stamp, "opened"))
        message_rows.append((f"<{n}@bench>", n, "case", stamp))
        if rng.random() < 0.2:
            asked = clock.iso(created + timedelta(minutes=1))
            event_rows.append((n, asked, "asked-missing"))
            if rng.random() < 0.5:
                message_rows.append(
                    (f"<{n}.reply@bench>", n, "case", clock.iso(created + timedelta(hours=2)))
                )
    conn = store_conn
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(
        "INSERT INTO cases (id, subject, status, category, priority, organization, requester, created_at,"
        " updated_at, first_response_at, resolved_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        case_rows,
    )
    conn.executemany(
        "INSERT INTO events (case_id, at, actor, action) VALUES (?, ?, 'gateway', ?)", event_rows
    )
    conn.executemany(
        "INSERT INTO messages (message_id, direction, case_id, disposition, source, created_at)"
        " VALUES (?, 'in', ?, ?, 'bench', ?)",
        message_rows,
    )
    yesterday = NOW - timedelta(hours=12)
    conn.executemany(
        "INSERT INTO messages (message_id, direction, disposition, source, created_at)"
        " VALUES (?, 'in', 'held', 'bench', ?)",
        [(f"<held{i}@bench>", clock.iso(yesterday)) for i in range(200)],
    )
    conn.executemany(
        "INSERT INTO outbox (message_id, kind, mail_from, recipients, raw, status, next_attempt_at,"
        " last_error, created_at)"
        " VALUES (?, 'receipt', 'kontakt@service.example', ?, x'00', 'failed', ?, ?, ?)",
        [
            (
                f"<out{i}@bench>",
                json.dumps([f"u{i}@nordby-skole.example"]),
                clock.iso(yesterday),
                "bounced: no such user" if i % 2 else "550 rejected",
                clock.iso(yesterday),
            )
            for i in range(50)
        ],
    )
    conn.execute("COMMIT")


def timed(label: str, action):  # type: ignore[no-untyped-def]
    began = time.perf_counter()
    result = action()
    print(f"{label:<38} {time.perf_counter() - began:7.3f} s")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = load_config(write_config(Path(tmp)))
        runtime = Runtime(config)
        timed(
            f"fill {args.cases:,} cases (one transaction)",
            lambda: fill(runtime.store.conn, args.cases, random.Random(7)),
        )
        open_cases = runtime.store.one(
            "SELECT count(*) AS n FROM cases WHERE status IN ('new','open','pending')"
        )
        print(f"{'open cases':<38} {open_cases['n']:>7}")
        now = NOW
        period = latest_period("daily", now, runtime.calendar)
        figures = Figures(config, runtime.store, runtime.registry(), runtime.calendar)
        result = timed("figures (queries + targets)", lambda: figures.agents(period, now))
        print(f"{'cases past a target':<38} {result.breach_count:>7}")
        digests = timed(
            "agents' digest (figures + text + HTML)", lambda: build(runtime, period, "agents", now)
        )
        print(f"{'HTML part size':<38} {len(digests[0][0].html):>7} B")
        weekly = latest_period("weekly", now, runtime.calendar)
        timed("report --json (weekly, every row)", lambda: as_json(figures.agents(weekly, now, None)))
        timed("report --csv (weekly, every row)", lambda: csv_rows(figures.agents(weekly, now, None)))
        timed(
            "report tables (weekly)",
            lambda: print_tables(figures.agents(weekly, now), Console(file=io.StringIO(), width=120)),
        )
        runtime.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
