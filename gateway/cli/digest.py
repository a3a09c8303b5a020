"""`gateway digest`: the overviews, from cron."""

from __future__ import annotations

import argparse
from typing import Any

from gateway.core import clock
from gateway.core.addresses import AddressError, normalise_address
from gateway.core.config import Config
from gateway.reports.digest import EX_NOINPUT, EX_OK, Digest, already_said, already_sent, build, send
from gateway.reports.figures import (
    PERIODS,
    Period,
    latest_period,
)
from gateway.runtime import Runtime


def _target(value: str) -> str:
    if value in ("agents", "customers"):
        return value
    try:
        return normalise_address(value)
    except AddressError as exc:
        raise argparse.ArgumentTypeError(f"not agents, customers or an address: {exc}") from None


def cmd_digest(config: Config, args: argparse.Namespace) -> int:
    runtime = Runtime(config)
    try:
        now = clock.now()
        period = latest_period(args.period, now, runtime.calendar)
        if args.to != "customers" and not args.dry_run:
            # The agents' figures are the costly part; a second run for the period skips them.
            sent_at = already_sent(runtime, period, args.to)
            if sent_at is not None:
                print(already_said(args.to, period, sent_at))
                return EX_OK
        digests, notes = build(runtime, period, args.to, now)
        for note in notes:
            print(note)
        for digest in digests:
            if args.dry_run:
                _print_dry_run(runtime, period, digest)
            else:
                print(send(runtime, period, digest))
        if not digests and args.to == "agents":
            return EX_NOINPUT
        return EX_OK
    finally:
        runtime.close()


def _print_dry_run(runtime: Runtime, period: Period, digest: Digest) -> None:
    sent_at = already_sent(runtime, period, digest.audience)
    status = f" (already sent {sent_at}: a real run sends nothing)" if sent_at else ""
    print(f"=== {digest.audience}: {period.kind} digest for {period.label}{status}")
    print(f"To: {', '.join(digest.to)}")
    print(f"Subject: {digest.subject}")
    print()
    print(digest.text)


def add_commands(top: Any) -> None:
    parser = top.add_parser("digest", help="queue the agents' or customers' digest for the last period")
    parser.add_argument("--period", choices=PERIODS, required=True)
    parser.add_argument(
        "--to", type=_target, default="agents", metavar="agents|customers|ADDRESS", help="default: agents"
    )
    parser.add_argument("--dry-run", action="store_true", help="print what would be sent; record nothing")
    parser.set_defaults(handler=cmd_digest)
