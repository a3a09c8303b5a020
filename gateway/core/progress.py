"""How long work reports how far it has come: a `tick(done, total)` the caller may show or ignore."""

from __future__ import annotations

from collections.abc import Callable

Tick = Callable[[int, int], None]


def quiet(done: int, total: int) -> None:
    """The tick for callers that show nothing (serve, cron, tests)."""
