"""How far Litestream's file replica is behind the store, for `gateway status`."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from gateway.core.config import Config


@dataclass(frozen=True)
class ReplicaState:
    """What `gateway status` says about the replica; lag None when it cannot be read here."""

    path: str
    max_lag_seconds: int
    lag_seconds: float | None
    last_replicated_at: str | None
    problem: str | None


def newest_replica_write(replica: Path) -> float | None:
    """When Litestream last shipped a change: the newest level-0 LTX file's mtime (any level if none).

    Litestream 0.5 writes each sync of the WAL as one LTX file under `<replica>/ltx/0/` and later
    compacts them into higher levels (and drops old level-0 files), so a quiet replica may keep
    only compacted files: their mtimes are as late as anything level 0 held.
    """
    ltx = replica / "ltx"
    for pattern in ("0/*.ltx", "*/*.ltx"):
        times = [p.stat().st_mtime for p in ltx.glob(pattern) if p.is_file()]
        if times:
            return max(times)
    return None


def lag_seconds(database: Path, replica: Path, now: float) -> float | None:
    """An upper bound on the age of the oldest change the replica lacks (0: it has everything).

    Every commit appends to the WAL, so a WAL written after the newest LTX file holds changes
    Litestream has not shipped; they are at most as old as that LTX file. None: no replica yet.
    """
    shipped = newest_replica_write(replica)
    if shipped is None:
        return None
    wal = database.with_name(database.name + "-wal")
    try:
        written = wal.stat().st_mtime
    except FileNotFoundError:
        return 0.0  # a store closed cleanly has no WAL: nothing waits to be shipped
    return 0.0 if written <= shipped else max(0.0, now - shipped)


def inspect(config: Config, now: float | None = None) -> ReplicaState | None:
    """The replica's state when `[replica]` is configured, naming a problem past the threshold."""
    replica = config.replica
    if replica is None:
        return None
    limit = replica.max_lag_seconds
    if not replica.path:
        return ReplicaState("", limit, None, None, None)  # S3 and the like: see docs/two-nodes.md
    moment = time.time() if now is None else now
    shipped = newest_replica_write(Path(replica.path))
    lag = lag_seconds(config.storage.database, Path(replica.path), moment)
    problem = None
    if lag is None:
        problem = f"no Litestream replica at {replica.path}"
    elif lag > limit:
        problem = f"the replica is {lag:.0f} s behind the store (replica.max_lag_seconds = {limit})"
    last = datetime.fromtimestamp(shipped, UTC).isoformat(timespec="seconds") if shipped else None
    return ReplicaState(replica.path, limit, None if lag is None else round(lag, 1), last, problem)


def describe(state: ReplicaState) -> str:
    """One line for the status table."""
    if not state.path:
        return "streamed by Litestream; lag not readable here (no replica.path)"
    if state.lag_seconds is None:
        return f"{state.path}: nothing replicated yet"
    return f"{state.path}: {state.lag_seconds:.1f} s behind (last shipped {state.last_replicated_at})"
