"""The last failure to write the store, kept where a full disk cannot stop us writing it.

`serve`'s workers and `gateway deliver` are separate processes, and `gateway status` yet another,
so the record must be in a file. A new file, or an appended line, needs free blocks, which a full
disk no longer has: the record is therefore written over the first bytes of a file allocated
(zeros written and synced) when the store is opened, with `pwrite` at offset 0 and never
truncated. Overwriting blocks a file already owns needs no new ones on ext4, XFS and tmpfs; on a
copy-on-write filesystem (btrfs, ZFS) it may still fail, and then status still reports the free
space it measures itself. The record is not synced: it is a note for `gateway status`, which reads
it through the same page cache, and a power cut that loses it loses nothing else.

A process that recorded a failure blanks the record at its next successful commit, so status
returns to healthy once the store takes writes again.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from gateway.core import clock

FILE_NAME = "last-write-error"
# Room for a time, a process and an error text; longer texts are cut to fit.
SIZE = 4096
_BLANK = b" " * SIZE


@dataclass(frozen=True)
class WriteError:
    at: str
    process: str
    error: str


class WriteErrorLog:
    """One process's handle on the record: `failed` notes a failure, `succeeded` clears its own."""

    def __init__(self, folder: Path, process: str) -> None:
        self.path = folder / FILE_NAME
        self.process = process
        self.outstanding = False
        self._fd: int | None = None
        with contextlib.suppress(OSError):  # a store that cannot take even this fails just after
            self._fd = _allocated(self.path)

    def failed(self, error: str) -> None:
        """Overwrite the record with this failure; never raises (the caller reports the failure)."""
        if self._fd is None:
            return
        text = json.dumps({"at": clock.iso(), "process": self.process, "error": error[:3000]})
        data = text.encode()[: SIZE - 1]
        with contextlib.suppress(OSError):
            os.pwrite(self._fd, data + _BLANK[len(data) :], 0)
            self.outstanding = True

    def succeeded(self) -> None:
        """Called after each commit: blanks the record once, after a failure this process noted."""
        if self.outstanding and self._fd is not None:
            with contextlib.suppress(OSError):
                os.pwrite(self._fd, _BLANK, 0)
                self.outstanding = False

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _allocated(path: Path) -> int:
    """An open descriptor on the record file, made and filled to SIZE first if it is new or short."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o640)
    try:
        if os.fstat(fd).st_size < SIZE:
            os.pwrite(fd, _BLANK, 0)
            os.fsync(fd)
    except OSError:
        os.close(fd)
        raise
    return fd


def last(folder: Path) -> WriteError | None:
    """The failure on record next to the store, or None when there is none (or no readable record)."""
    try:
        text = (folder / FILE_NAME).read_bytes()[:SIZE].strip()
    except OSError:
        return None
    if not text:
        return None
    try:
        record = json.loads(text)
        return WriteError(str(record["at"]), str(record["process"]), str(record["error"]))
    except (ValueError, KeyError, TypeError):
        return WriteError("", "", f"unreadable record: {text[:200]!r}")
