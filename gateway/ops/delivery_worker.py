"""The outbox sender of `gateway serve`, in a process of its own so delivery runs beside intake."""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import subprocess
import sys
import threading
from types import FrameType

from gateway.changes import notices as change_notices
from gateway.core import child as child_process
from gateway.core import logs
from gateway.core.config import Config
from gateway.outbox.queue import retry_now
from gateway.store.database import StorageUnavailable, open_store

log = logging.getLogger("gateway.sender")

# How long a restart of a dead sender waits at most; it starts at one second and doubles.
RESTART_MAX_SECONDS = 30.0


class SenderProcess:
    """Starts, wakes, supervises and stops the child that delivers the outbox.

    The child's stdin is the only channel. It first carries the Config (gateway/child.py), then one
    byte per wake-up. The write end is non-blocking: a full pipe means wake-ups are already pending. When
    we close it, or die, the child reads end-of-file, finishes the mail in hand and exits.
    """

    def __init__(self, config: Config, idle_seconds: float = 5.0) -> None:
        self.config = config
        self.idle_seconds = idle_seconds
        self.child: subprocess.Popen[bytes] | None = None
        self.stopping = threading.Event()
        self.supervisor = threading.Thread(target=self._supervise, name="sender-supervisor", daemon=True)
        self.lock = threading.Lock()  # wake() and a restart never use a half-replaced child

    def start(self) -> None:
        self._spawn()
        self.supervisor.start()

    def _spawn(self) -> None:
        child = child_process.spawn("gateway.ops.delivery_worker", self.config, str(self.idle_seconds))
        assert child.stdin is not None
        os.set_blocking(child.stdin.fileno(), False)
        with self.lock:
            self.child = child

    def wake(self) -> None:
        """Tell the child there is new mail; never blocks the caller (the SMTP event loop)."""
        with self.lock:
            child = self.child
            if child is None or child.stdin is None or child.stdin.closed:
                return
            with contextlib.suppress(BlockingIOError, BrokenPipeError):
                os.write(child.stdin.fileno(), b"w")

    def _supervise(self) -> None:
        """Restart a sender that died (the outbox is durable, so nothing queued is lost)."""
        delay = 1.0
        while not self.stopping.is_set():
            child = self.child
            assert child is not None
            status = child.wait()
            if self.stopping.is_set():
                return
            log.error("outbox sender exited with status %s; restarting in %.0f s", status, delay)
            if self.stopping.wait(delay):
                return
            delay = min(delay * 2, RESTART_MAX_SECONDS)
            with self.lock:
                if child.stdin is not None:
                    with contextlib.suppress(OSError):
                        child.stdin.close()
            self._spawn()

    @property
    def pid(self) -> int | None:
        return self.child.pid if self.child is not None else None

    def stop(self, timeout: float = 60.0) -> None:
        """End-of-file to the child: it finishes the mail it is sending, records it and exits."""
        self.stopping.set()
        with self.lock:
            child = self.child
            if child is None:
                return
            if child.stdin is not None:  # under the lock: wake() must never write to a closed fd
                with contextlib.suppress(OSError):
                    child.stdin.close()
        if not child_process.stop(child, timeout):
            log.error("outbox sender did not stop within %.0f s; killed it", timeout)
        if self.supervisor.is_alive():
            self.supervisor.join(timeout=5)


class _Channel:
    """The child's end of the pipe: wake-ups and the parent's end-of-file."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.closed = False

    def wait(self, seconds: float) -> None:
        """Until a wake-up, end-of-file or `seconds`; consumes every wake-up pending."""
        if self.closed:
            return
        ready, _, _ = select.select([self.fd], [], [], seconds)
        if ready:
            try:
                data = os.read(self.fd, 65536)
            except InterruptedError:  # a signal; the loop looks at `closed` again
                return
            self.closed = not data

    def poll(self) -> bool:
        """True once the parent closed the pipe or died: the caller stops after the mail in hand."""
        if not self.closed:
            self.wait(0)
        return self.closed


def main(idle_seconds: float) -> int:
    config = child_process.start_child()
    channel = _Channel(sys.stdin.fileno())
    logs.setup(config.log)

    def _stop(signum: int, frame: FrameType | None) -> None:
        # systemd and Ctrl-C signal the whole group: finish the mail in hand, like end-of-file.
        channel.closed = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    store = open_store(config.storage)
    deliverer = change_notices.deliverer(config, store)
    try:
        # After a restart the relay may be back: give deferred mail one immediate try.
        waiting = retry_now(store)
        if waiting:
            log.info("outbox: %d queued message(s) made due after start", waiting)
        while not channel.closed:
            try:
                report = deliverer.flush(paused=channel.poll)
                if report.sent or report.failed:
                    log.info("outbox %s", report)
            except StorageUnavailable as exc:
                log.error("outbox paused, store unavailable: %s", exc)
            channel.wait(idle_seconds)
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(float(sys.argv[1])))
