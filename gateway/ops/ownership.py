"""Files a command run as root makes in the store stay usable by the service's own user."""

from __future__ import annotations

import os
from pathlib import Path


def hand_back(storage: Path) -> int:
    """As root: give whatever root now owns under storage.path to the owner of storage.path.

    An operator's `sudo gateway outbox flush` otherwise leaves a root-owned outgoing/ or database
    journal behind, and the service's next write fails. Returns how many entries changed owner.
    """
    if os.geteuid() != 0:
        return 0
    try:
        owner = storage.stat()
    except FileNotFoundError:
        return 0
    if owner.st_uid == 0:
        return 0  # the service runs as root here, or storage.path was never given away
    changed = 0
    for folder, dirs, files in os.walk(storage):
        for name in (*dirs, *files):
            path = os.path.join(folder, name)
            if os.lstat(path).st_uid == 0:
                os.lchown(path, owner.st_uid, owner.st_gid)
                changed += 1
    return changed
