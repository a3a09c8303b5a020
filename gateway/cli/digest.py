"""`gateway digest`: the overviews, from cron."""

from __future__ import annotations

import argparse
from typing import Any

from gateway.cli.common import print_json, progress
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
                said = already_said(args.to, period, sent_at)
                if args.json:
                    print_json({"period": period.kind, "label": period.label, "digests": [], "notes": [said]})
                else:
                    print(said)
                return EX_OK
        digests, notes = build(runtime, period, args.to, now)
        done: list[dict[str, Any]] = []
        with progress("queueing digests") as tick:
            for count, digest in enumerate(digests, 1):
                said = "dry run: nothing sent" if args.dry_run else send(runtime, period, digest)
                done.append(
                    {"audience": digest.audience, "to": digest.to, "subject": digest.subject, "result": said}
                )
                tick(count, len(digests))
        if args.json:
            print_json({"period": period.kind, "label": period.label, "digests": done, "notes": notes})
        else:
            _print(runtime, period, notes, digests, done, args.dry_run)
        if not digests and args.to == "agents":
            return EX_NOINPUT
        return EX_OK
    finally:
        runtime.close()


def _print(
    runtime: Runtime,
    period: Period,
    notes: list[str],
    digests: list[Digest],
    done: list[dict[str, Any]],
    dry_run: bool,
) -> None:
    for note in notes:
        print(note)
    for digest, result in zip(digests, done, strict=True):
        if dry_run:
            _print_dry_run(runtime, period, digest)
        else:
            print(result["result"])


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
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(handler=cmd_digest)
