"""`gateway serve`: the SMTP listener and the outbox sender, side by side, until SIGTERM."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

from gateway.casework import close_resolved
from gateway.config import Config
from gateway.lock import LockHeld, ServeLock
from gateway.metrics import MetricsEndpoint
from gateway.outbox import Deliverer, retry_now
from gateway.pipeline import Result
from gateway.runtime import Runtime
from gateway.smtp import Listener
from gateway.store import StorageUnavailable

log = logging.getLogger("gateway.server")
HOUSEKEEPING_SECONDS = 3600.0


class OutboxWorker(threading.Thread):
    """Delivers the outbox whenever new mail is queued, and retries deferred mail when due."""

    def __init__(self, config: Config, idle_seconds: float = 5.0) -> None:
        super().__init__(name="outbox", daemon=True)
        self.config = config
        self.idle_seconds = idle_seconds
        self.wake = threading.Event()
        self.stopping = threading.Event()

    def run(self) -> None:
        # Its own connection: the sender never waits on the intake's transaction lock.
        store = self.config.storage.open()
        deliverer = Deliverer(self.config, store)
        # After a restart the relay may be back: give deferred mail one immediate try.
        waiting = retry_now(store)
        if waiting:
            log.info("outbox: %d queued message(s) made due after start", waiting)
        try:
            while not self.stopping.is_set():
                self.wake.clear()
                try:
                    report = deliverer.flush(paused=self.stopping.is_set)
                    if report.sent or report.failed:
                        log.info("outbox %s", report)
                except StorageUnavailable as exc:
                    log.error("outbox paused, store unavailable: %s", exc)
                self.wake.wait(self.idle_seconds)
        finally:
            store.close()

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()
        self.join(timeout=60)


class Server:
    """Everything `gateway serve` runs; stop() is the graceful path SIGTERM takes."""

    def __init__(self, config: Config, port: int | None = None) -> None:
        self.runtime = Runtime(config)
        self.outbox = OutboxWorker(config)
        self.listener = Listener(self.runtime, on_stored=self._stored, port=port)
        self.stopped = threading.Event()
        self.fetcher: threading.Thread | None = None
        self.serve_lock = ServeLock(config.storage.path)
        self.metrics: MetricsEndpoint | None = None

    def _stored(self, result: Result) -> None:
        if result.replies:
            self.outbox.wake.set()

    def start(self) -> None:
        try:
            self.serve_lock.acquire("gateway serve")
        except LockHeld as exc:
            raise StorageUnavailable(f"another gateway serve uses this store: {exc}") from None
        if self.runtime.config.metrics.port:
            self.metrics = MetricsEndpoint(self.runtime.config)
        self.outbox.start()
        self.listener.start()
        if self.runtime.config.imap is not None:
            from gateway.imap import FetchWorker

            self.fetcher = FetchWorker(self.runtime.config, on_stored=self._stored, stop=self.stopped)
            self.fetcher.start()
        self.housekeeping = threading.Thread(target=self._housekeeping, name="housekeeping", daemon=True)
        self.housekeeping.start()
        host, port = self.listener.address
        log.info("listening on %s:%s for %s", host, port, self.runtime.config.service.address)

    def _housekeeping(self) -> None:
        """Hourly chores that need no cron line: resolved cases close after service.autoclose_days."""
        while not self.stopped.wait(HOUSEKEEPING_SECONDS):
            try:
                with self.runtime.lock:
                    closed = close_resolved(self.runtime)
                if closed:
                    log.info("closed %d resolved case(s): %s", len(closed), closed)
            except StorageUnavailable as exc:
                log.error("housekeeping skipped, store unavailable: %s", exc)

    def stop(self) -> None:
        log.info("stopping: no new mail, finishing what is in flight")
        self.stopped.set()
        self.listener.stop()
        if self.fetcher is not None:
            self.fetcher.join(timeout=60)
        self.outbox.stop()
        self.runtime.close()
        if self.metrics is not None:
            self.metrics.stop()
        self.serve_lock.release()

    def run_until_signalled(self) -> None:
        def _handle(signum: int, frame: FrameType | None) -> None:
            self.stopped.set()

        signal.signal(signal.SIGTERM, _handle)
        signal.signal(signal.SIGINT, _handle)
        self.start()
        print(f"gateway listening on {self.listener.address[0]}:{self.listener.address[1]}", flush=True)
        self.stopped.wait()
        self.stop()
