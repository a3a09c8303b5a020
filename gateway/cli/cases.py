"""`gateway cases …`: list and read cases, and an agent's changes to one from a shell."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from typing import Any

from gateway.cases.casework import close_resolved
from gateway.cases.commands import PRIORITY, STATUS
from gateway.cases.desk import DeskRefused, NoSuchCase, agent_named, ask_local_work, change, note
from gateway.cli import search as search_commands
from gateway.cli.common import EX_NOINPUT, EX_OK, case_id, print_json, run_action, say_empty
from gateway.core.config import Config
from gateway.ops.queries import list_cases, show_case
from gateway.runtime import Runtime
from gateway.store.database import open_store

CASE_STATUSES = ("new", "open", "pending", "resolved", "closed")


def cmd_list(config: Config, args: argparse.Namespace) -> int:
    rows = list_cases(open_store(config.storage), args.status, args.limit)
    if args.json:
        print_json(rows)
        return EX_OK
    if not rows:
        say_empty("cases")
    prefix = config.service.case_prefix
    for row in rows:
        print(
            f"{prefix}#{row['id']:<6} {row['status']:<9} {row['priority']:<8} {row['category']:<10}"
            f" {row['organization'] or '-':<20} {row['subject'][:60]}"
        )
    return EX_OK


def cmd_show(config: Config, args: argparse.Namespace) -> int:
    case = show_case(open_store(config.storage), args.id)
    if case is None:
        print(f"no case {config.service.case_prefix}#{args.id}", file=sys.stderr)
        return EX_NOINPUT
    if args.json:
        print_json(case)
        return EX_OK
    print(f"[{config.service.case_prefix}#{case['id']}] {case['subject']}")
    for key in ("status", "category", "priority", "organization", "requester", "owner", "created_at"):
        print(f"  {key}: {case[key]}")
    for message in case["messages"]:
        print(
            f"\n--- {message['id']} {message['direction']} {message['created_at']}"
            f" {message['from']} -> {', '.join(message['to'])}"
        )
        print(f"    {message['subject']}")
        if message["attachments"]:
            print(f"    attachments: {', '.join(message['attachments'])}")
        print("    " + message["body"].strip().replace("\n", "\n    "))
    print("\nhistory:")
    for event in case["history"]:
        print(f"  {event['at']} {event['actor']}: {event['action']} {event['detail']} ({event['reason']})")
    return EX_OK


def cmd_close_resolved(config: Config, args: argparse.Namespace) -> int:
    closed = close_resolved(Runtime(config))
    print(f"closed {len(closed)} case(s) resolved more than {config.service.autoclose_days} days ago")
    return EX_OK


def _desk(config: Config, args: argparse.Namespace, wanted: list[tuple[str, str]]) -> int:
    tag = f"{config.service.case_prefix}#{args.id}"

    def action(runtime: Runtime) -> str:
        agent = agent_named(runtime, args.agent)
        if args.text is not None:
            note(runtime, agent, args.id, args.text)
            return f"{tag}: internal note by {agent.email}"
        return "\n".join(f"{tag}: {line}" for line in change(runtime, agent, args.id, wanted))

    return run_action(config, action, (DeskRefused,), (NoSuchCase,))


def cmd_assign(config: Config, args: argparse.Namespace) -> int:
    return _desk(config, args, [("assign", args.owner)])


def cmd_set(config: Config, args: argparse.Namespace) -> int:
    wanted = [(name, value) for name in ("status", "priority") if (value := getattr(args, name))]
    if not wanted:
        args.parser.error("give --status, --priority or both")
    return _desk(config, args, wanted)


def cmd_note(config: Config, args: argparse.Namespace) -> int:
    return _desk(config, args, [])


def cmd_local_work(config: Config, args: argparse.Namespace) -> int:
    tag = f"{config.service.case_prefix}#{args.id}"

    def action(runtime: Runtime) -> str:
        outcome = ask_local_work(runtime, agent_named(runtime, args.agent), args.id, args.text)
        if args.json:
            return json.dumps(asdict(outcome), ensure_ascii=False, indent=2)
        return f"{tag}: {outcome.summary()}"

    return run_action(config, action, (DeskRefused,), (NoSuchCase,))


def _agent_command(group: Any, name: str, handler: Any, text: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = group.add_parser(name, help=text)
    parser.add_argument("id", type=case_id, help="12, SSC#12 or [SSC#12]")
    parser.add_argument(
        "--as", dest="agent", required=True, metavar="AGENT", help="your address as in the registry"
    )
    parser.set_defaults(handler=handler, parser=parser, text=None)
    return parser


def add_commands(top: Any) -> list[argparse.ArgumentParser]:
    """The `gateway cases …` group; returns the parsers that take --json."""
    group = top.add_parser("cases", help="cases").add_subparsers(dest="action", required=True)
    listing = group.add_parser("list", help="list cases, newest first")
    listing.add_argument("--status", choices=CASE_STATUSES)
    listing.add_argument("--limit", type=int, default=100)
    listing.set_defaults(handler=cmd_list)
    show = group.add_parser("show", help="one case with its messages, attachments and history")
    show.add_argument("id", type=case_id, help="12, SSC#12 or [SSC#12]")
    show.set_defaults(handler=cmd_show)
    closing = group.add_parser("close-resolved", help="close cases resolved long enough ago")
    closing.set_defaults(handler=cmd_close_resolved)
    search_commands.add_search_command(group)
    assign = _agent_command(group, "assign", cmd_assign, "give the case to an agent")
    assign.add_argument("owner", metavar="AGENT", help="the agent's handle or address")
    setting = _agent_command(group, "set", cmd_set, "change the case's status or priority")
    setting.add_argument("--status", help=f"one of {', '.join(sorted(set(STATUS)))}")
    setting.add_argument("--priority", help=f"one of {', '.join(sorted(set(PRIORITY)))}")
    noting = _agent_command(group, "note", cmd_note, "an internal note in the case's history")
    noting.add_argument("--text", required=True)
    local = _agent_command(
        group, "local-work", cmd_local_work, "ask the organisation's Lokalt supportpunkt to do local work"
    )
    local.add_argument("--text", required=True, help="what is to be done, as the mail will say it")
    return [listing, show, local]
