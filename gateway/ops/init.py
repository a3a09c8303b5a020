"""`gateway init DIR`: a starter config, the example registry and the default rules and templates."""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

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
    checkout = Path(__file__).resolve().parents[2]
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
