"""What one stranger may hold of the listener: connections, message bytes, and lines in our log."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from aiosmtpd.smtp import SMTP

log = logging.getLogger("gateway.smtp")


class ConnectionCaps:
    """Connections open at once, in total and per client address; the listener's loop alone calls it."""

    def __init__(self, total: int, per_client: int) -> None:
        self.total, self.per_client = total, per_client
        self.open: Counter[str] = Counter()
        self.count = 0

    def admit(self, client: str) -> str | None:
        """Count the connection in, or say why it is refused (then it is not counted)."""
        if self.count >= self.total:
            return "421 4.7.0 Too many connections, try again later"
        if self.open[client] >= self.per_client:
            return "421 4.7.0 Too many connections from your address, try again later"
        self.open[client] += 1
        self.count += 1
        return None

    def leave(self, client: str) -> None:
        self.count -= 1
        self.open[client] -= 1
        if self.open[client] <= 0:
            del self.open[client]  # the counter holds only addresses with a connection open


class ByteBudget:
    """Message bytes the listener holds at once; DATA takes its share as it arrives."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def full(self) -> bool:
        return self.held >= self.limit

    def take(self, size: int) -> bool:
        """Hold `size` more bytes, or False (holding nothing more) when that would pass the limit."""
        if self.held + size > self.limit:
            return False
        self.held += size
        return True

    def give_back(self, size: int) -> None:
        self.held -= size


class RateLimitedErrors:
    """An asyncio exception handler that logs each kind of error at most once per interval.

    Out of file descriptors, asyncio reports every failed accept: the log once grew by 598 MB in
    two minutes. The first of a kind is logged in full, then one line per interval with a count.
    """

    def __init__(self, interval: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval, self.clock = interval, clock
        self.last: dict[tuple[str, ...], float] = {}
        self.suppressed: Counter[tuple[str, ...]] = Counter()

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        error = context.get("exception")
        message = str(context.get("message", "unexpected error in the SMTP listener"))
        key = (message, type(error).__name__, str(getattr(error, "errno", "")))
        now, last = self.clock(), self.last.get(key)
        if last is not None and now - last < self.interval:
            self.suppressed[key] += 1
            return
        if len(self.last) > 100:  # a bound on what we remember, whatever the errors say
            self.last.clear()
        self.last[key] = now
        more = self.suppressed.pop(key, 0)
        if last is None:
            log.error("%s: %r", message, error, exc_info=error)
        else:
            log.error("%s: %r (%d more like it in the last %.0f s)", message, error, more, now - last)


class GuardedSession(SMTP):
    """aiosmtpd's session, counted in the handler's ConnectionCaps and hung up on when idle.

    The handler's `connections` and `budget` are shared by every session of the listener; a
    handler without them (aiosmtpd's own, in tests) runs without limits.
    """

    def __init__(self, handler: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(handler, *args, **kwargs)
        self.caps: ConnectionCaps = getattr(handler, "connections", None) or ConnectionCaps(1 << 30, 1 << 30)
        self.budget: ByteBudget = getattr(handler, "budget", None) or ByteBudget(1 << 62)

    client: str | None = None  # the address counted in ConnectionCaps while this session lasts
    refused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.client is not None or self.refused:  # STARTTLS makes a second call: counted already
            super().connection_made(transport)
            return
        peer = transport.get_extra_info("peername")
        client = str(peer[0]) if isinstance(peer, tuple) else str(peer)
        refusal = self.caps.admit(client)
        if refusal is not None:
            self.refused = True
            log.info("%s refused: %s", client, refusal)
            assert isinstance(transport, asyncio.WriteTransport)
            transport.write(refusal.encode("ascii") + b"\r\n")
            transport.close()
            return
        self.client = client
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self.refused:
            return  # no session was started, so there is nothing of aiosmtpd's to tear down
        if self.client is not None:
            self.caps.leave(self.client)
            self.client = None
        super().connection_lost(error)

    def eof_received(self) -> bool | None:
        return False if self.refused else super().eof_received()

    def _timeout_cb(self) -> None:
        """Idle past smtp.idle_timeout_seconds: say so (RFC 5321 4.5.3.2), then hang up."""
        if self.transport is not None and not self.transport.is_closing():
            assert isinstance(self.transport, asyncio.WriteTransport)
            self.transport.write(b"421 4.4.2 Idle too long, closing connection\r\n")
        super()._timeout_cb()  # type: ignore[no-untyped-call]
