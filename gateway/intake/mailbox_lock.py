"""One fetcher per mailbox: an flock on a file under storage.path, let go when the holder dies."""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import threading
from pathlib import Path

from gateway.store.database import StorageUnavailable

_UNSAFE = re.compile(r"[^A-Za-z0-9@._-]+")


def lock_path(directory: Path, mailbox: str) -> Path:
    """`imap-<user@host_folder>-<hash>.lock`: readable for operators, unique per mailbox."""
    digest = hashlib.sha256(mailbox.encode("utf-8")).hexdigest()[:10]
    return directory / f"imap-{_UNSAFE.sub('_', mailbox)[:80]}-{digest}.lock"


class MailboxLock:
    """An exclusive flock; the kernel releases it when the process exits, even on kill -9."""

    def __init__(self, directory: Path, mailbox: str) -> None:
        self.mailbox = mailbox
        self.path = lock_path(directory, mailbox)
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        """Take the lock if nobody holds it; False at once when another fetcher does."""
        if self._fd is not None:
            return True
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StorageUnavailable(f"cannot open lock file {self.path}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        # The holder's pid, for an operator wondering who has the mailbox.
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def acquire(self, stop: threading.Event, poll_seconds: float = 0.2) -> bool:
        """Wait for the lock; False when `stop` is set first (flock itself cannot be interrupted)."""
        while not self.try_acquire():
            if stop.wait(poll_seconds):
                return False
        return True

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None
