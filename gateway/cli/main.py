"""The `gateway` command line: one entry point for the service, the pipe, cron and operators."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from gateway.cli import backup as backup_commands
from gateway.cli import changes as change_commands
from gateway.cli import digest as digest_commands
from gateway.cli import incidents as incident_commands
from gateway.cli import init as init_commands
from gateway.cli import purge as purge_commands
from gateway.cli import report as report_commands
from gateway.cli import search as search_commands
from gateway.cli import status as status_commands
from gateway.cli.common import (
    EX_CONFIG,
    EX_DATAERR,
    EX_NOINPUT,
    EX_OK,
    EX_SOFTWARE,
    EX_TEMPFAIL,
    print_json,
    run_action,
)
from gateway.core import logs
from gateway.core.config import Config, ConfigError, load_config
from gateway.directory.registry import RegistryError, load_registry
from gateway.rules.engine import RuleError
from gateway.rules.intent import IntentError
from gateway.runtime import Runtime
from gateway.store.database import StorageUnavailable, open_store


def cmd_serve(config: Config, args: argparse.Namespace) -> int:
    from gateway.ops.server import Server

    Server(config, port=args.port).run_until_signalled()
    return EX_OK


def cmd_deliver(config: Config, args: argparse.Namespace) -> int:
    """MTA pipe: exit 0 once stored, 75 when we failed (the MTA retries), 65 when refused."""
    from gateway.flow.context import describe
    from gateway.pipeline.process import process

    limit = config.smtp.max_message_size
    raw = sys.stdin.buffer.read(limit + 1)
    if len(raw) > limit:
        print(f"refused: message larger than {limit} bytes", file=sys.stderr)
        return EX_DATAERR
    if not raw.strip():
        print("refused: empty message", file=sys.stderr)
        return EX_DATAERR
    try:
        runtime = Runtime(config)
        result = process(runtime, raw, "pipe", envelope_from=args.sender)
    except StorageUnavailable as exc:
        print(f"temporary failure: {exc}", file=sys.stderr)
        return EX_TEMPFAIL
    print(describe(result))
    if result.replies and args.flush:
        from gateway.changes import notices as change_notices

        change_notices.deliverer(config, runtime.store).flush()
    return EX_OK


def cmd_fetch(config: Config, args: argparse.Namespace) -> int:
    from gateway.intake.imap import fetch_once

    return fetch_once(config, dry_run=args.dry_run)


def cmd_contacts_check(config: Config, args: argparse.Namespace) -> int:
    try:
        registry = load_registry(config.registry.file)
    except RegistryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EX_DATAERR
    contacts = sum(len(o.contacts) for o in registry.organizations.values())
    print(
        f"ok: {len(registry.organizations)} organisations, {contacts} contact points,"
        f" {len(registry.agents)} agents in {config.registry.file}"
    )
    for org in registry.organizations.values():
        missing = [
            r for r in ("incidents", "change", "local-support", "technical") if not org.contacts_with(r)
        ]
        if missing:
            print(f"warning: {org.id} has no contact for {', '.join(missing)}")
    return EX_OK


def cmd_cases_list(config: Config, args: argparse.Namespace) -> int:
    from gateway.ops.queries import list_cases

    rows = list_cases(open_store(config.storage), args.status, args.limit)
    if args.json:
        print_json(rows)
        return EX_OK
    prefix = config.service.case_prefix
    for row in rows:
        print(
            f"{prefix}#{row['id']:<6} {row['status']:<9} {row['priority']:<8} {row['category']:<10}"
            f" {row['organization'] or '-':<20} {row['subject'][:60]}"
        )
    return EX_OK


def cmd_cases_show(config: Config, args: argparse.Namespace) -> int:
    from gateway.ops.queries import show_case

    case = show_case(open_store(config.storage), args.id)
    if case is None:
        print(f"no case {args.id}", file=sys.stderr)
        return EX_NOINPUT
    if args.json:
        print_json(case)
        return EX_OK
    print(f"[{config.service.case_prefix}#{case['id']}] {case['subject']}")
    for key in ("status", "category", "priority", "organization", "requester", "created_at"):
        print(f"  {key}: {case[key]}")
    for message in case["messages"]:
        print(f"\n--- {message['direction']} {message['created_at']} {message['from']} -> {message['to']}")
        print(f"    {message['subject']}")
        print("    " + message["body"].strip().replace("\n", "\n    "))
    print("\nhistory:")
    for event in case["history"]:
        print(f"  {event['at']} {event['actor']}: {event['action']} {event['detail']} ({event['reason']})")
    return EX_OK


def cmd_cases_close_resolved(config: Config, args: argparse.Namespace) -> int:
    from gateway.cases.casework import close_resolved

    closed = close_resolved(Runtime(config))
    print(f"closed {len(closed)} case(s) resolved more than {config.service.autoclose_days} days ago")
    return EX_OK


def cmd_quarantine_list(config: Config, args: argparse.Namespace) -> int:
    from gateway.ops.queries import list_quarantine

    rows = list_quarantine(open_store(config.storage))
    if args.json:
        print_json(rows)
        return EX_OK
    for row in rows:
        replay = f" replayed {row['replayed_at']}: {row['replay_result']}" if row["replayed_at"] else ""
        print(
            f"{row['id']:<5} {row['created_at']} {row['source']:<6} {row['size']:>9} B"
            f"  {row['error']}{replay}"
        )
    return EX_OK


def cmd_quarantine_replay(config: Config, args: argparse.Namespace) -> int:
    from gateway.flow.context import describe
    from gateway.ops.queries import replay_quarantined

    try:
        result = replay_quarantined(Runtime(config), args.id)
    except KeyError as exc:
        print(exc.args[0], file=sys.stderr)
        return EX_NOINPUT
    print(describe(result))
    return EX_OK if result.outcome != "quarantined" else EX_SOFTWARE


def cmd_outbox_list(config: Config, args: argparse.Namespace) -> int:
    from gateway.ops.queries import list_outbox

    rows = list_outbox(open_store(config.storage), args.status)
    if args.json:
        print_json(rows)
        return EX_OK
    for row in rows:
        print(
            f"{row['id']:<6} {row['status']:<7} {row['kind']:<20} {','.join(row['recipients'])[:40]:<40}"
            f" attempts={row['attempts']} {row['last_error'][:60]}"
        )
    return EX_OK


def cmd_outbox_flush(config: Config, args: argparse.Namespace) -> int:
    from gateway.changes import notices as change_notices
    from gateway.outbox.queue import retry_now

    store = open_store(config.storage)
    if args.now:
        retry_now(store)
    report = change_notices.deliverer(config, store).flush()
    print(report)
    return EX_OK if not report.deferred else EX_TEMPFAIL


def cmd_outbox_retry(config: Config, args: argparse.Namespace) -> int:
    import getpass

    from gateway.outbox.queue import NoSuchMail, NotFailed, retry_failed

    def action(runtime: Any) -> str:
        rows = retry_failed(runtime.store, args.ids, getpass.getuser())
        # serve's sender takes them at its next poll; `outbox flush` sends them now.
        return "\n".join(f"queued again: outbox {r['id']} ({r['kind']})" for r in rows)

    return run_action(config, action, (NotFailed,), (NoSuchMail,))


def cmd_held_list(config: Config, args: argparse.Namespace) -> int:
    from gateway.ops.queries import list_held

    rows = list_held(open_store(config.storage))
    if args.json:
        print_json(rows)
        return EX_OK
    for row in rows:
        print(
            f"{row['id']:<6} {row['created_at']} {row['from_addr']:<35} {row['subject'][:50]}"
            f"  ({row['reason']})"
        )
    return EX_OK


def cmd_rules_check(config: Config, args: argparse.Namespace) -> int:
    runtime = Runtime(config)
    for index, rule in enumerate(runtime.rules(), 1):
        then = ", ".join(f"{k}={v}" for k, v in rule.then.items())
        print(f"{index:>3}. {rule.name:<34} [{rule.source}] -> {then}")
    print(f"ok: {len(runtime.rules())} rules")
    return EX_OK


def cmd_rules_explain(config: Config, args: argparse.Namespace) -> int:
    from gateway.pipeline.explain import explain

    runtime = Runtime(config)
    report = explain(runtime, Path(args.file).read_bytes())
    if args.json:
        print_json(report)
    else:
        for line in report["lines"]:
            print(line)
    return EX_OK


Handler = Callable[[Config, argparse.Namespace], int]

# Command groups that live beside their domain module. Each module named here exposes
# `add_commands(top)`, adding sub-parsers whose defaults set `handler(config, args) -> int`.
# The command groups that live in modules of their own, each with add_commands(top).
COMMAND_MODULES = (
    status_commands,
    backup_commands,
    purge_commands,
    init_commands,
    digest_commands,
    report_commands,
    change_commands,
    incident_commands,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description=__doc__)
    parser.add_argument("--config", help="config file (default: $GATEWAY_CONFIG or ./gateway.toml)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    top = parser.add_subparsers(dest="command", required=True)

    def add(sub: Any, name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, help=help_text)
        p.set_defaults(handler=handler)
        return p

    serve = add(top, "serve", cmd_serve, "run the SMTP listener, outbox sender and IMAP fetcher")
    serve.add_argument("--port", type=int, help="override smtp.port")
    deliver = add(top, "deliver", cmd_deliver, "take one message on stdin (MTA pipe)")
    deliver.add_argument("--sender", default=None, help="envelope sender, if the MTA passes it")
    deliver.add_argument("--flush", action="store_true", help="send queued replies before exiting")
    fetch = add(top, "fetch", cmd_fetch, "drain the IMAP mailbox once")
    fetch.add_argument("--dry-run", action="store_true", help="list what would be fetched")

    groups: dict[str, Any] = {}
    for name, text in (
        ("contacts", "the contact registry"),
        ("cases", "cases"),
        ("quarantine", "messages that failed processing"),
        ("outbox", "outgoing mail"),
        ("held", "mail held for triage"),
        ("rules", "the rules"),
    ):
        groups[name] = top.add_parser(name, help=text).add_subparsers(dest="action", required=True)
    add(groups["contacts"], "check", cmd_contacts_check, "validate the registry")
    cases_list = add(groups["cases"], "list", cmd_cases_list, "list cases, newest first")
    cases_list.add_argument("--status")
    cases_list.add_argument("--limit", type=int, default=100)
    cases_show = add(groups["cases"], "show", cmd_cases_show, "one case with its messages and history")
    cases_show.add_argument("id", type=int)
    add(groups["cases"], "close-resolved", cmd_cases_close_resolved, "close cases resolved long enough ago")
    search_commands.add_search_command(groups["cases"])
    q_list = add(groups["quarantine"], "list", cmd_quarantine_list, "list quarantined messages")
    q_replay = add(groups["quarantine"], "replay", cmd_quarantine_replay, "process one again")
    q_replay.add_argument("id", type=int)
    o_list = add(groups["outbox"], "list", cmd_outbox_list, "list outgoing mail")
    o_list.add_argument("--status", choices=("queued", "sent", "failed"))
    o_flush = add(groups["outbox"], "flush", cmd_outbox_flush, "deliver what is due now")
    o_flush.add_argument("--now", action="store_true", help="also retry deferred mail at once")
    o_retry = add(groups["outbox"], "retry", cmd_outbox_retry, "queue failed mail again (all or none)")
    o_retry.add_argument("ids", type=int, nargs="+", metavar="ID")
    h_list = add(groups["held"], "list", cmd_held_list, "list held mail")
    add(groups["rules"], "check", cmd_rules_check, "validate rules and print the compiled order")
    explain = add(groups["rules"], "explain", cmd_rules_explain, "which rules match a message")
    explain.add_argument("file")
    for p in (cases_list, cases_show, q_list, o_list, h_list, explain):
        p.add_argument("--json", action="store_true", help="machine-readable output")
    for module in COMMAND_MODULES:
        module.add_commands(top)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.setup(None, args.verbose)
    try:
        # `gateway init` runs before there is a config to load.
        config = load_config(args.config) if getattr(args, "needs_config", True) else Config()
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return EX_TEMPFAIL if args.command == "deliver" else EX_CONFIG
    logs.setup(config.log, args.verbose)
    try:
        return int(args.handler(config, args))
    except (RuleError, IntentError, RegistryError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EX_TEMPFAIL if args.command == "deliver" else EX_CONFIG
    except StorageUnavailable as exc:
        print(f"storage unavailable: {exc}", file=sys.stderr)
        return EX_TEMPFAIL
