"""`gateway init DIR`: a starter config, the example registry and the default rules and templates."""

from __future__ import annotations

import json
import re
from importlib.resources.abc import Traversable
from pathlib import Path

from gateway.core.shipped import defaults

# Where systemd's StateDirectory=gateway puts the service's data (docs/systemd/gateway.service).
DEFAULT_STORAGE = Path("/var/lib/gateway")
_COPY_ADVICE = re.compile(r"copy to gateway\.toml", re.IGNORECASE)
_STORAGE_PATH = re.compile(r'(?m)^(path\s*=\s*)"[^"\n]*"')

EX_SOFTWARE = 70
EX_CANTCREAT = 73

# What a new installation gets, as (where it is in the defaults, where it goes in DIR).
STARTER = (
    ("data/gateway.example.toml", "gateway.toml"),
    ("data/contacts.toml", "data/contacts.toml"),
    ("rules", "rules"),
    ("templates", "templates"),
)


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


def init(folder: Path, storage: Path = DEFAULT_STORAGE) -> tuple[list[Path], list[Path]]:
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
    config.write_text(starter_config(config.read_text(encoding="utf-8"), storage), encoding="utf-8")
    return written, kept


def starter_config(example: str, storage: Path) -> str:
    """The example config made this installation's: its storage path absolute, no copying advice."""
    lines = [line for line in example.splitlines() if not _COPY_ADVICE.search(line)]
    text = "\n".join(lines) + "\n"
    # The service, cron and an operator's shell each start in another folder: one absolute place.
    return _STORAGE_PATH.sub(lambda m: f"{m.group(1)}{json.dumps(str(storage.absolute()))}", text, count=1)
