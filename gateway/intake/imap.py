"""IMAP intake: `gateway fetch` drains the mailbox once (cron); FetchWorker keeps at it in serve."""

from __future__ import annotations

import logging
import ssl
import sys
import threading
from email.parser import BytesHeaderParser
from email.policy import compat32, default

from imapclient.exceptions import LoginError

from gateway.core.config import Config, ImapConfig
from gateway.intake.imap_drain import Drain, OnStored, Progress
from gateway.intake.imap_mailbox import CONNECTION_ERRORS, IDLE_MAX_SECONDS, Mailbox, mailbox_name
from gateway.intake.mailbox_lock import MailboxLock
from gateway.runtime import Runtime
from gateway.store.database import StorageUnavailable

log = logging.getLogger("gateway.imap")

EX_OK = 0
EX_TEMPFAIL = 75
EX_CONFIG = 78


class Backoff:
    """Exponential delays, capped: 1, 2, 4 … up to `ceiling` seconds, back to the start on reset."""

    def __init__(self, initial: float, ceiling: float) -> None:
        self.initial = initial
        self.ceiling = ceiling
        self.failures = 0

    def next(self) -> float:
        delay = min(self.initial * 2.0**self.failures, self.ceiling)
        self.failures += 1
        return delay

    def reset(self) -> None:
        self.failures = 0


class FetchWorker(threading.Thread):
    """`gateway serve`'s fetcher: drain, then IDLE (or sleep poll_seconds), reconnecting on loss."""

    def __init__(
        self,
        config: Config,
        on_stored: OnStored | None = None,
        stop: threading.Event | None = None,
        retry_initial: float = 1.0,
        retry_max: float = 300.0,
    ) -> None:
        super().__init__(name="imap-fetch", daemon=True)
        if config.imap is None:
            raise ValueError("FetchWorker needs an [imap] section")
        self.config = config
        self.imap: ImapConfig = config.imap
        self.on_stored = on_stored
        self.stop = stop or threading.Event()
        self.mailbox = mailbox_name(self.imap)
        self.reconnect = Backoff(retry_initial, retry_max)
        self.storage_retry = Backoff(retry_initial, retry_max)
        # Set while waiting for new mail (in IDLE or between polls), clear while draining.
        self.waiting = threading.Event()
        self.drains = 0

    def run(self) -> None:
        runtime: Runtime | None = None
        try:
            while not self.stop.is_set():
                try:
                    runtime = runtime or Runtime(self.config)
                    self._session(runtime)
                except StorageUnavailable as exc:
                    self._pause(f"store unavailable: {exc}", "retrying")
                except CONNECTION_ERRORS as exc:
                    self._pause(f"connection to {self.imap.host}:{self.imap.port} lost: {exc}")
                except Exception:  # a bug must not end intake silently: log it and start over
                    log.exception("imap: fetcher failed")
                    self._pause("unexpected error", "retrying")
        finally:
            self.waiting.clear()
            if runtime is not None:
                runtime.close()

    def _pause(self, reason: str, then: str = "reconnecting") -> None:
        self.waiting.clear()
        delay = self.reconnect.next()
        log.warning("imap: %s (%s); %s in %.1fs", reason, self.mailbox, then, delay)
        self.stop.wait(delay)

    def _session(self, runtime: Runtime) -> None:
        try:
            password = self.imap.secret()
        except OSError as exc:
            self._pause(f"cannot read imap.password_file {self.imap.password_file}: {exc}", "retrying")
            return
        mailbox = Mailbox.open(self.imap, password)
        try:
            if self.reconnect.failures:
                log.info("imap: reconnected to %s", self.mailbox)
            looked_again = False
            while not self.stop.is_set():
                if not self._drain(runtime, mailbox):
                    continue
                self.reconnect.reset()
                if not looked_again and mailbox.pending():
                    # Mail that came during the pass may have been announced to an earlier command
                    # (MOVE, EXPUNGE); IDLE would not repeat that, so take it now. Once per cycle:
                    # a message whose move keeps failing must not make this loop spin.
                    looked_again = True
                    continue
                looked_again = False
                self.waiting.set()
                if self.imap.idle and mailbox.can_idle:
                    mailbox.wait_idle(self.stop, min(self.imap.poll_seconds, IDLE_MAX_SECONDS))
                else:
                    self.stop.wait(self.imap.poll_seconds)
                self.waiting.clear()
        except BaseException:
            mailbox.abandon()
            raise
        mailbox.close()

    def _drain(self, runtime: Runtime, mailbox: Mailbox) -> bool:
        """One pass under the mailbox lock; False after a temporary store failure (already waited)."""
        lock = MailboxLock(self.config.storage.path, self.mailbox)
        if not lock.try_acquire():
            log.info("imap: another fetch is running for %s; waiting for it", self.mailbox)
            if not lock.acquire(self.stop):
                return True
        try:
            report = Drain(runtime, mailbox, on_stored=self.on_stored, stop=self.stop).run()
        finally:
            lock.release()
        self.drains += 1
        if not report.deferred:
            self.storage_retry.reset()
            return True
        delay = min(self.storage_retry.next(), self.imap.poll_seconds)
        log.warning("imap: %s left in place, retrying in %.1fs", self.mailbox, delay)
        self.stop.wait(delay)
        return False


def fetch_once(config: Config, dry_run: bool = False) -> int:
    """`gateway fetch`: drain the mailbox once; 0 drained (or someone else is), 75 try again later."""
    imap = config.imap
    if imap is None:
        print("config error: imap: no [imap] section in the config", file=sys.stderr)
        return EX_CONFIG
    try:
        password = imap.secret()
    except OSError as exc:
        print(f"config error: imap.password_file: cannot read {imap.password_file} ({exc})", file=sys.stderr)
        return EX_CONFIG
    if dry_run:
        return _dry_run(imap, password)
    name = mailbox_name(imap)
    lock = MailboxLock(config.storage.path, name)
    try:
        if not lock.try_acquire():
            print(f"another fetch is running for {name}")
            return EX_OK
        return _drain_once(config, imap, password)
    except StorageUnavailable as exc:
        return _temporary(f"store unavailable: {exc}")
    finally:
        lock.release()


def _temporary(reason: str) -> int:
    print(f"temporary failure: {reason}", file=sys.stderr)
    return EX_TEMPFAIL


def _open(imap: ImapConfig, password: str) -> Mailbox | str:
    """A logged-in mailbox, or the one-line reason we could not get one."""
    try:
        return Mailbox.open(imap, password)
    except LoginError as exc:
        return f"imap login failed for {imap.username} at {imap.host}: {exc}"
    except ssl.SSLCertVerificationError as exc:
        # Not a network fault: it stays until someone trusts the server's certificate.
        hint = "" if imap.ca_file else " (an internal CA? name its PEM file in imap.ca_file)"
        return f"imap server {imap.host}:{imap.port} has an untrusted certificate: {exc.verify_message}{hint}"
    except CONNECTION_ERRORS as exc:
        return f"cannot reach imap server {imap.host}:{imap.port}: {exc}"


def _drain_once(config: Config, imap: ImapConfig, password: str) -> int:
    runtime = Runtime(config)
    try:
        mailbox = _open(imap, password)
        if isinstance(mailbox, str):
            return _temporary(mailbox)
        try:
            report = Drain(runtime, mailbox, progress=Progress(sys.stderr)).run()
        except CONNECTION_ERRORS as exc:
            mailbox.abandon()
            return _temporary(f"imap connection to {imap.host} lost: {exc}")
        except BaseException:
            mailbox.abandon()
            raise
        mailbox.close()
        if report.deferred:
            left = report.total - report.done
            reason = report.deferred
            return _temporary(f"store unavailable, {left} message(s) left in {mailbox.name}: {reason}")
        _flush_outbox(config, runtime)
        return EX_OK
    finally:
        runtime.close()


def _flush_outbox(config: Config, runtime: Runtime) -> None:
    """Send the receipts now, so a cron-only install answers without `gateway serve`."""
    from gateway.changes import notices as change_notices

    try:
        report = change_notices.deliverer(config, runtime.store).flush()
    except StorageUnavailable as exc:
        log.error("imap: outbox not flushed, store unavailable: %s", exc)
        return
    if report.sent or report.deferred or report.failed:
        log.info("outbox %s", report)


def _dry_run(imap: ImapConfig, password: str) -> int:
    """List what a fetch would take (UID, size, Date, From, Subject); read-only, no \\Seen."""
    mailbox = _open(imap, password)
    if isinstance(mailbox, str):
        return _temporary(mailbox)
    try:
        mailbox.select(readonly=True)
        uids = mailbox.pending()
        print(f"{'UID':>7} {'SIZE':>9}  {'DATE':<31}  {'FROM':<40}  SUBJECT")
        size = max(1, imap.batch_size)
        for start in range(0, len(uids), size):
            for uid, (length, header_block) in sorted(mailbox.summaries(uids[start : start + size]).items()):
                date, sender, subject = _summary(header_block)
                print(f"{uid:>7} {length:>9}  {date[:31]:<31}  {sender:<40}  {subject}")
    except CONNECTION_ERRORS as exc:
        mailbox.abandon()
        return _temporary(f"imap connection to {imap.host} lost: {exc}")
    mailbox.close()
    print(f"{len(uids)} message(s) would be fetched from {mailbox.name}; dry run, nothing processed or moved")
    return EX_OK


def _summary(header_block: bytes) -> tuple[str, str, str]:
    """Date, From and Subject decoded for a person; a header too broken to decode is shown raw."""
    decoded = BytesHeaderParser(policy=default).parsebytes(header_block)
    raw = BytesHeaderParser(policy=compat32).parsebytes(header_block)
    values = []
    for name in ("Date", "From", "Subject"):
        try:
            text = str(decoded.get(name, ""))
        except Exception:
            text = str(raw.get(name, ""))
        values.append(" ".join(text.split()))
    return values[0], values[1], values[2]
