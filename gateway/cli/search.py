"""`gateway cases search`: full-text search from the shell."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from gateway.cli.common import progress
from gateway.core import clock
from gateway.core.config import Config
from gateway.store.database import open_store
from gateway.store.search import EX_USAGE, fts_query, search_cases


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
    store = open_store(config.storage)
    with progress("indexing new mail") as tick:
        rows = search_cases(store, args.text, args.org, args.status, since, args.limit, tick)
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
