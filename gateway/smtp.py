"""The SMTP intake adapter: bytes in, `process`, and the outcome as an SMTP reply code."""

from __future__ import annotations

import asyncio
import logging
import queue
import re
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from gateway.addresses import PLAIN_ADDRESS
from gateway.committer import Committer
from gateway.pipeline import Item, Result, process_batch
from gateway.runtime import Runtime
from gateway.store import StorageUnavailable

log = logging.getLogger("gateway.smtp")


class IntakeHandler:
    """aiosmtpd handler: 250 only once the message and its case are committed, 451 on our failures."""

    def __init__(
        self,
        runtime: Runtime,
        on_stored: Callable[[Result], None] | None = None,
        committer: Committer | None = None,
    ) -> None:
        self.runtime = runtime
        self.on_stored = on_stored
        # With a committer the pipeline runs in its worker process; without, here under the lock.
        self.committer = committer
        # One worker: SQLite has one writer anyway, and the event loop stays free for I/O. It commits
        # whatever queued up during the previous commit in one transaction (group commit).
        self.waiting: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self.worker = threading.Thread(target=self._work, name="intake", daemon=True)
        self.worker.start()
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
        job = _Job(raw, mail_from, Future())
        self.waiting.put(job)
        try:
            result = await asyncio.wrap_future(job.done)
        except StorageUnavailable as exc:
            log.error("temporary failure, message not accepted: %s", exc)
            return "451 4.3.0 Temporary failure storing the message, please retry"
        except Exception:  # anything of ours that escapes is temporary, never a bounce
            log.exception("unexpected failure, message not accepted")
            return "451 4.3.0 Temporary local error, please retry"
        if self.on_stored is not None:
            self.on_stored(result)
        return f"250 2.0.0 Stored as {result.outcome}"

    def _work(self) -> None:
        while True:
            first = self.waiting.get()
            if first is None:
                return
            batch = [first]
            limit = 1 if self.committer is not None and self.committer.solo else MAX_BATCH
            while len(batch) < limit:
                try:
                    job = self.waiting.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    self.waiting.put(None)  # finish this batch, then stop
                    break
                batch.append(job)
            self._commit(batch)

    def _commit(self, batch: list[_Job]) -> None:
        items: list[Item] = [(j.raw, "smtp", j.mail_from) for j in batch]
        if self.committer is not None:
            self.committer.submit(items, lambda outcome: _resolve(batch, outcome))
            return
        try:
            with self.runtime.lock:
                outcome: list[Result] | BaseException = process_batch(self.runtime, items)
        except Exception as exc:
            outcome = exc
        _resolve(batch, outcome)

    def stop_worker(self) -> None:
        self.waiting.put(None)
        self.worker.join(timeout=120)


def _resolve(batch: list[_Job], outcome: list[Result] | BaseException) -> None:
    if isinstance(outcome, BaseException):  # every sender in the batch gets a temporary failure
        for job in batch:
            job.done.set_exception(outcome)
        return
    for job, result in zip(batch, outcome, strict=True):
        job.done.set_result(result)


@dataclass(frozen=True)
class _Job:
    raw: bytes
    mail_from: str
    done: Future[Result]


# Messages per transaction; bounds how long one commit holds the write lock.
MAX_BATCH = 64


# A plain <local@domain> path, as nearly every MTA sends it.
_PLAIN_PATH = re.compile(rf"<({PLAIN_ADDRESS})>(.*)", re.S)


class IntakeSMTP(SMTP):
    """aiosmtpd's session, with a fast path for the MAIL FROM and RCPT TO paths of ordinary mail.

    aiosmtpd parses every path with the email package's header parser and defines a typing
    Protocol class on each call: about a tenth of the listener's CPU. A plain path gives the
    same answer from one regex; anything else (quoted local parts, comments, <>, address
    literals, leading spaces) still goes to aiosmtpd (tests/test_intake_details.py compares them).
    """

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        plain = _PLAIN_PATH.fullmatch(arg)
        if plain is None:
            return super()._getaddr(arg)
        # After ">" the header parser drops a run of white space that starts with a blank, and
        # a comment there (left to it).
        rest = plain.group(2)
        rest = rest.lstrip() if rest[:1] in (" ", "\t") else rest
        if rest.startswith("("):
            return super()._getaddr(arg)
        address = plain.group(1)
        if self.local_part_limit and len(address.rpartition("@")[0]) > self.local_part_limit:
            return None, None
        return address, rest


class _Controller(Controller):
    def factory(self) -> SMTP:
        return IntakeSMTP(self.handler, **self.SMTP_kwargs)


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
        self.committer = Committer(runtime) if settings.intake_process else None
        self.handler = IntakeHandler(runtime, on_stored, self.committer)
        self.controller = _Controller(
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
        if self.committer is not None:
            self.committer.start()
        self.controller.start()

    def stop(self) -> None:
        """Stop taking mail; let the messages being processed finish and get their answer first."""
        self.handler.drain(timeout=120)
        self.handler.stop_worker()
        self.controller.stop()
        if self.committer is not None:
            self.committer.stop()

    @property
    def address(self) -> tuple[str, int]:
        return self.controller.hostname, self.controller.port
