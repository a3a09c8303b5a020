"""The `gateway` command line: one entry point for the service, the pipe, cron and operators."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from gateway import __version__
from gateway.cli import backup as backup_commands
from gateway.cli import cases as case_commands
from gateway.cli import changes as change_commands
from gateway.cli import digest as digest_commands
from gateway.cli import incidents as incident_commands
from gateway.cli import init as init_commands
from gateway.cli import inspect as inspect_commands
from gateway.cli import purge as purge_commands
from gateway.cli import queues as queue_commands
from gateway.cli import report as report_commands
from gateway.cli import status as status_commands
from gateway.cli.common import (
    EX_CONFIG,
    EX_DATAERR,
    EX_NOPERM,
    EX_OK,
    EX_TEMPFAIL,
    Parser,
    print_json,
    wrong_prefixes,
)
from gateway.core import logs
from gateway.core.config import Config, ConfigError, load_config
from gateway.directory.registry import RegistryError, load_registry
from gateway.ops.ownership import hand_back
from gateway.rules.engine import RuleError
from gateway.rules.intent import IntentError
from gateway.runtime import Runtime
from gateway.store.database import StorageUnavailable


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
    warnings = []
    for org in registry.organizations.values():
        missing = [
            r for r in ("incidents", "change", "local-support", "technical") if not org.contacts_with(r)
        ]
        if missing:
            warnings.append(f"{org.id} has no contact for {', '.join(missing)}")
    if args.json:
        print_json(
            {
                "file": str(config.registry.file),
                "organizations": len(registry.organizations),
                "contacts": contacts,
                "agents": len(registry.agents),
                "warnings": warnings,
            }
        )
        return EX_OK
    print(
        f"ok: {len(registry.organizations)} organisations, {contacts} contact points,"
        f" {len(registry.agents)} agents in {config.registry.file}"
    )
    for warning in warnings:
        print(f"warning: {warning}")
    return EX_OK


def cmd_rules_check(config: Config, args: argparse.Namespace) -> int:
    runtime = Runtime(config)
    if args.json:
        print_json([{"name": r.name, "source": r.source, "then": r.then} for r in runtime.rules()])
        return EX_OK
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
    inspect_commands,
)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="gateway", description=__doc__)
    parser.add_argument("--version", action="version", version=f"gateway {__version__}")
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
    contacts = top.add_parser("contacts", help="the contact registry").add_subparsers(
        dest="action", required=True
    )
    check = add(contacts, "check", cmd_contacts_check, "validate the registry")
    rules = top.add_parser("rules", help="the rules").add_subparsers(dest="action", required=True)
    rules_check = add(rules, "check", cmd_rules_check, "validate rules and print the compiled order")
    explain = add(rules, "explain", cmd_rules_explain, "which rules match a message")
    explain.add_argument("file")
    with_json = [check, rules_check, explain, *case_commands.add_commands(top)]
    with_json += queue_commands.add_commands(top)
    for p in with_json:
        p.add_argument("--json", action="store_true", help="machine-readable output")
    for module in COMMAND_MODULES:
        module.add_commands(top)
    _options_anywhere(parser)
    return parser


def _options_anywhere(parser: argparse.ArgumentParser) -> None:
    """`gateway status --config X` as well as `gateway --config X status`: each leaf takes them too."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _options_anywhere(sub)
            return
    if parser.prog != "gateway":
        # SUPPRESS: an option not given after the command leaves the one given before it alone.
        parser.add_argument("--config", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        parser.add_argument(
            "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logs.setup(None, args.verbose)
    try:
        # `gateway init` runs before there is a config to load.
        config = load_config(args.config) if getattr(args, "needs_config", True) else Config()
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return EX_TEMPFAIL if args.command == "deliver" else EX_CONFIG
    wrong = wrong_prefixes(args, config.service.case_prefix)
    if wrong:
        parser.error(f"{', '.join(wrong)}: cases here are {config.service.case_prefix}#N")
    logs.setup(config.log, args.verbose)
    try:
        return _run(config, args)
    finally:
        if getattr(args, "needs_config", True):
            hand_back(config.storage.path)


def _run(config: Config, args: argparse.Namespace) -> int:
    """The command's handler, with each way it can fail turned into one line and an exit code."""
    try:
        code = int(args.handler(config, args))
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return code
    except BrokenPipeError:
        # `gateway cases list | head`: the reader has all it wanted. Point stdout at /dev/null so
        # the interpreter's final flush does not fail a second time.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EX_OK
    except (RuleError, IntentError, RegistryError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EX_TEMPFAIL if args.command == "deliver" else EX_CONFIG
    except StorageUnavailable as exc:
        # A store the user may not write to is the usual cause when an operator runs a command.
        hint = "; run as the service's user" if "readonly" in str(exc) else ""
        print(f"storage unavailable: {exc}{hint}", file=sys.stderr)
        return EX_TEMPFAIL
    except PermissionError as exc:
        print(f"permission denied: {exc.filename or exc}: run as the service's user", file=sys.stderr)
        return EX_TEMPFAIL if args.command == "deliver" else EX_NOPERM
