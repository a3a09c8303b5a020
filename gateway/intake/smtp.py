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
from aiosmtpd.smtp import MISSING, SMTP, Envelope, Session, syntax

from gateway.core.addresses import PLAIN_ADDRESS
from gateway.flow.context import Arrival, Result
from gateway.intake.committer import Committer
from gateway.intake.connections import ByteBudget, ConnectionCaps, GuardedSession, RateLimitedErrors
from gateway.pipeline.process import Item, process_batch
from gateway.runtime import Runtime
from gateway.store.database import StorageUnavailable

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
        settings = runtime.config.smtp
        self.connections = ConnectionCaps(settings.max_connections, settings.max_connections_per_client)
        self.budget = ByteBudget(settings.max_bytes_in_flight)

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
            peer = session.peer[0] if isinstance(session.peer, tuple) else str(session.peer or "")
            return await self._data(envelope, Arrival(peer, tuple(envelope.rcpt_tos)))
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

    async def _data(self, envelope: Envelope, arrival: Arrival) -> str:
        raw = envelope.original_content or b""
        mail_from = envelope.mail_from or ""
        job = _Job(raw, mail_from, arrival, Future())
        self.waiting.put(job)
        try:
            result = await asyncio.wrap_future(job.done)
        except StorageUnavailable as exc:
            log.error("temporary failure, message not accepted: %s", exc)
            return "451 4.3.0 Temporary failure storing the message, please retry"
        except Exception:  # anything of ours that escapes is temporary, never a bounce
            log.exception("unexpected failure, message not accepted")
            return TEMPORARY_ERROR
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
        items: list[Item] = [(j.raw, "smtp", j.mail_from, j.arrival) for j in batch]
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
    for index, job in enumerate(batch):
        if job.done.cancelled():  # the client went away meanwhile; the message is stored all the same
            continue
        if isinstance(outcome, BaseException):  # every sender in the batch gets a temporary failure
            job.done.set_exception(outcome)
        else:
            job.done.set_result(outcome[index])


@dataclass(frozen=True)
class _Job:
    raw: bytes
    mail_from: str
    arrival: Arrival
    done: Future[Result]


# Messages per transaction; bounds how long one commit holds the write lock.
MAX_BATCH = 64


# A plain <local@domain> path, as nearly every MTA sends it.
_PLAIN_PATH = re.compile(rf"<({PLAIN_ADDRESS})>(.*)", re.S)


class IntakeSMTP(GuardedSession):
    """aiosmtpd's session, with a bulk DATA reader and a fast path for plain MAIL FROM and RCPT TO.

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

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        """DATA read in chunks that end at a line ending in '.', not line by line.

        aiosmtpd awaits every line of the message and keeps its reader's buffer at one line, so
        the socket is paused and resumed every 2 KB: about half of the listener's CPU went there.
        The replies, the limits (552 over the size, 500 for a line over 1001 bytes) and the
        un-stuffed bytes are aiosmtpd's (tests/test_intake_details.py sends the same streams to
        both). One difference: past the size limit the answer is 552 even where aiosmtpd, having
        met an over-long line first, answers 500; both are refusals and nothing is kept. Decoded
        text and the old process_message API are left to aiosmtpd.
        """
        if self._decode_data or "DATA" not in self._handle_hooks:
            await super().smtp_DATA(arg)
            return
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        budget = self.budget
        if budget.full():  # answered before 354, so the client sends nothing
            log.warning("message bytes in flight at smtp.max_bytes_in_flight: DATA answered 451")
            await self.push(NO_ROOM)
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        self.held = 0
        try:
            received = await self._receive()
        except asyncio.CancelledError:  # aiosmtpd cancels us when the client goes away
            log.info("connection lost during DATA")
            self._writer.close()
            raise
        except asyncio.IncompleteReadError:  # the end of the stream, should it come first
            log.info("connection closed during DATA")
            self._writer.close()
            return
        except Exception:  # the rest of the message is still on the wire: answer, then hang up
            log.exception("unexpected failure reading DATA, message not accepted")
            self._set_post_data_state()  # type: ignore[no-untyped-call]
            await self.push(TEMPORARY_ERROR)
            self._writer.close()
            return
        try:
            reply = received if isinstance(received, str) else await self._reply_to(received)
        except Exception:  # anything of ours that escapes is temporary, never a bounce
            log.exception("unexpected failure in DATA, message not accepted")
            reply = TEMPORARY_ERROR
        finally:
            budget.give_back(self.held)  # stored or refused: the bytes are no longer ours to keep
            self.held = 0
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        await self.push(reply)

    async def _reply_to(self, received: bytearray) -> str:
        assert self.envelope is not None
        if (content := unstuffed(received, self.line_length_limit)) is None:
            return "500 Line too long (see RFC5321 4.5.3.1.6)"
        self.envelope.content = self.envelope.original_content = content
        status = await self._call_handler_hook("DATA")
        return "250 OK" if status is MISSING else str(status)

    async def handle_exception(self, error: Exception) -> str:
        """Any other command that fails inside us: a temporary answer, where aiosmtpd says 500."""
        log.error("unexpected failure in an SMTP command: %r", error, exc_info=error)
        return TEMPORARY_ERROR

    held = 0  # bytes of this DATA counted in the listener's ByteBudget

    async def _receive(self) -> bytearray | str:
        """The bytes up to and including the lone dot, or the refusal (then nothing is kept).

        Past the size limit the answer is 552; past smtp.max_bytes_in_flight it is 451.
        """
        reader, limit = self._reader, self.data_size_limit or 0  # 0: no limit
        budget = self.budget
        data = bytearray()  # grown in place: a list of chunks joined at the end held the message twice
        over = False  # past the size limit: refused in the end, so nothing more is kept
        no_room = False  # past the budget: asked to retry in the end, nothing more is kept
        size, tail = 0, b"\r\n"  # the DATA line's end: a lone dot first thing is an empty message
        line_limit = getattr(reader, "_limit", None)
        if line_limit is not None:  # a private attribute; without it reading is merely slower
            reader._limit = DATA_BUFFER  # type: ignore[attr-defined]
        try:
            while tail != b"\r\n.\r\n":
                try:
                    chunk = await reader.readuntil(b".\r\n")
                except asyncio.LimitOverrunError as exc:  # no line ending in '.' yet: take what came
                    chunk = await reader.read(exc.consumed)
                if not chunk:
                    raise asyncio.IncompleteReadError(b"", None)
                self._reset_timeout()  # the idle timeout counts from the last chunk, not the command
                size += len(chunk)
                tail = (tail + chunk[-5:])[-5:]
                over = 0 < limit < size - 3  # size only grows; the lone dot does not count
                no_room = no_room or not budget.take(len(chunk))
                if over or no_room:
                    data.clear()
                    budget.give_back(self.held)
                    self.held = 0
                else:
                    self.held += len(chunk)
                    data += chunk
        except BaseException:
            # Cut off (hung up, idle, our fault): kept counted, the bytes would starve all later DATA.
            budget.give_back(self.held)
            self.held = 0
            raise
        finally:
            if line_limit is not None:
                reader._limit = line_limit  # type: ignore[attr-defined]
        if over:
            return "552 Error: Too much mail data"
        if no_room:
            log.warning("message bytes in flight passed smtp.max_bytes_in_flight: answered 451")
            return NO_ROOM
        return data


# The answer to a failure of ours: the client keeps the message and tries again later.
TEMPORARY_ERROR = "451 4.3.0 Temporary local error, please retry"

# The answer while the listener holds smtp.max_bytes_in_flight of other messages.
NO_ROOM = "451 4.3.1 Too much mail in progress, please retry later"

# How much the reader may buffer during DATA before it pauses the socket (twice this, in fact).
DATA_BUFFER = 1 << 18


def unstuffed(received: bytearray, line_limit: int) -> bytes | None:
    """The message from DATA's bytes (lone dot included): dots un-stuffed, None if a line is too long.

    `received` is used up. Big messages are checked a window at a time and copied once at most
    twice (un-stuffing is skipped where no line starts with a dot, as in base64), so a 24 MB
    message no longer costs five copies and a list of 300,000 lines.
    """
    del received[-3:]
    if _longest_line(received) + 2 > line_limit:
        return None
    if received[:1] == b".":
        del received[:1]
    body = bytes(received)
    received.clear()
    return body.replace(b"\r\n.", b"\r\n") if b"\r\n." in body else body


def _longest_line(data: bytearray, window: int = 1 << 20) -> int:
    """The longest run between CRLFs, looked for in windows that overlap by a line's limit.

    A window's pieces at its edges may be parts of longer lines; the overlap means every line
    longer than `slack` shows at least `slack` bytes whole in some window, so the verdict holds.
    """
    if len(data) <= window:
        return max(map(len, data.split(b"\r\n")))
    slack, longest = 4096, 0
    for start in range(0, len(data), window):
        pieces = data[start : start + window + slack].split(b"\r\n")
        if start + window + slack < len(data) and len(pieces[-1]) <= slack:
            pieces.pop()  # cut by the segment's end (maybe between CR and LF): the next window has it
        longest = max(longest, max(map(len, pieces), default=0))
        if longest > slack:
            return longest
    return longest


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
            # Per command and per chunk of DATA; aiosmtpd answers 552 itself above the size limit.
            timeout=settings.idle_timeout_seconds,
        )
        # Out of file descriptors asyncio reports every failed accept: a line a minute is enough.
        self.controller.loop.set_exception_handler(RateLimitedErrors())

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
