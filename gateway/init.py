"""`gateway init DIR`: a starter config, the example registry and the default rules and templates."""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from gateway.config import Config

EX_SOFTWARE = 70
EX_CANTCREAT = 73

# What a new installation gets, as (where it is in the defaults, where it goes in DIR).
STARTER = (
    ("data/gateway.example.toml", "gateway.toml"),
    ("data/contacts.toml", "data/contacts.toml"),
    ("rules", "rules"),
    ("templates", "templates"),
)


def defaults() -> Traversable:
    """The shipped defaults: gateway/_defaults in an installed wheel, the repository in a checkout."""
    packaged = resources.files("gateway") / "_defaults"
    if packaged.is_dir():
        return packaged
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "rules").is_dir() and (checkout / "templates").is_dir():
        return checkout
    raise FileNotFoundError("the default rules and templates are not installed with this gateway")


def _copy(source: Traversable, target: Path, written: list[Path], kept: list[Path]) -> None:
    if source.is_dir():
        for entry in sorted(source.iterdir(), key=lambda e: e.name):
            if not entry.name.startswith((".", "__")):
                _copy(entry, target / entry.name, written, kept)
        return
    if target.exists():
        kept.append(target)  # an operator's edit is never overwritten
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(source.read_bytes())
    written.append(target)


def init(folder: Path) -> tuple[list[Path], list[Path]]:
    """Write the starter files into `folder`; returns (written, kept because they existed)."""
    config = folder / "gateway.toml"
    if config.exists():
        raise FileExistsError(f"{config} exists; gateway init never overwrites a config")
    root = defaults()
    written: list[Path] = []
    kept: list[Path] = []
    # The config last, so a run that fails half-way can simply be run again.
    for source, target in reversed(STARTER):
        _copy(root.joinpath(*source.split("/")), folder / target, written, kept)
    return written, kept


def cmd_init(config: Config, args: argparse.Namespace) -> int:
    folder = Path(args.dir)
    try:
        written, kept = init(folder)
    except FileExistsError as exc:
        print(f"init refused: {exc}", file=sys.stderr)
        return EX_CANTCREAT
    except FileNotFoundError as exc:
        print(f"init failed: {exc}", file=sys.stderr)
        return EX_SOFTWARE
    for path in kept:
        print(f"kept existing {path}")
    print(f"wrote {len(written)} files to {folder}")
    print(f"next: edit {folder / 'gateway.toml'} and {folder / 'data' / 'contacts.toml'}, then")
    print(f"      gateway --config {folder / 'gateway.toml'} contacts check")
    print(f"      gateway --config {folder / 'gateway.toml'} serve")
    return 0


def add_commands(top: Any) -> None:
    parser = top.add_parser("init", help="write a starter config, registry, rules and templates into DIR")
    parser.add_argument("dir", help="the folder for the new installation (created if missing)")
    # Runs before any config exists: gateway/cli.py skips loading one for this command.
    parser.set_defaults(handler=cmd_init, needs_config=False)
