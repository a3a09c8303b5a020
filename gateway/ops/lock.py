"""The serve lock: the file a running `gateway serve` holds, so a restore never replaces a live store."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class LockHeld(Exception):
    """Another process holds the store's serve lock."""


class ServeLock:
    """An exclusive flock on `<storage.path>/gateway.lock`; the kernel drops it if the process dies."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "gateway.lock"
        self._fd: int | None = None

    def acquire(self, purpose: str) -> None:
        """Take the lock without waiting; raise LockHeld naming the holder if someone has it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise LockHeld(f"{self.path} is held by {holder}") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{purpose} pid {os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def held_elsewhere(self) -> bool:
        """Whether some other process holds the lock right now (we take and drop it to find out)."""
        if self._fd is not None or not self.path.exists():
            return False
        try:
            self.acquire("probe")
        except LockHeld:
            return True
        self.release()
        return False
