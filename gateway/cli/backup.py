"""`gateway backup` and `gateway restore`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from gateway.cli.common import print_json, progress
from gateway.core.config import Config
from gateway.ops.backup import EX_DATAERR, BackupError, backup, restore


def cmd_backup(config: Config, args: argparse.Namespace) -> int:
    try:
        with progress("backing up") as tick:
            manifest = backup(config, Path(args.path), tick)
    except BackupError as exc:
        print(f"backup refused: {exc}", file=sys.stderr)
        return exc.code
    if args.json:
        print_json({"path": args.path, **manifest})
        return 0
    counts = ", ".join(f"{n} {name}" for name, n in manifest["counts"].items())
    print(f"backup written to {args.path}: {counts}; {manifest['outgoing_files']} outgoing files")
    return 0


def cmd_restore(config: Config, args: argparse.Namespace) -> int:
    try:
        restored = restore(config, Path(args.path), force=args.force)
    except BackupError as exc:
        print(f"restore refused: {exc}", file=sys.stderr)
        return exc.code
    counts = ", ".join(f"{n} {name}" for name, n in restored["counts"].items())
    print(f"restored {config.storage.database} from {args.path}: {counts}; integrity {restored['integrity']}")
    return 0 if restored["integrity"] == "ok" else EX_DATAERR


def add_commands(top: Any) -> None:
    backup_parser = top.add_parser("backup", help="consistent copy of the store, safe while serving")
    backup_parser.add_argument("path", help="a new or empty directory")
    backup_parser.add_argument("--json", action="store_true", help="machine-readable output")
    backup_parser.set_defaults(handler=cmd_backup)
    restore_parser = top.add_parser("restore", help="put a backup back (never while gateway serve runs)")
    restore_parser.add_argument("path", help="a directory written by gateway backup")
    restore_parser.add_argument("--force", action="store_true", help="replace an existing database")
    restore_parser.set_defaults(handler=cmd_restore)
