"""Soak: `gateway serve` under steady load for minutes, with a relay that fails now and then.

    .venv/bin/python bench/soak.py [--minutes 3] [--clients 4] [--rate 0] [--fail-every 7]
                                   [--pipe-every 2] [--imap auto|on|off] [--imap-poll 5]
                                   [--json OUT] [--keep]

What runs (all on loopback, storage in a temp dir):
  * the real `gateway --config <tmp>/gateway.toml serve` as a subprocess;
  * C SMTP client threads sending the benchmark mail mix (bench/mailmix.py), each retrying a
    message the gateway answered 4xx, as an MTA would;
  * one thread piping a message into `gateway deliver` every --pipe-every seconds;
  * when Dovecot is installed (tests/imapserver.py) and gateway.imap exists: a private Dovecot,
    a thread appending mail to its INBOX, and the gateway's IMAP fetcher draining it;
  * a relay that answers every k-th DATA with 451 or 421 while the load runs, then recovers;
  * a sampler reading the gateway's resident memory (VmRSS) from /proc every few seconds.

Then it waits (with a deadline) for the mailbox and the outbox to drain and checks:
no loss (every accepted message has one `messages` row), no duplicate (no Message-ID twice),
every outgoing mail delivered exactly once and none failed. Exit status 0 only if all hold.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import smtplib
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from mailmix import MailMix  # noqa: E402

from tests.faults import Serve, with_imap  # noqa: E402
from tests.support import RecordingRelay, write_config  # noqa: E402

MESSAGE_ID = re.compile(rb"(?im)^message-id:\s*(<[^>\r\n]+>)")


@dataclass
class FlakyRelay(RecordingRelay):
    """A relay that answers every `fail_every`-th DATA with 451 or 421 (in turn) while `failing`.

    It counts what it took per Message-ID instead of keeping the bytes, so a long run stays small.
    """

    fail_every: int = 7
    failing: bool = True
    datas: int = 0
    injected: Counter[str] = field(default_factory=Counter)
    taken: Counter[str] = field(default_factory=Counter)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.datas += 1
            if self.failing and self.datas % self.fail_every == 0:
                turn = self.datas // self.fail_every
                answer = "451 4.3.0 Try again later" if turn % 2 else "421 4.3.2 Too busy, try later"
                self.injected[answer[:3]] += 1
                return answer
            found = MESSAGE_ID.search(envelope.original_content or b"")
            self.taken[found.group(1).decode() if found else "?"] += 1
        return "250 OK taken"


@dataclass
class Options:
    minutes: float = 3.0
    clients: int = 4
    rate: float = 0.0  # messages per second over all SMTP clients; 0 is as fast as they go
    fail_every: int = 7
    pipe_every: float = 2.0  # seconds between `gateway deliver` runs; 0 is none
    imap: str = "auto"  # auto | on | off
    imap_every: float = 0.5  # seconds between messages appended to the IMAP INBOX
    imap_poll: float = 5.0  # imap.poll_seconds: the fetcher's fallback when IDLE reports nothing
    sample_seconds: float = 5.0
    drain_timeout: float = 180.0
    keep: bool = False


@dataclass
class Summary:
    """What one soak run did and found; `problems` is empty when every promise held."""

    minutes: float = 0.0
    clients: int = 0
    imap: bool = False
    smtp_accepted: int = 0
    smtp_retried: int = 0
    pipe_accepted: int = 0
    pipe_retried: int = 0
    imap_appended: int = 0
    stored: int = 0
    rate_per_second: float = 0.0
    outbox: dict[str, int] = field(default_factory=dict)
    relay_failures_injected: dict[str, int] = field(default_factory=dict)
    relay_copies_max: int = 0
    drain_seconds: float = 0.0
    rss_samples_kib: list[tuple[float, int]] = field(default_factory=list)
    # serve and its worker processes (committer, sender) together: where a slow leak would show.
    tree_rss_samples_kib: list[tuple[float, int]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def rss_first_last_max_mib(self) -> tuple[float, float, float]:
        values = [kib / 1024 for _, kib in self.rss_samples_kib] or [0.0]
        return values[0], values[-1], max(values)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def tree_rss_first_last_max_mib(self) -> tuple[float, float, float]:
        values = [kib / 1024 for _, kib in self.tree_rss_samples_kib] or [0.0]
        return values[0], values[-1], max(values)

    def as_dict(self) -> dict[str, Any]:
        first, last, peak = self.rss_first_last_max_mib
        tree_first, tree_last, tree_peak = self.tree_rss_first_last_max_mib
        return asdict(self) | {
            "rss_first_mib": first,
            "rss_last_mib": last,
            "rss_max_mib": peak,
            "tree_rss_first_mib": tree_first,
            "tree_rss_last_mib": tree_last,
            "tree_rss_max_mib": tree_peak,
            "ok": self.ok,
        }

    def text(self) -> str:
        first, last, peak = self.rss_first_last_max_mib
        accepted = self.smtp_accepted + self.pipe_accepted + self.imap_appended
        lines = [
            f"soak: {self.minutes:g} min, {self.clients} SMTP clients, IMAP {'on' if self.imap else 'off'}",
            f"  accepted   {accepted} messages ({self.smtp_accepted} SMTP, {self.pipe_accepted} pipe,"
            f" {self.imap_appended} IMAP), {self.rate_per_second:.1f} msg/s;"
            f" 4xx retried: {self.smtp_retried} SMTP, {self.pipe_retried} pipe",
            f"  stored     {self.stored} inbound messages",
            f"  outbox     {self.outbox}; relay failures injected {self.relay_failures_injected};"
            f" most copies of one mail at the relay {self.relay_copies_max}",
            f"  drained    {self.drain_seconds:.1f} s after the load stopped",
            f"  gateway RSS first {first:.1f} MiB, last {last:.1f} MiB, max {peak:.1f} MiB"
            f" ({len(self.rss_samples_kib)} samples)",
            "  with workers first {:.1f} MiB, last {:.1f} MiB, max {:.1f} MiB".format(
                *self.tree_rss_first_last_max_mib
            ),
            "  result     "
            + ("OK: nothing lost, nothing twice, everything delivered" if self.ok else "FAILED"),
        ]
        lines += [f"  problem    {p}" for p in self.problems]
        return "\n".join(lines)


class Pacer:
    """Hands out message numbers to the client threads, no faster than `rate` a second."""

    def __init__(self, rate: float, deadline: float) -> None:
        self.rate = rate
        self.deadline = deadline
        self.next_number = 0
        self.started = time.monotonic()
        self.lock = threading.Lock()

    def take(self) -> int | None:
        with self.lock:
            number = self.next_number
            self.next_number += 1
        if self.rate:
            due = self.started + number / self.rate
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        return number if time.monotonic() < self.deadline else None


def smtp_client(port: int, mix: MailMix, pacer: Pacer, accepted: list[str], retried: Counter[str]) -> None:
    """One SMTP session reused for its messages; a 4xx or a lost connection means: try again."""
    client: smtplib.SMTP | None = None
    while (number := pacer.take()) is not None:
        _, sender, raw, message_id = mix.message(number)
        for _attempt in range(20):
            try:
                if client is None:
                    client = smtplib.SMTP("127.0.0.1", port, timeout=60)
                client.sendmail(sender, ["kontakt@service.example"], raw)
                accepted.append(message_id)
                break
            except (smtplib.SMTPException, OSError):
                retried["smtp"] += 1
                if client is not None:
                    client.close()
                client = None
                time.sleep(0.2)
    if client is not None:
        client.quit()


def pipe_client(
    config_path: Path,
    mix: MailMix,
    every: float,
    stop: threading.Event,
    accepted: list[str],
    retried: Counter[str],
) -> None:
    """`gateway deliver` every `every` seconds, as an MTA's pipe transport would run it."""
    number = 1_000_000
    while not stop.wait(every):
        _, sender, raw, message_id = mix.message(number)
        number += 1
        for _attempt in range(20):
            command = ["gateway", "--config", str(config_path), "deliver", "--sender", sender]
            done = subprocess.run(
                [sys.executable, "-m", *command],
                input=raw,
                capture_output=True,
                cwd=REPO,
                timeout=120,
            )
            if done.returncode == 0:
                accepted.append(message_id)
                break
            retried["pipe"] += 1


def imap_client(dovecot: Any, mix: MailMix, every: float, stop: threading.Event, appended: list[str]) -> None:
    """Mail arriving in the IMAP INBOX while the gateway's fetcher drains it."""
    number = 2_000_000
    while not stop.wait(every):
        _, _, raw, message_id = mix.message(number)
        number += 1
        dovecot.append("INBOX", raw)
        appended.append(message_id)


def sampler(
    serve: Serve,
    every: float,
    stop: threading.Event,
    samples: list[tuple[float, int]],
    tree: list[tuple[float, int]],
) -> None:
    began = time.monotonic()
    while True:
        at = round(time.monotonic() - began, 1)
        samples.append((at, serve.rss_kib()))
        tree.append((at, serve.tree_rss_kib()))
        if stop.wait(every):
            return


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def read(db: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def imap_wanted(choice: str) -> bool:
    if choice == "off":
        return False
    from tests.imapserver import dovecot_available

    try:
        import gateway.imap  # noqa: F401
    except ImportError:
        available = False
    else:
        available = dovecot_available()
    if choice == "on" and not available:
        raise SystemExit("--imap on: Dovecot or gateway.imap is not available")
    return available


def dovecot_for(tmp: Path, wanted: bool) -> AbstractContextManager[Any]:
    if not wanted:
        return nullcontext(None)
    from tests.imapserver import running_dovecot

    return running_dovecot(tmp / "dovecot")


def config_for(tmp: Path, relay: FlakyRelay, dovecot: Any, imap_poll: float = 5.0) -> Path:
    path = write_config(tmp, relay_port=relay.port, receipt_limit_per_hour="1000000")
    text = path.read_text(encoding="utf-8").replace(
        "retry_initial_seconds = 30\n",
        "retry_initial_seconds = 0.5\nretry_max_seconds = 2\nmax_attempts = 100\n",
    )
    path.write_text(text, encoding="utf-8")
    if dovecot is not None:
        # IDLE tells the fetcher of new mail; the poll is only the fallback, kept short here because
        # a message appended just as a drain ends has been seen to wait for it (see docs/reliability.md).
        with_imap(
            path, dovecot.host, dovecot.port, dovecot.username, dovecot.password, poll_seconds=imap_poll
        )
    return path


def run(options: Options) -> Summary:
    """One soak run; the summary says what happened and lists any broken promise."""
    summary = Summary(minutes=options.minutes, clients=options.clients)
    tmp = Path(tempfile.mkdtemp(prefix="gateway-soak-"))
    relay = FlakyRelay(fail_every=options.fail_every).start()
    try:
        summary.imap = imap_wanted(options.imap)
        with dovecot_for(tmp, summary.imap) as dovecot:
            _soak(options, summary, tmp, relay, dovecot)
    finally:
        relay.stop()
        if not options.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"kept {tmp}", file=sys.stderr)
    return summary


def _soak(options: Options, summary: Summary, tmp: Path, relay: FlakyRelay, dovecot: Any) -> None:
    config_path = config_for(tmp, relay, dovecot, options.imap_poll)
    port = int(re.search(r"(?m)^port = (\d+)$", config_path.read_text()).group(1))  # type: ignore[union-attr]
    db = tmp / "var" / "gateway.db"
    serve = Serve(config_path, tmp / "serve.log").start()
    stop, sampling = threading.Event(), threading.Event()
    accepted: list[str] = []
    piped: list[str] = []
    appended: list[str] = []
    retried: Counter[str] = Counter()
    mix = MailMix(run_id=f"soak{int(time.time())}", seed=7)
    began = time.monotonic()
    pacer = Pacer(options.rate, began + options.minutes * 60)
    threads = [
        threading.Thread(
            target=sampler,
            args=(
                serve,
                options.sample_seconds,
                sampling,
                summary.rss_samples_kib,
                summary.tree_rss_samples_kib,
            ),
        ),
        *(
            threading.Thread(target=smtp_client, args=(port, mix, pacer, accepted, retried))
            for _ in range(options.clients)
        ),
    ]
    if options.pipe_every:
        pipe_args = (config_path, mix, options.pipe_every, stop, piped, retried)
        threads.append(threading.Thread(target=pipe_client, args=pipe_args))
    if dovecot is not None:
        imap_args = (dovecot, mix, options.imap_every, stop, appended)
        threads.append(threading.Thread(target=imap_client, args=imap_args))
    with ExitStack() as cleanup:
        cleanup.callback(serve.stop)
        for thread in threads:
            thread.start()
        for thread in threads[1 : 1 + options.clients]:
            thread.join()
        stop.set()
        for thread in threads[1 + options.clients :]:
            thread.join()
        load_seconds = time.monotonic() - began
        relay.failing = False
        drained_from = time.monotonic()
        drained = wait_until(lambda: _drained(db, dovecot), options.drain_timeout)
        summary.drain_seconds = time.monotonic() - drained_from
        sampling.set()
        threads[0].join()
        if serve.proc is not None and serve.proc.poll() is not None:
            summary.problems.append(f"gateway serve exited with {serve.proc.returncode}")
    summary.smtp_accepted, summary.pipe_accepted = len(accepted), len(piped)
    summary.imap_appended = len(appended)
    summary.smtp_retried, summary.pipe_retried = retried["smtp"], retried["pipe"]
    summary.rate_per_second = (len(accepted) + len(piped) + len(appended)) / load_seconds
    summary.relay_failures_injected = dict(relay.injected)
    if not drained:
        summary.problems.append(f"not drained {options.drain_timeout:.0f} s after the load stopped")
    _check(summary, db, accepted + piped + appended, relay)


def _drained(db: Path, dovecot: Any) -> bool:
    if dovecot is not None and dovecot.folder_uids("INBOX"):
        return False
    ((waiting,),) = read(db, "SELECT count(*) FROM outbox WHERE status = 'queued'")
    return bool(waiting == 0)


def _check(summary: Summary, db: Path, accepted: list[str], relay: FlakyRelay) -> None:
    by_id = "SELECT message_id, count(*) FROM messages WHERE direction = 'in' GROUP BY message_id"
    stored = Counter(dict(read(db, by_id)))
    summary.stored = sum(stored.values())
    lost = [mid for mid in accepted if stored[mid] == 0]
    twice = [mid for mid, n in stored.items() if n > 1]
    summary.outbox = dict(read(db, "SELECT status, count(*) FROM outbox GROUP BY status"))
    outgoing = [mid for (mid,) in read(db, "SELECT message_id FROM outbox")]
    with relay.lock:
        taken = Counter(relay.taken)
    summary.relay_copies_max = max(taken.values(), default=0)
    undelivered = [mid for mid in outgoing if taken[mid] == 0]
    resent = [mid for mid in outgoing if taken[mid] > 1]
    unknown = set(taken) - set(outgoing)
    quarantined = read(db, "SELECT count(*) FROM quarantine")[0][0]
    for what, found in (
        ("accepted but not stored", lost),
        ("stored more than once", twice),
        ("outgoing mail never delivered", undelivered),
        ("outgoing mail delivered more than once", resent),
        ("mail at the relay that the outbox does not know", sorted(unknown)),
    ):
        if found:
            summary.problems.append(f"{what}: {len(found)} (e.g. {found[:3]})")
    if summary.outbox.get("failed"):
        summary.problems.append(f"outbox rows failed: {summary.outbox['failed']}")
    if quarantined:
        summary.problems.append(f"messages quarantined: {quarantined}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rate", type=float, default=0.0, help="SMTP messages a second in all; 0: unpaced")
    parser.add_argument("--fail-every", type=int, default=7, help="the relay refuses every k-th DATA")
    parser.add_argument("--pipe-every", type=float, default=2.0, help="seconds between pipe runs; 0: none")
    parser.add_argument("--imap", choices=("auto", "on", "off"), default="auto")
    parser.add_argument("--imap-every", type=float, default=0.5)
    parser.add_argument("--imap-poll", type=float, default=5.0, help="imap.poll_seconds for the gateway")
    parser.add_argument("--sample-seconds", type=float, default=5.0)
    parser.add_argument("--drain-timeout", type=float, default=180.0)
    parser.add_argument("--json", type=Path, help="also write the summary here as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (store, logs)")
    args = parser.parse_args(argv)
    options = Options(
        minutes=args.minutes,
        clients=args.clients,
        rate=args.rate,
        fail_every=args.fail_every,
        pipe_every=args.pipe_every,
        imap=args.imap,
        imap_every=args.imap_every,
        imap_poll=args.imap_poll,
        sample_seconds=args.sample_seconds,
        drain_timeout=args.drain_timeout,
        keep=args.keep,
    )
    summary = run(options)
    print(summary.text())
    if args.json:
        args.json.write_text(json.dumps(summary.as_dict(), indent=2) + "\n", encoding="utf-8")
    return 0 if summary.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
