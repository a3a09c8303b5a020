"""`gateway report`: the digest figures as tables, JSON or CSV."""

from __future__ import annotations

import argparse
import csv
import sys
from typing import Any

from rich.console import Console

from gateway.core import clock
from gateway.core.config import Config
from gateway.reports.figures import LIST_LIMIT, PERIODS, Figures, latest_period
from gateway.reports.tables import CSV_COLUMNS, as_json, csv_rows, print_tables
from gateway.runtime import Runtime


def cmd_report(config: Config, args: argparse.Namespace) -> int:
    runtime = Runtime(config)
    try:
        now = clock.now()
        period = latest_period(args.period, now, runtime.calendar)
        # A spreadsheet wants every late case; a terminal, like the mail, the oldest few.
        limit = None if args.json or args.csv else LIST_LIMIT
        figures = Figures(config, runtime.store, runtime.registry(), runtime.calendar).agents(
            period, now, limit
        )
    finally:
        runtime.close()
    if args.json:
        sys.stdout.write(as_json(figures) + "\n")
    elif args.csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=CSV_COLUMNS, restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(csv_rows(figures))
    else:
        print_tables(figures, Console())
    return 0


def add_commands(top: Any) -> None:
    parser = top.add_parser(
        "report", help="the digest figures for the last period, for people or spreadsheets"
    )
    parser.add_argument("--period", choices=PERIODS, default="daily")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="machine-readable output")
    output.add_argument("--csv", action="store_true", help="one figure a row, for spreadsheets")
    parser.set_defaults(handler=cmd_report)
