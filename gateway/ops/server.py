"""`gateway serve`: the SMTP listener, IMAP fetcher and outbox sender process, until SIGTERM."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

from gateway.cases.casework import close_resolved
from gateway.core import memory
from gateway.core.config import Config
from gateway.flow.context import Result
from gateway.incidents.announce import notify_due
from gateway.intake.smtp import Listener
from gateway.ops.delivery_worker import SenderProcess
from gateway.ops.lock import LockHeld, ServeLock
from gateway.ops.metrics import MetricsEndpoint
from gateway.runtime import Runtime
from gateway.store.database import StorageUnavailable

log = logging.getLogger("gateway.server")
HOUSEKEEPING_SECONDS = 3600.0
# How often monitoring incidents are checked for a notice that fell due: well inside
# monitoring.notify_after_minutes, and a handful of indexed queries each time.
NOTICE_SECONDS = 30.0


class Server:
    """Everything `gateway serve` runs; stop() is the graceful path SIGTERM takes."""

    def __init__(self, config: Config, port: int | None = None) -> None:
        memory.map_big_buffers()
        self.runtime = Runtime(config)
        self.outbox = SenderProcess(config)
        self.listener = Listener(self.runtime, on_stored=self._stored, port=port)
        self.stopped = threading.Event()
        self.fetcher: threading.Thread | None = None
        self.serve_lock = ServeLock(config.storage.path)
        self.metrics: MetricsEndpoint | None = None
        self.notices_wake = threading.Event()
        self.notices: threading.Thread | None = None
        # Runs of the incident notice timer begun and finished: a caller that woke it can wait
        # for a run that began after its wake-up (tests, status).
        self.notice_starts = 0
        self.notice_runs = 0

    def _stored(self, result: Result) -> None:
        if result.replies:
            self.outbox.wake()

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
            from gateway.intake.imap import FetchWorker

            self.fetcher = FetchWorker(self.runtime.config, on_stored=self._stored, stop=self.stopped)
            self.fetcher.start()
        self.housekeeping = threading.Thread(target=self._housekeeping, name="housekeeping", daemon=True)
        self.housekeeping.start()
        self.notices = threading.Thread(target=self._incident_notices, name="incident-notices", daemon=True)
        self.notices.start()
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

    def _incident_notices(self) -> None:
        """Every NOTICE_SECONDS (or when woken), send the monitoring incident notices that fell due."""
        while not self.stopped.is_set():
            self.notices_wake.wait(NOTICE_SECONDS)
            self.notices_wake.clear()
            if self.stopped.is_set():
                break
            self.notice_starts += 1
            try:
                with self.runtime.lock:
                    done = notify_due(self.runtime)
                for line in done:
                    log.info("incident notices: %s", line)
                if done:
                    self.outbox.wake()
            except StorageUnavailable as exc:
                log.error("incident notices skipped, store unavailable: %s", exc)
            except Exception:  # one bad incident must not stop the timer for all the others
                log.exception("incident notices failed; retried at the next tick")
            self.notice_runs += 1

    def wake_notices(self) -> None:
        """Run the incident notice timer now rather than at its next tick."""
        self.notices_wake.set()

    def stop(self) -> None:
        log.info("stopping: no new mail, finishing what is in flight")
        self.stopped.set()
        self.notices_wake.set()
        if self.notices is not None:
            self.notices.join(timeout=60)
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
