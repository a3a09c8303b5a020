"""`gateway init DIR`: a starter installation."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from gateway.core.config import Config
from gateway.ops.init import DEFAULT_STORAGE, EX_CANTCREAT, EX_SOFTWARE, init


def cmd_init(config: Config, args: argparse.Namespace) -> int:
    folder = Path(args.dir)
    try:
        written, kept = init(folder, Path(args.storage))
    except FileExistsError as exc:
        print(f"init refused: {exc}", file=sys.stderr)
        return EX_CANTCREAT
    except FileNotFoundError as exc:
        print(f"init failed: {exc}", file=sys.stderr)
        return EX_SOFTWARE
    for path in kept:
        print(f"kept existing {path}")
    print(f"wrote {len(written)} files to {folder}; the store goes in {Path(args.storage).absolute()}")
    print(f"next: edit {folder / 'gateway.toml'} and {folder / 'data' / 'contacts.toml'}, then")
    print(f"      gateway --config {folder / 'gateway.toml'} contacts check")
    print(f"      gateway --config {folder / 'gateway.toml'} serve")
    return 0


def add_commands(top: Any) -> None:
    parser = top.add_parser("init", help="write a starter config, registry, rules and templates into DIR")
    parser.add_argument("dir", help="the folder for the new installation (created if missing)")
    parser.add_argument(
        "--storage", default=str(DEFAULT_STORAGE), help=f"storage.path to write (default: {DEFAULT_STORAGE})"
    )
    # Runs before any config exists: gateway/cli.py skips loading one for this command.
    parser.set_defaults(handler=cmd_init, needs_config=False)
