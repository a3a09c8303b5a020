"""`gateway status`: health at a glance, for a person or a monitoring check."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from gateway.core.config import Config
from gateway.ops.status import EX_NEEDS_ATTENTION, collect, render


def cmd_status(config: Config, args: argparse.Namespace) -> int:
    health = collect(config, expect_listener=args.expect_listener)
    if args.json:
        json.dump(health.as_dict(), sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
    else:
        print("\n".join(render(health)))
    return 0 if health.healthy else EX_NEEDS_ATTENTION


def add_commands(top: Any) -> None:
    status = top.add_parser("status", help="health at a glance; exit 1 when something needs a person")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument(
        "--expect-listener",
        action="store_true",
        help="count a listener that does not answer as a problem even when no gateway serve runs",
    )
    status.set_defaults(handler=cmd_status)
