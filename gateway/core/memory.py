"""Big message buffers go back to the system once freed, so a burst of large mail leaves no residue."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("gateway.memory")

# glibc's mallopt parameter for the size from which an allocation gets its own mapping.
_M_MMAP_THRESHOLD = -3
# Buffers from this size up are mapped on their own and unmapped when freed. glibc raises its
# threshold each time such a buffer is freed (up to 32 MB), after which 24 MB messages land in
# the heap and stay there: serve kept 400 MB after a burst of eight. A fixed value stops that.
MMAP_THRESHOLD = 1 << 20


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


_LIBC = _libc()


def map_big_buffers() -> None:
    """Once per process, at its start: large buffers in their own mappings (glibc only)."""
    if _LIBC is not None and not _LIBC.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD):
        log.warning("mallopt(M_MMAP_THRESHOLD) refused; memory may stay high after big mail")


def give_back() -> None:
    """Return free heap pages to the system (glibc's malloc_trim), after a batch of big mail."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
