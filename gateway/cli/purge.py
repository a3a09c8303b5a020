"""`gateway purge`: what the retention policy removes, now or as a dry run."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from typing import Any

from gateway.cli.common import progress
from gateway.core.config import Config
from gateway.ops.retention import plan, purge
from gateway.store.database import open_store


def cmd_purge(config: Config, args: argparse.Namespace) -> int:
    store = open_store(config.storage)
    try:
        if args.dry_run:
            result = plan(config, store.conn)
        else:
            with progress("purging") as tick:
                result = purge(config, store, tick)
    finally:
        store.close()
    if args.json:
        json.dump(asdict(result) | {"dry_run": args.dry_run}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print("\n".join(result.lines(done=not args.dry_run)))
    return 0


def add_commands(top: Any) -> None:
    purge_parser = top.add_parser("purge", help="remove raw mail and closed cases past [retention]")
    purge_parser.add_argument("--dry-run", action="store_true", help="show what would go, change nothing")
    purge_parser.add_argument("--json", action="store_true", help="machine-readable output")
    purge_parser.set_defaults(handler=cmd_purge)
