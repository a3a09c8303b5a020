"""`gateway cases search`: full-text search over what was written in cases (FTS5, migration m005_search)."""

from __future__ import annotations

import argparse
import json
import logging
import re
import sqlite3
import sys
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from gateway import clock
from gateway.config import Config
from gateway.store import StorageUnavailable, Store

log = logging.getLogger("gateway.search")

EX_USAGE = 64


def fts_query(text: str) -> str:
    """Every word must occur, whole or as a word's start ("nett" finds "nettet"); no FTS syntax leaks in."""
    words = re.findall(r"\w+", text)
    return " ".join(f'"{word}"*' for word in words)


# Rows the intake lets wait before it indexes them in one statement (see schema m008).
INTAKE_BACKLOG = 256
# The most rows one call indexes, so one transaction never holds the write lock for long.
MOST_AT_ONCE = 5000


def index_backlog(conn: sqlite3.Connection, at_least: int = 1) -> int:
    """Index the messages above the watermark, when `at_least` ids wait; how far the mark moved."""
    (upto,) = conn.execute("SELECT indexed_upto FROM search_progress").fetchone()
    (top,) = conn.execute("SELECT coalesce(max(id), 0) FROM messages").fetchone()
    if top - upto < at_least:
        return 0
    top = min(top, upto + MOST_AT_ONCE)
    conn.execute(
        "INSERT INTO messages_fts (rowid, subject, body) SELECT id, subject, body FROM messages"
        " WHERE id > ? AND id <= ?",
        (upto, top),
    )
    conn.execute("UPDATE search_progress SET indexed_upto = ?", (top,))
    # Ids, not rows: a stretch of deleted messages still moves the mark, so catch_up goes on.
    return int(top - upto)


def catch_up(store: Store) -> None:
    """Index everything not yet indexed, so a search sees every stored message."""
    try:
        while True:
            with store.write() as conn:
                if index_backlog(conn) == 0:
                    return
    except StorageUnavailable as exc:  # a read-only or busy store still searches what is indexed
        log.warning("search index not brought up to date: %s", exc)


def search_cases(
    store: Store,
    text: str,
    organization: str | None = None,
    status: str | None = None,
    since: str | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """Cases whose messages match `text`, best match first, with the best message's snippet."""
    catch_up(store)
    where = ["messages_fts MATCH :query"]
    params: dict[str, Any] = {"query": fts_query(text)}
    for column, value in (("c.organization", organization), ("c.status", status)):
        if value:
            where.append(f"{column} = :{column[2:]}")
            params[column[2:]] = value
    if since:
        where.append("m.created_at >= :since")
        params["since"] = since
    rows = store.query(
        "SELECT c.id, c.subject, c.status, c.organization, c.requester, c.updated_at,"
        " m.id AS message, m.created_at AS message_at,"
        " snippet(messages_fts, -1, '[', ']', '…', 12) AS snippet"
        " FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid JOIN cases c ON c.id = m.case_id"
        f" WHERE {' AND '.join(where)} ORDER BY messages_fts.rank LIMIT 1000",
        params,
    )
    cases: dict[int, dict[str, Any]] = {}
    for row in rows:
        found = cases.setdefault(row["id"], {**row, "matches": 0})
        found["matches"] += 1
    return list(cases.values())[:limit]


def start_of(value: str, timezone: str) -> str:
    """A date (local midnight in the service's zone) or a full ISO time, as the store's UTC string."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date: {value!r} (use YYYY-MM-DD)") from None
    if moment.tzinfo is None:
        # "2026-11-24" means from midnight in Oslo, not in UTC.
        moment = moment.replace(tzinfo=ZoneInfo(timezone))
    return clock.iso(moment)


def cmd_cases_search(config: Config, args: argparse.Namespace) -> int:
    if not fts_query(args.text):
        print("search: give at least one word", file=sys.stderr)
        return EX_USAGE
    try:
        since = start_of(args.since, config.service.timezone) if args.since else None
    except argparse.ArgumentTypeError as exc:
        print(f"search: {exc}", file=sys.stderr)
        return EX_USAGE
    rows = search_cases(config.storage.open(), args.text, args.org, args.status, since, args.limit)
    if args.json:
        json.dump(rows, sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
        return 0
    prefix = config.service.case_prefix
    for row in rows:
        print(
            f"{prefix}#{row['id']:<6} {row['status']:<9} {row['organization'] or '-':<20}"
            f" {row['subject'][:50]:<50} {row['snippet'].replace(chr(10), ' ')}"
        )
    return 0


def add_search_command(cases: Any) -> None:
    """`gateway cases search`, added to the cases group by gateway/cli.py."""
    search = cases.add_parser("search", help="cases whose messages contain these words")
    search.add_argument("text", help="words to find (all must occur; Norwegian letters welcome)")
    search.add_argument("--org", help="only this organisation's cases")
    search.add_argument("--status", help="only cases with this status")
    search.add_argument("--since", help="only messages from this date on (YYYY-MM-DD)")
    search.add_argument("--limit", type=int, default=50)
    search.add_argument("--json", action="store_true", help="machine-readable output")
    search.set_defaults(handler=cmd_cases_search)
