"""The SMTP intake's pipeline in a worker process, so the listener and the pipeline each get a core."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator

from gateway.core import child as child_process
from gateway.core import logs, memory
from gateway.core.config import Config
from gateway.flow.context import Result
from gateway.pipeline.process import Item, process_batch, quarantine
from gateway.runtime import Runtime
from gateway.store.database import StorageUnavailable

log = logging.getLogger("gateway.committer")

# Called with a batch's results, or with the exception all of its senders get a 451 for.
Done = Callable[["list[Result] | BaseException"], None]

# After the worker dies, messages go one per batch for this long: one that kills the worker then
# fails alone instead of taking its batch-mates' 250s with it.
SOLO_SECONDS = 60.0
# A message that kills the worker this many times on its own is quarantined by the parent.
CRASHES_BEFORE_QUARANTINE = 2
# The most messages the worker joins into one transaction from frames already waiting.
JOIN_LIMIT = 64
# Message bytes in one batch past which the worker hands its freed heap back (malloc_trim).
BIG_BATCH = 8 << 20
# The WAL size (4 KiB pages) at which the worker's own commits checkpoint: 16 MB, four times
# SQLite's default, so the outbox sender's commits checkpoint first (Store.defer_checkpoints).
# Not more: with no mail going out the worker checkpoints itself, and that COMMIT holds the 250s.
# With `storage.replica` Litestream checkpoints and both keep a higher safety net instead.
CHECKPOINT_PAGES = 4_000


class WorkerCrashed(Exception):
    """The pipeline's process died while this message was its only one."""


class Committer:
    """Runs `process_batch` in a child process, with up to `depth` batches in flight.

    Frames (gateway/child.py) go to the child's stdin and results come back on its stdout, in
    order. While the child commits one batch the next is already waiting in the pipe, so it never
    idles through the round trip to the clients. If the child dies, every batch in flight gets a
    temporary failure (451: the clients retry, and de-duplication answers "duplicate" for a batch
    that did commit) and the next batch starts a new child.
    """

    def __init__(self, runtime: Runtime, depth: int = 2) -> None:
        self.runtime = runtime
        self.child: subprocess.Popen[bytes] | None = None
        # Batches sent and not answered, oldest first, with whether each went in solo mode.
        self.pending: deque[tuple[list[Item], Done, bool]] = deque()
        self.slots = threading.Semaphore(depth)
        self.lock = threading.Lock()  # guards child and pending
        self.stopping = False
        self.crashes: Counter[str] = Counter()
        self.solo_until = 0.0

    def start(self) -> None:
        with self.lock:
            self._ensure_child()

    def _ensure_child(self) -> subprocess.Popen[bytes]:
        if self.child is None:
            child = child_process.spawn(
                "gateway.intake.committer", self.runtime.config, stdout=subprocess.PIPE
            )
            threading.Thread(target=self._read, args=(child,), name="committer-results", daemon=True).start()
            self.child = child
        return self.child

    @property
    def solo(self) -> bool:
        """Whether batches should hold one message (for a while after the worker died)."""
        return time.monotonic() < self.solo_until

    def submit(self, items: list[Item], done: Done) -> None:
        """Queue a batch; `done` gets its results, or the exception every sender answers 451 to."""
        self.slots.acquire()  # blocks the intake worker while `depth` batches are in flight
        with self.lock:
            child = self._ensure_child()
            assert child.stdin is not None
            solo = self.solo
            self.pending.append((items, done, solo))
            # A dead child's pipe raises here; its reader sees end-of-file and fails this batch too.
            with contextlib.suppress(OSError):
                child_process.write_frame(child.stdin, (items, solo))

    def _read(self, child: subprocess.Popen[bytes]) -> None:
        assert child.stdout is not None
        fd = child.stdout.fileno()
        while True:
            try:
                status, value = child_process.read_frame(fd)
            except (EOFError, OSError) as exc:
                if not self.stopping:
                    self._died(child, exc)
                return
            with self.lock:
                _, done, _ = self.pending.popleft()
            self.slots.release()
            if status == "ok":
                done(list(value))
            elif status == "unavailable":
                done(StorageUnavailable(str(value)))
            else:
                done(RuntimeError(f"intake worker: {value}"))

    def _died(self, child: subprocess.Popen[bytes], exc: BaseException) -> None:
        with self.lock:
            if self.child is child:
                self.child = None
            failed = list(self.pending)
            self.pending.clear()
        with contextlib.suppress(OSError):
            child.kill()
        status = child.wait()
        self.solo_until = time.monotonic() + SOLO_SECONDS
        held = sum(len(items) for items, _, _ in failed)
        log.error("intake worker died (status %s, %s) with %d message(s) in hand", status, exc, held)
        for position, (items, done, solo) in enumerate(failed):
            self.slots.release()
            # Only the oldest batch was being worked on. It was the worker's only message when it
            # holds one and was sent in solo mode (never joined) or nothing else was in flight.
            alone = position == 0 and len(items) == 1 and (solo or len(failed) == 1)
            try:
                done(self._after_crash(items, alone))
            except Exception as error:  # StorageUnavailable, or the quarantine could not be written
                done(error)

    def _after_crash(self, items: list[Item], alone: bool) -> list[Result]:
        """A message that keeps killing the worker while it is the worker's only one is quarantined."""
        if alone:
            raw, source, _, _ = items[0]
            key = hashlib.sha256(raw).hexdigest()
            self.crashes[key] += 1
            if self.crashes[key] >= CRASHES_BEFORE_QUARANTINE:
                del self.crashes[key]
                crashed = WorkerCrashed(f"the intake worker died {CRASHES_BEFORE_QUARANTINE} times on it")
                with self.runtime.lock:
                    return [quarantine(self.runtime, raw, source, crashed)]
        raise StorageUnavailable("the intake worker stopped; retry")

    def stop(self, timeout: float = 60.0) -> None:
        """End-of-file to the child: it has no batch in hand (the listener has drained) and exits."""
        with self.lock:
            self.stopping = True
            child, self.child = self.child, None
        if child is not None and not child_process.stop(child, timeout):
            log.error("intake worker did not stop within %.0f s; killed it", timeout)


def _batches(fd: int) -> Iterator[list[tuple[list[Item], bool]]]:
    """Frames from the parent, joined while more are already waiting in the pipe.

    The parent keeps two batches in flight, so the second often waits behind the first: one
    transaction for both is one fsync instead of two. A frame sent while the parent is in solo
    mode (after a worker death) is never joined, so a poison message dies alone.
    """
    waiting: tuple[list[Item], bool] | None = None
    while True:
        try:
            first = waiting or child_process.read_frame(fd)
        except EOFError:
            return
        waiting, group = None, [first]
        size, solo = len(first[0]), first[1]
        while not solo and size < JOIN_LIMIT and select.select([fd], [], [], 0)[0]:
            try:
                frame = child_process.read_frame(fd)
            except EOFError:
                break  # the parent is stopping; what we hold is still answered
            if frame[1]:
                waiting = frame
                break
            group.append(frame)
            size += len(frame[0])
        yield group


def _replies(sizes: list[int], outcome: list[Result] | tuple[str, str]) -> list[tuple[str, object]]:
    """One reply per frame, in order, as the parent expects: its share of the results, or the failure."""
    if isinstance(outcome, tuple):
        return [outcome] * len(sizes)
    replies: list[tuple[str, object]] = []
    start = 0
    for size in sizes:
        replies.append(("ok", outcome[start : start + size]))
        start += size
    return replies


def worker_runtime(config: Config) -> Runtime:
    """The worker's Runtime, whose commits leave WAL checkpoints to the outbox sender's."""
    runtime = Runtime(config)
    runtime.store.defer_checkpoints(CHECKPOINT_PAGES)
    return runtime


def main() -> int:
    config = child_process.start_child()
    logs.setup(config.log)
    # Frames go out on a private copy of stdout; anything else printed lands on stderr.
    frames = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    # serve stops us by closing our stdin once the listener has drained; a signal to the whole
    # group (systemd, Ctrl-C) must not cut a batch short.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    runtime = worker_runtime(config)
    try:
        for group in _batches(sys.stdin.fileno()):
            try:
                with runtime.lock:
                    outcome: list[Result] | tuple[str, str] = process_batch(
                        runtime, [item for batch, _ in group for item in batch]
                    )
            except StorageUnavailable as exc:
                outcome = ("unavailable", str(exc))
            except Exception as exc:  # reported to the parent, which answers 451
                log.exception("intake worker: batch failed")
                outcome = ("error", f"{type(exc).__name__}: {exc}")
            for reply in _replies([len(batch) for batch, _ in group], outcome):
                child_process.write_frame(frames, reply)
            if sum(len(raw) for batch, _ in group for raw, *_ in batch) > BIG_BATCH:
                del group, outcome
                memory.give_back()  # after big mail, the heap's free pages go back to the system
    finally:
        runtime.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
