"""One pass over the intake folder: process each message, record it in imap_seen, then move it.

A message leaves the folder only after `process` has committed it and imap_seen holds
(mailbox, UIDVALIDITY, UID, sha256, outcome). A crash anywhere before the move just means the
next pass meets it again and files it by its imap_seen row, or the pipeline's de-duplication
answers "duplicate". The tests prove it with a real kill -9 right after the first commit (which
holds exactly the first message): GATEWAY_TEST_CRASH_AT=after-commit (gateway/crashpoints.py).
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from gateway.core import clock
from gateway.flow.context import Result
from gateway.intake.imap_mailbox import Mailbox, chunk_by_size
from gateway.pipeline.process import process_batch
from gateway.runtime import Runtime
from gateway.store.database import StorageUnavailable

log = logging.getLogger("gateway.imap")

# Messages per transaction. A pass starts with one, so a lone new mail is committed as soon as
# it is parsed; a backlog's groups double up to this and share one fsync (about +20% msg/s).
GROUP_MAX = 50

OnStored = Callable[[Result], None]


@dataclass
class DrainReport:
    """What one pass over the mailbox did; `deferred` says why it stopped early, if it did."""

    total: int = 0
    done: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    deferred: str = ""


@dataclass(frozen=True)
class Taken:
    uid: int
    sha256: str
    outcome: str


class Progress:
    """`fetched 400/10000 …` rewritten in place on a terminal; silent anywhere else."""

    def __init__(self, stream: TextIO | None) -> None:
        self.stream = stream if stream is not None and stream.isatty() else None
        self.total = 0
        self.started = time.monotonic()

    def start(self, total: int) -> None:
        self.total = total
        self.started = time.monotonic()

    def update(self, done: int) -> None:
        if self.stream is None or not self.total:
            return
        rate = done / max(time.monotonic() - self.started, 1e-6)
        self.stream.write(f"\rfetched {done}/{self.total} … {rate:.0f} msg/s ")
        self.stream.flush()

    def finish(self) -> None:
        if self.stream is not None and self.total:
            self.stream.write("\n")
            self.stream.flush()


class Drain:
    """One pass: every pending message processed (or filed from an earlier pass) and moved."""

    def __init__(
        self,
        runtime: Runtime,
        mailbox: Mailbox,
        on_stored: OnStored | None = None,
        stop: threading.Event | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.runtime = runtime
        self.mailbox = mailbox
        self.imap = mailbox.imap
        self.on_stored = on_stored
        self.stop = stop or threading.Event()
        self.progress = progress or Progress(None)
        self.report = DrainReport()
        self.uidvalidity = 0
        self.quarantined: set[str] = set()
        self.group_size = 1

    def run(self) -> DrainReport:
        self.uidvalidity = self.mailbox.select()
        self.mailbox.ensure_folders()
        uids = self.mailbox.pending()
        self.report.total = len(uids)
        self.progress.start(len(uids))
        self.quarantined = self._quarantined_digests()
        size = max(1, self.imap.batch_size)
        for start in range(0, len(uids), size):
            if not self._batch(uids[start : start + size]) or self.stop.is_set():
                break
            self.progress.update(self.report.done)
        self.progress.finish()
        if self.report.done:
            counts = ", ".join(f"{k} {v}" for k, v in sorted(self.report.outcomes.items()))
            done = self.report.done
            log.info("imap: %d of %d message(s) from %s: %s", done, len(uids), self.mailbox.name, counts)
        return self.report

    def _batch(self, uids: list[int]) -> bool:
        """Process one batch, record it, then move it; False when we must stop for now."""
        taken = self._earlier(uids)
        known = {t.uid for t in taken}
        fresh = [uid for uid in uids if uid not in known]
        sizes = self.mailbox.sizes(fresh) if fresh else {}
        records: list[Taken] = []
        try:
            for chunk in chunk_by_size([uid for uid in fresh if uid in sizes], sizes):
                if self.stop.is_set():
                    break
                bodies = sorted(self.mailbox.bodies(chunk).items())
                while bodies and not self.stop.is_set():
                    group, bodies = bodies[: self.group_size], bodies[self.group_size :]
                    records += self._take(group)
                    self.group_size = min(2 * self.group_size, GROUP_MAX)
        except StorageUnavailable as exc:
            self.report.deferred = str(exc)
            log.warning(
                "imap: store unavailable, the rest stays in %s for the next poll: %s", self.mailbox.name, exc
            )
        try:
            self._record(records)
        except StorageUnavailable as exc:
            # Nothing unrecorded is moved: the next pass meets these again as duplicates.
            self.report.deferred = self.report.deferred or str(exc)
            log.warning("imap: cannot record %d message(s), leaving them in place: %s", len(records), exc)
            return False
        taken += records
        self._file(taken)
        self.report.done += len(taken)
        self.report.outcomes.update(t.outcome for t in taken)
        return not self.report.deferred

    def _take(self, group: list[tuple[int, bytes]]) -> list[Taken]:
        """Process a group in one transaction (one fsync); what was quarantined before is not retried."""
        fresh: list[tuple[int, bytes, str]] = []
        again: list[tuple[int, str]] = []
        for uid, raw in group:
            digest = hashlib.sha256(raw).hexdigest()
            if digest in self.quarantined or any(digest == d for _u, _r, d in fresh):
                again.append((uid, digest))
            else:
                fresh.append((uid, raw, digest))
        results: list[Result] = []
        if fresh:
            with self.runtime.lock:
                results = process_batch(self.runtime, [(raw, "imap", None, None) for _u, raw, _d in fresh])
        taken = []
        for (uid, _raw, digest), result in zip(fresh, results, strict=True):
            if result.outcome == "quarantined":
                self.quarantined.add(digest)
                log.warning("imap: UID %d of %s quarantined: %s", uid, self.mailbox.name, result.reason)
            if self.on_stored is not None:
                self.on_stored(result)
            taken.append(Taken(uid, digest, result.outcome))
        # Quarantined before (a re-fetch, a crash before the move): straight to the failed folder.
        # The same bytes twice in one group: the second is what the pipeline calls a duplicate.
        taken += [Taken(uid, d, "quarantined" if d in self.quarantined else "duplicate") for uid, d in again]
        return taken

    def _earlier(self, uids: list[int]) -> list[Taken]:
        """Messages of this batch a previous pass processed but did not get to move."""
        rows = self._query(
            "SELECT uid, sha256, outcome FROM imap_seen"
            " WHERE mailbox = ? AND uidvalidity = ? AND uid BETWEEN ? AND ?",
            (self.mailbox.name, self.uidvalidity, uids[0], uids[-1]),
        )
        wanted = set(uids)
        return [Taken(r["uid"], r["sha256"], r["outcome"]) for r in rows if r["uid"] in wanted]

    def _quarantined_digests(self) -> set[str]:
        rows = self._query(
            "SELECT sha256 FROM quarantine WHERE source = 'imap'"
            " UNION SELECT sha256 FROM imap_seen WHERE outcome = 'quarantined'"
        )
        return {str(r["sha256"]) for r in rows}

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        """Reads share the runtime's connection, so they take its lock like the writes do."""
        with self.runtime.lock:
            try:
                return self.runtime.store.query(sql, params)
            except sqlite3.Error as exc:
                raise StorageUnavailable(str(exc)) from exc

    def _record(self, records: list[Taken]) -> None:
        if not records:
            return
        now = clock.iso()
        with self.runtime.lock, self.runtime.store.write() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO imap_seen (mailbox, uidvalidity, uid, sha256, outcome, seen_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [(self.mailbox.name, self.uidvalidity, t.uid, t.sha256, t.outcome, now) for t in records],
            )

    def _file(self, taken: list[Taken]) -> None:
        failed = [t.uid for t in taken if t.outcome == "quarantined"]
        processed = [t.uid for t in taken if t.outcome != "quarantined"]
        self.mailbox.file(processed, self.imap.processed_folder)
        self.mailbox.file(failed, self.imap.failed_folder)
