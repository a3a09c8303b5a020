"""Where the rules, templates and example files shipped with the gateway are: the wheel or a checkout."""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path


def defaults() -> Traversable:
    """The shipped defaults: gateway/_defaults in an installed wheel, the repository in a checkout."""
    packaged = resources.files("gateway") / "_defaults"
    if packaged.is_dir():
        return packaged
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "rules").is_dir() and (checkout / "templates").is_dir():
        return checkout
    raise FileNotFoundError("the default rules and templates are not installed with this gateway")


def shipped_dir(name: str) -> Path | None:
    """The shipped `rules` or `templates` folder as a path, or None when this install has none."""
    try:
        folder = defaults() / name
    except FileNotFoundError:
        return None
    # A wheel installs as plain files, so the Traversable is a real folder on disk.
    return Path(str(folder)) if folder.is_dir() else None
