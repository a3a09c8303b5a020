"""`gateway quarantine …`, `gateway outbox …` and `gateway held …`: the queues an operator looks after."""

from __future__ import annotations

import argparse
import getpass
import json
from dataclasses import asdict
from typing import Any

from gateway.changes import notices as change_notices
from gateway.cli.common import (
    EX_NOINPUT,
    EX_OK,
    EX_SOFTWARE,
    EX_TEMPFAIL,
    print_json,
    progress,
    run_action,
    say_empty,
)
from gateway.core.config import Config
from gateway.flow.context import describe
from gateway.ops.queries import list_held, list_outbox, list_quarantine, quarantined_ids, replay_quarantined
from gateway.outbox.queue import NoSuchMail, NotFailed, retry_failed, retry_now
from gateway.runtime import Runtime
from gateway.store.database import open_store


def cmd_quarantine_list(config: Config, args: argparse.Namespace) -> int:
    rows = list_quarantine(open_store(config.storage))
    if args.json:
        print_json(rows)
        return EX_OK
    if not rows:
        say_empty("quarantined mail")
    for row in rows:
        replay = f" replayed {row['replayed_at']}: {row['replay_result']}" if row["replayed_at"] else ""
        print(
            f"{row['id']:<5} {row['created_at']} {row['source']:<6} {row['size']:>9} B"
            f"  {row['error']}{replay}"
        )
    return EX_OK


def cmd_quarantine_replay(config: Config, args: argparse.Namespace) -> int:
    if bool(args.ids) == args.all:
        args.parser.error("give one or more IDs, or --all")
    runtime = Runtime(config)
    try:
        ids = quarantined_ids(runtime.store) if args.all else args.ids
        results: list[dict[str, Any]] = []
        with progress("replaying") as tick:
            for done, entry in enumerate(ids, 1):
                try:
                    outcome = json.loads(describe(replay_quarantined(runtime, entry)))
                except KeyError as exc:
                    outcome = {"outcome": "missing", "reason": exc.args[0]}
                results.append({"id": entry, **outcome})
                tick(done, len(ids))
    finally:
        runtime.close()
    if args.json:
        print_json(results)
    elif not results:
        say_empty("quarantined mail to replay")
    # One JSON object a line, as `gateway deliver` prints its result.
    for result in [] if args.json else results:
        print(json.dumps(result, ensure_ascii=False))
    if any(r["outcome"] == "missing" for r in results):
        return EX_NOINPUT
    return EX_SOFTWARE if any(r["outcome"] == "quarantined" for r in results) else EX_OK


def cmd_outbox_list(config: Config, args: argparse.Namespace) -> int:
    rows = list_outbox(open_store(config.storage), args.status, args.limit)
    if args.json:
        print_json(rows)
        return EX_OK
    if not rows:
        say_empty("outgoing mail")
    for row in rows:
        # Addresses in full: a cut-off address looks like a real, wrong one.
        print(
            f"{row['id']:<6} {row['status']:<7} {row['kind']:<20} attempts={row['attempts']:<3}"
            f" {', '.join(row['recipients'])}  {row['last_error'][:80]}".rstrip()
        )
    return EX_OK


def cmd_outbox_flush(config: Config, args: argparse.Namespace) -> int:
    store = open_store(config.storage)
    if args.now:
        retry_now(store)
    report = change_notices.deliverer(config, store).flush()
    if args.json:
        print_json(asdict(report))
    else:
        print(report)
    return EX_OK if not report.deferred else EX_TEMPFAIL


def cmd_outbox_retry(config: Config, args: argparse.Namespace) -> int:
    def action(runtime: Runtime) -> str:
        rows = retry_failed(runtime.store, args.ids, getpass.getuser())
        if args.json:
            queued = [{"id": r["id"], "kind": r["kind"], "status": "queued"} for r in rows]
            return json.dumps(queued, ensure_ascii=False, indent=2, default=str)
        # serve's sender takes them at its next poll; `outbox flush` sends them now.
        return "\n".join(f"queued again: outbox {row['id']} ({row['kind']})" for row in rows)

    return run_action(config, action, (NotFailed,), (NoSuchMail,))


def cmd_held_list(config: Config, args: argparse.Namespace) -> int:
    rows = list_held(open_store(config.storage))
    if args.json:
        print_json(rows)
        return EX_OK
    if not rows:
        say_empty("held mail")
    for row in rows:
        print(
            f"{row['id']:<6} {row['created_at']} {row['from_addr']:<35} {row['subject'][:50]}"
            f"  ({row['reason']})"
        )
    return EX_OK


def add_commands(top: Any) -> list[argparse.ArgumentParser]:
    """The quarantine, outbox and held groups; returns every parser, all of which take --json."""
    groups = {
        name: top.add_parser(name, help=text).add_subparsers(dest="action", required=True)
        for name, text in (
            ("quarantine", "messages that failed processing"),
            ("outbox", "outgoing mail"),
            ("held", "mail held for triage"),
        )
    }

    def add(group: str, name: str, handler: Any, text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = groups[group].add_parser(name, help=text)
        parser.set_defaults(handler=handler, parser=parser)
        return parser

    q_list = add("quarantine", "list", cmd_quarantine_list, "list quarantined messages")
    q_replay = add("quarantine", "replay", cmd_quarantine_replay, "process them again, after a fix")
    q_replay.add_argument("ids", type=int, nargs="*", metavar="ID")
    q_replay.add_argument("--all", action="store_true", help="every entry not replayed yet")
    o_list = add("outbox", "list", cmd_outbox_list, "list outgoing mail, newest first")
    o_list.add_argument("--status", choices=("queued", "sent", "failed"))
    o_list.add_argument("--limit", type=int, default=100)
    o_flush = add("outbox", "flush", cmd_outbox_flush, "deliver what is due now")
    o_flush.add_argument("--now", action="store_true", help="also retry deferred mail at once")
    o_retry = add("outbox", "retry", cmd_outbox_retry, "queue failed mail again (all or none)")
    o_retry.add_argument("ids", type=int, nargs="+", metavar="ID")
    h_list = add("held", "list", cmd_held_list, "list held mail")
    return [q_list, q_replay, o_list, o_flush, o_retry, h_list]
