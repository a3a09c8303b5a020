"""`gateway config show`, `gateway messages raw` and `gateway attachments save`: looking inside."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from gateway.cli.common import EX_CANTCREAT, EX_DATAERR, EX_NOINPUT, EX_OK, print_json
from gateway.core.config import Config
from gateway.mail import attachments
from gateway.mail.limits import MessageTooComplex
from gateway.ops.queries import raw_message
from gateway.store.database import open_store

# Keys whose values open something; shown only as set or not.
SECRET_KEYS = ("secret", "password")
MASK = "********"


def effective(config: Config) -> dict[str, Any]:
    """Every setting as the gateway uses it, defaults included, secrets masked."""
    sections: dict[str, Any] = {}
    for name, value in vars(config).items():
        if name == "source":
            continue
        if value is None:
            sections[name] = None  # a section that is off ([relay], [imap])
        elif is_dataclass(value):
            sections[name] = _masked(asdict(value))  # type: ignore[arg-type]
        else:
            sections.setdefault("paths", {})[name.removesuffix("_dir")] = value
    plain: dict[str, Any] = json.loads(json.dumps(sections, default=str))  # paths, tuples as JSON
    return plain


def _masked(values: dict[str, Any]) -> dict[str, Any]:
    return {
        key: (MASK if value else "")
        if key in SECRET_KEYS
        else _masked(value)
        if isinstance(value, dict)
        else value
        for key, value in values.items()
    }


def _lines(data: dict[str, Any], prefix: str = "") -> list[str]:
    lines = []
    for key, value in data.items():
        if isinstance(value, dict):
            lines.extend(_lines(value, f"{prefix}{key}."))
        else:
            lines.append(f"{prefix}{key} = {json.dumps(value, ensure_ascii=False)}")
    return lines


def cmd_config_show(config: Config, args: argparse.Namespace) -> int:
    data = effective(config)
    if args.json:
        print_json(data)
        return EX_OK
    print(f"# {config.source}")
    print("\n".join(_lines(data)))
    return EX_OK


def cmd_messages_raw(config: Config, args: argparse.Namespace) -> int:
    try:
        raw = raw_message(open_store(config.storage), args.id)
    except KeyError as exc:
        print(exc.args[0], file=sys.stderr)
        return EX_NOINPUT
    sys.stdout.flush()
    sys.stdout.buffer.write(raw)
    sys.stdout.buffer.flush()
    return EX_OK


def cmd_attachments_save(config: Config, args: argparse.Namespace) -> int:
    try:
        raw = raw_message(open_store(config.storage), args.id)
    except KeyError as exc:
        print(exc.args[0], file=sys.stderr)
        return EX_NOINPUT
    try:
        written = attachments.save(raw, Path(args.dir))
    except MessageTooComplex as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return EX_DATAERR
    except OSError as exc:
        print(f"cannot write to {args.dir}: {exc.strerror}", file=sys.stderr)
        return EX_CANTCREAT
    if args.json:
        print_json([{"path": str(p), "size": p.stat().st_size} for p in written])
    elif not written:
        print(f"message {args.id} has no attachments")
    for path in [] if args.json else written:
        print(path)
    return EX_OK


def add_commands(top: Any) -> None:
    config = top.add_parser("config", help="the configuration").add_subparsers(dest="action", required=True)
    show = config.add_parser("show", help="the effective configuration, defaults included, secrets masked")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(handler=cmd_config_show)
    messages = top.add_parser("messages", help="stored messages").add_subparsers(dest="action", required=True)
    raw = messages.add_parser("raw", help="a message's stored bytes, as received or sent")
    raw.add_argument("id", help="the id from cases show (out-N for outgoing), or a Message-ID")
    raw.set_defaults(handler=cmd_messages_raw)
    files = top.add_parser("attachments", help="attachments").add_subparsers(dest="action", required=True)
    save = files.add_parser("save", help="write a message's attachments into DIR")
    save.add_argument("id", help="the id from cases show, or a Message-ID")
    save.add_argument("dir", help="the folder to write into (created if missing)")
    save.add_argument("--json", action="store_true", help="machine-readable output")
    save.set_defaults(handler=cmd_attachments_save)
