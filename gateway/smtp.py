"""The SMTP intake adapter: bytes in, `process`, and the outcome as an SMTP reply code."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from gateway.pipeline import Result, process
from gateway.runtime import Runtime
from gateway.store import StorageUnavailable

log = logging.getLogger("gateway.smtp")


class IntakeHandler:
    """aiosmtpd handler: 250 only once the message and its case are committed, 451 on our failures."""

    def __init__(self, runtime: Runtime, on_stored: Callable[[Result], None] | None = None) -> None:
        self.runtime = runtime
        self.on_stored = on_stored
        # One worker: SQLite has one writer anyway, and the event loop stays free for I/O.
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="intake")
        self.accepting = True
        # DATA commands between "accepted for processing" and "answer written"; stop() waits for none.
        self.in_flight = 0
        self.idle = threading.Condition()

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if not self.accepting:
            return "421 4.3.2 Shutting down, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self.idle:
            if not self.accepting:
                return "421 4.3.2 Shutting down, try again later"
            self.in_flight += 1
        try:
            return await self._data(envelope)
        finally:
            # aiosmtpd writes our answer in the same step as this return, before stop() can cancel us.
            with self.idle:
                self.in_flight -= 1
                self.idle.notify_all()

    def drain(self, timeout: float) -> None:
        """Refuse new messages, then wait until every accepted one is stored and answered."""
        with self.idle:
            self.accepting = False
            self.idle.wait_for(lambda: self.in_flight == 0, timeout)

    async def _data(self, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        mail_from = envelope.mail_from or ""
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(self.worker, self._process, raw, mail_from)
        except StorageUnavailable as exc:
            log.error("temporary failure, message not accepted: %s", exc)
            return "451 4.3.0 Temporary failure storing the message, please retry"
        except Exception:  # anything of ours that escapes is temporary, never a bounce
            log.exception("unexpected failure, message not accepted")
            return "451 4.3.0 Temporary local error, please retry"
        if self.on_stored is not None:
            self.on_stored(result)
        return f"250 2.0.0 Stored as {result.outcome}"

    def _process(self, raw: bytes, mail_from: str) -> Result:
        with self.runtime.lock:
            return process(self.runtime, raw, "smtp", envelope_from=mail_from)


class Listener:
    """The SMTP listener, running its own event loop in a thread."""

    def __init__(
        self,
        runtime: Runtime,
        on_stored: Callable[[Result], None] | None = None,
        host: str | None = None,
        port: int | None = None,
    ) -> None:
        settings = runtime.config.smtp
        self.handler = IntakeHandler(runtime, on_stored)
        self.controller = Controller(
            self.handler,
            hostname=host or settings.host,
            port=settings.port if port is None else port,
            data_size_limit=settings.max_message_size,
            decode_data=False,
            server_hostname=runtime.config.service.domain,
            ready_timeout=10.0,
            # Generous command timeout for slow clients; aiosmtpd answers 552 itself above the size limit.
            timeout=300,
        )

    def start(self) -> None:
        self.controller.start()

    def stop(self) -> None:
        """Stop taking mail; let the messages being processed finish and get their answer first."""
        self.handler.drain(timeout=120)
        self.handler.worker.shutdown(wait=True)
        self.controller.stop()

    @property
    def address(self) -> tuple[str, int]:
        return self.controller.hostname, self.controller.port
