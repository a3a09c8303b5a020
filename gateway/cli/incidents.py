"""`gateway incident …`: incidents the centre found itself, announced to the customer."""

from __future__ import annotations

import argparse
import getpass
from collections.abc import Callable
from typing import Any

from gateway.cli.common import case_id, run_action
from gateway.core.config import Config
from gateway.incidents.announce import notify_due
from gateway.incidents.detected import CaseNotFound, IncidentRefused, notify, resolve, update
from gateway.runtime import Runtime


def _run(config: Config, action: Callable[[Runtime], str]) -> int:
    return run_action(config, action, (IncidentRefused,), (CaseNotFound,))


def cmd_notify(config: Config, args: argparse.Namespace) -> int:
    def action(runtime: Runtime) -> str:
        opened = notify(runtime, args.org, args.title, args.description, getpass.getuser())
        return f"opened {config.service.case_prefix}#{opened}; notice queued to the incidents contacts"

    return _run(config, action)


def cmd_update(config: Config, args: argparse.Namespace) -> int:
    def action(runtime: Runtime) -> str:
        update(runtime, args.case, args.message, getpass.getuser())
        return f"update queued for {config.service.case_prefix}#{args.case}"

    return _run(config, action)


def cmd_resolve(config: Config, args: argparse.Namespace) -> int:
    def action(runtime: Runtime) -> str:
        resolve(runtime, args.case, args.message, getpass.getuser())
        return f"{config.service.case_prefix}#{args.case} resolved; all-clear queued"

    return _run(config, action)


def cmd_notify_due(config: Config, args: argparse.Namespace) -> int:
    def action(runtime: Runtime) -> str:
        done = notify_due(runtime)
        return "\n".join(done) if done else "no incident notices due"

    return _run(config, action)


def add_commands(top: Any) -> None:
    """The `gateway incident …` group."""
    group = top.add_parser("incident", help="incidents the centre detects").add_subparsers(
        dest="action", required=True
    )
    notify_p = group.add_parser("notify", help="open an incident case and notify the incidents contacts")
    notify_p.set_defaults(handler=cmd_notify)
    notify_p.add_argument("--org", required=True, help="organisation id from the registry")
    notify_p.add_argument("--title", required=True)
    notify_p.add_argument("--description", default="")
    update_p = group.add_parser("update", help="send a follow-up in the incident's thread")
    update_p.set_defaults(handler=cmd_update)
    update_p.add_argument("case", type=case_id, help="12, SSC#12 or [SSC#12]")
    update_p.add_argument("--message", required=True)
    resolve_p = group.add_parser("resolve", help="resolve the incident and send the all-clear")
    resolve_p.set_defaults(handler=cmd_resolve)
    resolve_p.add_argument("case", type=case_id, help="12, SSC#12 or [SSC#12]")
    resolve_p.add_argument("--message", default="")
    due_p = group.add_parser(
        "notify-due", help="send the monitoring incident notices that fell due (serve does this itself)"
    )
    due_p.set_defaults(handler=cmd_notify_due)
