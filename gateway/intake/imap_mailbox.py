"""The IMAP side of intake: log in, list, fetch with BODY.PEEK[], file into folders, wait with IDLE."""

from __future__ import annotations

import contextlib
import logging
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError

from gateway.core.config import ImapConfig

log = logging.getLogger("gateway.imap")
# imapclient logs every socket shutdown at INFO; we report failures ourselves, once, and a cron
# line should stay quiet. `gateway -v` (root at DEBUG before this import) keeps its detail.
if not logging.getLogger().isEnabledFor(logging.DEBUG):
    logging.getLogger("imapclient").setLevel(logging.WARNING)

# Everything that means "the server or the connection failed": reconnect, never stall.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (IMAPClientError, OSError)
# Servers drop IDLE after 30 minutes (RFC 2177); re-issue it before that.
IDLE_MAX_SECONDS = 29 * 60
# How often an IDLE wait looks at the stop flag.
IDLE_STEP_SECONDS = 0.5
# A batch's bodies are fetched in chunks of at most this many bytes, so memory stays bounded.
FETCH_BYTES = 32 * 1024 * 1024
DELETED = b"\\Deleted"


def mailbox_name(imap: ImapConfig) -> str:
    """How logs, locks and imap_seen name the mailbox: `user@host/folder`."""
    return f"{imap.username}@{imap.host}/{imap.folder}"


class Mailbox:
    """One logged-in IMAP session on the configured account; every socket call has a timeout."""

    def __init__(self, client: Any, imap: ImapConfig) -> None:
        self.client = client
        self.imap = imap
        self.name = mailbox_name(imap)
        capabilities = set(client.capabilities())  # post-login: servers add MOVE etc. after auth
        self.can_move = b"MOVE" in capabilities
        self.can_uid_expunge = b"UIDPLUS" in capabilities
        self.can_idle = b"IDLE" in capabilities
        self._folders_ready = False
        if not self.can_move:
            how = "COPY, \\Deleted and UID EXPUNGE" if self.can_uid_expunge else "COPY and \\Deleted only"
            log.info("imap: %s has no MOVE; filing with %s", imap.host, how)

    @classmethod
    def open(cls, imap: ImapConfig, password: str) -> Mailbox:
        """Connect as configured (implicit TLS, STARTTLS or plain on loopback) and log in."""
        # The system's CAs, or the operator's own (imap.ca_file) for a server with an internal CA.
        cafile = imap.ca_file or None
        context = ssl.create_default_context(cafile=cafile) if imap.ssl != "none" else None
        client = IMAPClient(
            imap.host,
            port=imap.port,
            ssl=imap.ssl == "implicit",
            ssl_context=context,
            timeout=imap.timeout,
        )
        try:
            if imap.ssl == "starttls":
                client.starttls(context)
            client.login(imap.username, password)
            return cls(client, imap)
        except BaseException:
            # A failed STARTTLS handshake leaves the socket closed: keep its error, not shutdown's.
            with contextlib.suppress(OSError):
                client.shutdown()
            raise

    def close(self) -> None:
        """Log out politely; a connection that is already gone is just closed."""
        try:
            self.client.logout()
        except Exception:
            self.abandon()

    def abandon(self) -> None:
        """Close the socket without LOGOUT: after a failure, waiting for an answer could stall."""
        try:
            self.client.shutdown()
        except Exception as exc:
            log.debug("imap: closing %s: %s", self.name, exc)

    def select(self, readonly: bool = False) -> int:
        """Open the intake folder; returns its UIDVALIDITY."""
        answer = self.client.select_folder(self.imap.folder, readonly=readonly)
        return int(answer[b"UIDVALIDITY"])

    def pending(self) -> list[int]:
        """UIDs still to take, oldest first; \\Deleted ones were already copied away by us."""
        return sorted(int(uid) for uid in self.client.search(["UNDELETED"]))

    def ensure_folders(self) -> None:
        if self._folders_ready:
            return
        for folder in (self.imap.processed_folder, self.imap.failed_folder):
            if self.client.folder_exists(folder):
                continue
            try:
                self.client.create_folder(folder)
                log.info("imap: created folder %s", folder)
            except IMAPClientError:
                if not self.client.folder_exists(folder):  # someone else may have just made it
                    raise
        self._folders_ready = True

    def sizes(self, uids: list[int]) -> dict[int, int]:
        answer = self.client.fetch(uids, ["RFC822.SIZE"])
        return {int(uid): int(data[b"RFC822.SIZE"]) for uid, data in answer.items()}

    def bodies(self, uids: list[int]) -> dict[int, bytes]:
        """Exact message bytes; BODY.PEEK[] so fetching never sets \\Seen."""
        answer = self.client.fetch(uids, ["BODY.PEEK[]"])
        return {int(uid): bytes(data[b"BODY[]"]) for uid, data in answer.items()}

    def summaries(self, uids: list[int]) -> dict[int, tuple[int, bytes]]:
        """{uid: (size, From/Subject/Date header block)} for a dry run, still without \\Seen."""
        wanted = "BODY.PEEK[HEADER.FIELDS (FROM SUBJECT DATE)]"
        answer = self.client.fetch(uids, ["RFC822.SIZE", wanted])
        key = b"BODY[HEADER.FIELDS (FROM SUBJECT DATE)]"
        return {
            int(uid): (int(data[b"RFC822.SIZE"]), bytes(data.get(key) or b"")) for uid, data in answer.items()
        }

    def file(self, uids: list[int], folder: str) -> None:
        """Move messages out of the intake folder, without ever running a plain EXPUNGE."""
        if not uids:
            return
        if self.can_move:
            self.client.move(uids, folder)
            return
        self.client.copy(uids, folder)  # raises on failure, so nothing is flagged or deleted
        self.client.add_flags(uids, [DELETED], silent=True)
        if self.can_uid_expunge:
            self.client.uid_expunge(uids)
        else:
            # A plain EXPUNGE would also remove what other clients flagged: leave them flagged.
            log.warning(
                "imap: %s has no UIDPLUS: %d message(s) copied to %s and left flagged \\Deleted",
                self.imap.host,
                len(uids),
                folder,
            )

    def wait_idle(self, stop: threading.Event, seconds: float) -> None:
        """IDLE until new mail arrives, `seconds` pass or `stop` is set; raises if the server goes."""
        self.client.idle()
        deadline = time.monotonic() + min(seconds, IDLE_MAX_SECONDS)
        if self._input_buffered():
            deadline = 0.0  # news came with "+ idling": end IDLE at once and drain
        while not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            step = min(IDLE_STEP_SECONDS, left)
            began = time.monotonic()
            responses = self.client.idle_check(timeout=step)
            if any(r and r[0] == b"BYE" for r in responses):
                raise IMAPClientAbortError(f"server said BYE during IDLE: {responses}")
            if any(len(r) > 1 and r[1] in (b"EXISTS", b"RECENT") for r in responses):
                break
            if not responses and time.monotonic() - began < step / 2:
                # Readable but no line: the peer hung up. idle_done() below raises on it.
                break
        self.client.idle_done()

    def _input_buffered(self) -> bool:
        """Whether server lines already sit in imaplib's read buffer, where poll() cannot see them.

        A change made just before IDLE is announced in the same packet as "+ idling"; reading
        that line buffers the EXISTS too, and idle_check() would then wait for the next packet.
        """
        peek = getattr(getattr(self.client._imap, "file", None), "peek", None)
        if peek is None:
            return False
        sock = self.client.socket()
        sock.setblocking(False)  # an empty buffer must not wait for the network
        try:
            return bool(peek(1))
        except OSError:
            return False
        finally:
            sock.settimeout(self.imap.timeout)


def chunk_by_size(uids: list[int], sizes: dict[int, int], budget: int = FETCH_BYTES) -> Iterator[list[int]]:
    """Group UIDs so each group's bodies stay under `budget` bytes (one big message alone is fine)."""
    chunk: list[int] = []
    total = 0
    for uid in uids:
        size = sizes[uid]
        if chunk and total + size > budget:
            yield chunk
            chunk, total = [], 0
        chunk.append(uid)
        total += size
    if chunk:
        yield chunk
