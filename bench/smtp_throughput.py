"""End-to-end SMTP throughput of `gateway serve`: mail in over SMTP, receipts out to a relay.

    .venv/bin/python bench/smtp_throughput.py [--messages N] [--connections C]
                                             [--preload CASES] [--json OUT]

What runs (all on loopback):
  * a recording relay in its own process, counting what it receives and when: a minimal asyncio
    SMTP sink by default (a real MTA's cost per mail is small), aiosmtpd with --relay aiosmtpd;
  * the real `gateway --config <tmp>/gateway.toml serve --port P` as a subprocess, with storage
    in a temp dir and the repo's registry, rules and templates;
  * C client threads here, each holding one SMTP session and sending its share of N mixed
    customer mails (see mailmix.py), timing each sendmail() until the 250 reply.
The clock starts at the first send and stops when the relay has one receipt per message.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import platform
import re
import resource
import shutil
import signal
import smtplib
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import reference
import snapshot
from mailmix import REPO, SERVICE_ADDRESS, generate
from preload import preload

GATEWAY_BIN = Path(sys.executable).parent / "gateway"


# --------------------------------------------------------------------------- helpers


def free_port() -> int:
    """A loopback port nobody listens on right now (aiosmtpd cannot be given port 0)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[index]


def proc_status(pid: int) -> dict[str, int]:
    """VmHWM/VmRSS in kB from /proc/<pid>/status."""
    found: dict[str, int] = {}
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status", encoding="ascii") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                found[key] = int(value.split()[0])
    return found


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of one process (not of its children), in seconds; NaN when it has gone."""
    stat = proc_stat(pid)
    return stat[1] if stat is not None else float("nan")


def proc_stat(pid: int) -> tuple[int, float, int] | None:
    """(ppid, utime + stime in seconds, start time in clock ticks) from /proc/<pid>/stat."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            # The command name in parentheses may hold spaces: split what follows the last ")".
            fields = handle.read().rpartition(")")[2].split()
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / ticks, int(fields[19])


def child_pids(pid: int) -> list[int]:
    """The live children of pid: from /proc/<pid>/task/*/children, or a scan of /proc without it."""
    if os.path.exists(f"/proc/{pid}/task/{pid}/children"):
        found: list[int] = []
        for path in Path(f"/proc/{pid}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                found += [int(p) for p in path.read_text(encoding="ascii").split()]
        return found
    # Kernels built without CONFIG_PROC_CHILDREN (and gVisor) have no such file.
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            stat = proc_stat(int(entry.name))
            if stat is not None and stat[0] == pid:
                found.append(int(entry.name))
    return found


def process_role(pid: int) -> str:
    """Which worker of `gateway serve` a child is, from its command line."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            argv = handle.read().split(b"\0")
    except OSError:
        return "other"
    # Module names of today's tree and of refs from before the subpackages (`--ref`).
    modules = {
        b"gateway.intake.committer": "committer",
        b"gateway.committer": "committer",
        b"gateway.ops.delivery_worker": "sender",
        b"gateway.sender": "sender",
    }
    for arg in argv:
        if arg in modules:
            return modules[arg]
    return "other"  # e.g. sampled between fork and exec, when it still shows the parent's argv


class ProcessTree:
    """CPU and memory of `gateway serve` (the parent) and the workers it starts.

    Each sample() lists the parent's children and records every process's utime + stime, VmHWM
    and VmRSS. A process is keyed by (pid, start time), so a restarted worker is a new entry and
    a reused pid is not taken for an old process. An entry keeps the figures of its last sample:
    a worker that exits between samples loses at most one interval of CPU. CPU counts from the
    first sample (after the gateway listens); workers that appear later count from 0.
    """

    ROLES = ("parent", "committer", "sender")

    def __init__(self, root: int) -> None:
        self.root = root
        self.procs: dict[tuple[int, int], dict[str, Any]] = {}
        self.samples = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None

    def sample(self) -> None:
        with self.lock:
            first = self.samples == 0
            self.samples += 1
            for pid in [self.root, *child_pids(self.root)]:
                stat = proc_stat(pid)
                if stat is None or (pid != self.root and stat[0] != self.root):
                    continue  # gone, or gone and the pid reused, since the listing
                _ppid, cpu, started = stat
                entry = self.procs.get((pid, started))
                if entry is None:
                    entry = self.procs[(pid, started)] = {
                        "pid": pid,
                        "role": "parent" if pid == self.root else "other",
                        "cpu_start": cpu if first else 0.0,
                        "hwm_kb": 0,
                    }
                if entry["role"] == "other":
                    entry["role"] = process_role(pid)
                memory = proc_status(pid)
                entry["cpu"] = cpu
                entry["hwm_kb"] = max(entry["hwm_kb"], memory.get("VmHWM", 0))
                entry["rss_kb"] = memory.get("VmRSS", 0)
                entry["sample"] = self.samples

    def start_sampling(self, interval: float = 1.0) -> ProcessTree:
        """sample() now and then every interval seconds in a thread, until stop_sampling()."""
        self.sample()

        def loop() -> None:
            while not self.stopping.wait(interval):
                self.sample()

        self.thread = threading.Thread(target=loop, name="bench-proc-sampler", daemon=True)
        self.thread.start()
        return self

    def stop_sampling(self) -> None:
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(timeout=10)

    def by_role(self) -> dict[str, dict[str, Any]]:
        """Per role: CPU seconds since the first sample, peak and end RSS in MB, pids seen."""
        roles: dict[str, dict[str, Any]] = {
            role: {"cpu_seconds": 0.0, "peak_rss_mb": 0.0, "rss_end_mb": 0.0, "pids": []}
            for role in self.ROLES
        }
        with self.lock:
            for entry in sorted(self.procs.values(), key=lambda e: e["pid"]):
                figures = roles.setdefault(
                    entry["role"], {"cpu_seconds": 0.0, "peak_rss_mb": 0.0, "rss_end_mb": 0.0, "pids": []}
                )
                figures["cpu_seconds"] += entry["cpu"] - entry["cpu_start"]
                # A restarted worker replaces the old one rather than running beside it.
                figures["peak_rss_mb"] = max(figures["peak_rss_mb"], entry["hwm_kb"] / 1024)
                if entry["sample"] == self.samples:  # alive at the last sample
                    figures["rss_end_mb"] += entry["rss_kb"] / 1024
                figures["pids"].append(entry["pid"])
        for figures in roles.values():
            for key in ("cpu_seconds", "peak_rss_mb", "rss_end_mb"):
                figures[key] = round(figures[key], 2 if key == "cpu_seconds" else 1)
        return roles


def client_cpu_seconds() -> float:
    """User + system CPU of this process, all threads, in seconds (not of its children)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def connect_ro(db: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)


def db_counts(db: Path) -> dict[str, Any]:
    conn = connect_ro(db)
    try:
        one = lambda sql: conn.execute(sql).fetchone()[0]  # noqa: E731
        return {
            "cases": one("SELECT count(*) FROM cases"),
            "max_case_id": one("SELECT coalesce(max(id), 0) FROM cases"),
            "messages_in": one("SELECT count(*) FROM messages WHERE direction = 'in'"),
            "outbox": dict(conn.execute("SELECT status, count(*) FROM outbox GROUP BY status").fetchall()),
            "max_outbox_id": one("SELECT coalesce(max(id), 0) FROM outbox"),
            "quarantine": one("SELECT count(*) FROM quarantine"),
            "dispositions": dict(
                conn.execute("SELECT disposition, count(*) FROM messages GROUP BY disposition").fetchall()
            ),
        }
    finally:
        conn.close()


def run_outbox(db: Path, after_id: int) -> dict[str, Any]:
    """This run's outgoing mail: by kind and status, and how many sent ones went to the case's
    requester (the customer's receipt; other kinds, e.g. agent notifications, are counted apart)."""
    conn = connect_ro(db)
    try:
        kinds = conn.execute(
            "SELECT kind, status, count(*) FROM outbox WHERE id > ? GROUP BY kind, status", (after_id,)
        ).fetchall()
        (to_requester,) = conn.execute(
            "SELECT count(*) FROM outbox o JOIN cases c ON c.id = o.case_id"
            " WHERE o.id > ? AND o.status = 'sent' AND o.recipients LIKE '%\"' || c.requester || '\"%'",
            (after_id,),
        ).fetchone()
    finally:
        conn.close()
    by_kind: dict[str, dict[str, int]] = {}
    for kind, status, count in kinds:
        by_kind.setdefault(kind, {})[status] = count
    return {
        "by_kind": by_kind,
        "sent": sum(c for _k, st, c in kinds if st == "sent"),
        "queued": sum(c for _k, st, c in kinds if st == "queued"),
        "failed": sum(c for _k, st, c in kinds if st == "failed"),
        "sent_to_requester": to_requester,
    }


# --------------------------------------------------------------------------- the relay process

_IN_REPLY_TO = re.compile(rb"^In-Reply-To:[ \t]*(<[^>\r\n]+>)", re.M | re.I)


class _RecordingHandler:
    """Counts every mail, and apart from that the receipts: replies to one of the bench's messages."""

    def __init__(self, receipts: Any, total: Any) -> None:
        self.receipts = receipts
        self.total = total
        self.mails: list[tuple[float, str, list[str]]] = []  # (arrival, In-Reply-To, recipients)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.record(envelope.original_content or b"", envelope.rcpt_tos)
        return "250 2.0.0 OK recorded"

    def record(self, raw: bytes, rcpt_tos: list[str]) -> None:
        now = time.monotonic()  # CLOCK_MONOTONIC: the same clock in every process on Linux
        head = raw.split(b"\r\n\r\n", 1)[0]
        found = _IN_REPLY_TO.search(head)
        in_reply_to = found.group(1).decode("ascii", "replace") if found else ""
        self.mails.append((now, in_reply_to, [r.lower() for r in rcpt_tos]))
        if in_reply_to.startswith("<bench."):
            with self.receipts.get_lock():
                self.receipts.value += 1
        with self.total.get_lock():
            self.total.value += 1


class _LeanSession(asyncio.Protocol):
    """Just enough of an SMTP server for smtplib, at a fraction of aiosmtpd's CPU per mail.

    The relay stands in for the centre's MTA (Postfix, Exim: C programs whose cost per mail is
    small next to ours); on a 2-core machine aiosmtpd's own parsing would otherwise be counted
    against the gateway. No TLS, no AUTH, no pipelining: the gateway's sender uses none of them.
    """

    def __init__(self, handler: _RecordingHandler) -> None:
        self.handler = handler
        self.buffer = bytearray()
        self.in_data = False
        self.rcpt_tos: list[str] = []
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(b"220 bench-relay ESMTP\r\n")

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buffer += data
        while self.buffer:
            if self.in_data:
                end = self.buffer.find(b"\r\n.\r\n")
                if end < 0:
                    return
                raw = bytes(self.buffer[: end + 2]).replace(b"\r\n..", b"\r\n.")
                del self.buffer[: end + 5]
                self.in_data = False
                self.handler.record(raw, self.rcpt_tos)
                self.transport.write(b"250 2.0.0 OK recorded\r\n")
                continue
            end = self.buffer.find(b"\r\n")
            if end < 0:
                return
            line = bytes(self.buffer[:end])
            del self.buffer[: end + 2]
            self.transport.write(self.command(line))

    def command(self, line: bytes) -> bytes:
        verb = line[:4].upper()
        if verb == b"EHLO":
            return b"250-bench-relay\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 SIZE 104857600\r\n"
        if verb == b"MAIL":
            self.rcpt_tos = []
            return b"250 2.1.0 OK\r\n"
        if verb == b"RCPT":
            address = line.partition(b"<")[2].partition(b">")[0]
            self.rcpt_tos.append(address.decode("utf-8", "replace"))
            return b"250 2.1.5 OK\r\n"
        if verb == b"DATA":
            self.in_data = True
            return b"354 end with <CR><LF>.<CR><LF>\r\n"
        if verb == b"QUIT":
            assert self.transport is not None
            self.transport.write(b"221 2.0.0 bye\r\n")
            self.transport.close()
            return b""
        if verb in (b"HELO", b"RSET", b"NOOP"):
            return b"250 2.0.0 OK\r\n"
        return b"502 5.5.2 not implemented here\r\n"


def _serve_lean(handler: _RecordingHandler, port: int, ready: threading.Event, stop: list[Any]) -> None:
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(
        loop.create_server(lambda: _LeanSession(handler), "127.0.0.1", port, reuse_address=True)
    )
    stop.append((loop, server))
    ready.set()
    loop.run_forever()
    server.close()
    loop.run_until_complete(server.wait_closed())
    loop.close()


def relay_main(conn: Any, receipts: Any, total: Any, kind: str) -> None:
    """Child process: run the recording relay until told to stop, then send back what it saw."""
    from aiosmtpd.controller import Controller

    handler = _RecordingHandler(receipts, total)
    stop_relay: Callable[[], None] | None = None
    error: Exception | None = None
    for _ in range(10):  # the port we picked can be taken between bind and listen: pick again
        port = free_port()
        try:
            if kind == "lean":
                ready, started = threading.Event(), []  # type: ignore[var-annotated]
                thread = threading.Thread(target=_serve_lean, args=(handler, port, ready, started))
                thread.start()
                if not ready.wait(10):
                    raise RuntimeError("lean relay did not start")
                loop = started[0][0]

                def stop_lean(loop: Any = loop, thread: threading.Thread = thread) -> None:
                    loop.call_soon_threadsafe(loop.stop)
                    thread.join()

                stop_relay = stop_lean
            else:
                controller = Controller(handler, hostname="127.0.0.1", port=port, decode_data=False)
                controller.start()
                stop_relay = controller.stop
            break
        except Exception as exc:
            stop_relay = None
            error = exc
    if stop_relay is None:
        conn.send(("error", repr(error)))
        return
    conn.send(("ready", port))
    try:
        while conn.recv() != "stop":
            pass
    finally:
        stop_relay()
        conn.send({"mails": handler.mails})


class Relay:
    def __init__(self, kind: str = "lean") -> None:
        ctx = mp.get_context("spawn")  # a clean interpreter, no threads inherited from here
        self.receipt_counter = ctx.Value("q", 0)
        self.total_counter = ctx.Value("q", 0)
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(
            target=relay_main,
            args=(child, self.receipt_counter, self.total_counter, kind),
            name="bench-relay",
        )
        self.port = 0

    def start(self, timeout: float = 30.0) -> Relay:
        self.process.start()
        if not self.conn.poll(timeout):
            raise TimeoutError("relay process did not start")
        status, value = self.conn.recv()
        if status != "ready":
            raise RuntimeError(f"relay failed to start: {value}")
        self.port = int(value)
        return self

    @property
    def receipts(self) -> int:
        return int(self.receipt_counter.value)

    @property
    def total(self) -> int:
        return int(self.total_counter.value)

    def stop(self) -> dict[str, Any]:
        report: dict[str, Any] = {}
        with contextlib.suppress(OSError, EOFError):
            self.conn.send("stop")
            if self.conn.poll(60):
                report = self.conn.recv()
        self.process.join(timeout=30)
        if self.process.is_alive():
            self.process.terminate()
        return report


# --------------------------------------------------------------------------- gateway set-up


def write_config(tmp: Path, smtp_port: int, relay_port: int, source: Path = REPO) -> Path:
    def q(path: Path) -> str:
        return json.dumps(str(path))  # a TOML basic string is a JSON string for paths

    text = f"""\
[service]
address = "{SERVICE_ADDRESS}"
name = "Servicesenteret"
case_prefix = "SSC"
language = "nb"
timezone = "Europe/Oslo"
phone = "73557900"
# High on purpose: the bench sends thousands of mails per sender per hour and wants every receipt.
receipt_limit_per_hour = 1000000
# No on_call_address: a critical out-of-hours mail would otherwise also send an alert,
# and the count check expects exactly one outgoing mail per message.

[storage]
path = {q(tmp / "var")}

[smtp]
host = "127.0.0.1"
port = {smtp_port}

[relay]
host = "127.0.0.1"
port = {relay_port}
timeout = 30
retry_initial_seconds = 1
retry_max_seconds = 5

[registry]
file = {q(source / "data" / "contacts.toml")}

[paths]
rules = {q(source / "rules")}
templates = {q(source / "templates")}
"""
    path = tmp / "gateway.toml"
    path.write_text(text, encoding="utf-8")
    return path


class Gateway:
    def __init__(self, config: Path, port: int, log: Path, env: dict[str, str]) -> None:
        self.config = config
        self.env = env
        self.port = port
        self.log_path = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> Gateway:
        self.log = open(self.log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gateway",
                "--config",
                str(self.config),
                "serve",
                "--port",
                str(self.port),
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=self.config.parent,
            env=self.env,
        )

        def accepting() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"gateway exited with {self.proc.returncode}:\n{tail}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return True
            except OSError:
                return False

        wait_for(accepting, timeout, f"the gateway to accept connections on port {self.port}")
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()
        return self.proc.returncode


# --------------------------------------------------------------------------- the load


class Client(threading.Thread):
    """One SMTP session sending a share of the messages back to back."""

    def __init__(
        self, port: int, batch: list[tuple[str, str, bytes, str]], start: threading.Barrier, deadline: float
    ) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.batch = batch
        self.start_barrier = start
        self.deadline = deadline
        self.timings: list[tuple[float, float]] = []  # (sendmail called, 250 received)
        self.failures: Counter[str] = Counter()
        self.sent_ids: list[tuple[str, str]] = []  # (Message-ID, envelope sender) of accepted mail

    def run(self) -> None:
        smtp: smtplib.SMTP | None = None
        try:
            smtp = smtplib.SMTP("127.0.0.1", self.port, timeout=120)
            smtp.ehlo("bench-client.example")
        except (OSError, smtplib.SMTPException) as exc:
            self.failures[f"connect: {exc}"] += len(self.batch)
            smtp = None
        self.start_barrier.wait()
        if smtp is None:
            return
        for _kind, sender, raw, message_id in self.batch:
            if time.monotonic() > self.deadline:
                self.failures["not sent: deadline"] += 1
                continue
            began = time.monotonic()
            try:
                smtp.sendmail(sender, [SERVICE_ADDRESS], raw)
            except smtplib.SMTPResponseException as exc:
                self.failures[f"{exc.smtp_code} {exc.smtp_error[:60]!r}"] += 1
                continue
            except (OSError, smtplib.SMTPException) as exc:
                self.failures[f"{type(exc).__name__}: {exc}"[:100]] += 1
                break
            self.timings.append((began, time.monotonic()))
            self.sent_ids.append((message_id, sender.lower()))
        with contextlib.suppress(OSError, smtplib.SMTPException):
            smtp.quit()


# --------------------------------------------------------------------------- main


def run(args: argparse.Namespace) -> dict[str, Any]:
    wall_started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="gw-bench-", dir=args.workdir))
    results: dict[str, Any] = {
        "messages": args.messages,
        "connections": args.connections,
        "preload": args.preload,
        "relay": args.relay,
        "host": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "workdir": str(tmp),
            # Other work on the machine skews every figure here: keep the load next to them.
            "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        },
    }
    env = dict(os.environ)
    if args.ref:
        source, sha = snapshot.export(args.ref, tmp / "src")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(source), env.get("PYTHONPATH", "")) if p)
        results["code"] = {"source": f"git {args.ref}", "commit": sha}
    else:
        source = REPO
        results["code"] = snapshot.describe_worktree()
    if args.reference:
        print("measuring the issue's yardstick (do-nothing aiosmtpd sink) ...", flush=True)
        results["reference"] = {"sink_msgs_per_s_before": round(reference.sink_rate(), 1)}
    relay = Relay(args.relay).start()
    gateway: Gateway | None = None
    tree: ProcessTree | None = None
    try:
        smtp_port = free_port()
        config = write_config(tmp, smtp_port, relay.port, source)
        db = tmp / "var" / "gateway.db"
        if args.preload:
            print(f"preloading {args.preload} cases ...", flush=True)
            results["preload_stats"] = preload(db, args.preload, env, source / "data" / "contacts.toml")
            print(f"  done in {results['preload_stats']['seconds']} s", flush=True)

        t = time.monotonic()
        run_id = f"{int(time.time())}{os.getpid()}"
        batch = generate(args.messages, run_id, seed=args.seed, registry=source / "data" / "contacts.toml")
        results["mix"] = dict(Counter(kind for kind, *_ in batch))
        results["mix_bytes"] = sum(len(raw) for _k, _s, raw, _m in batch)
        print(
            f"generated {len(batch)} messages ({results['mix_bytes'] / 1e6:.1f} MB) in"
            f" {time.monotonic() - t:.1f} s: {results['mix']}",
            flush=True,
        )

        gateway = Gateway(config, smtp_port, tmp / "gateway.log", env).start()
        before = db_counts(db)
        # CPU from here until just before the gateway stops: of `gateway serve` and its workers
        # (sampled every second, as a worker may be started late or restarted), of the relay
        # process and of this process (the client threads, and the polling below).
        tree = ProcessTree(gateway.pid).start_sampling()
        relay_cpu_before = proc_cpu_seconds(relay.process.pid)
        client_cpu_before = client_cpu_seconds()
        print(
            f"gateway pid {gateway.pid} on port {smtp_port}, relay on port {relay.port}; sending ...",
            flush=True,
        )

        deadline = time.monotonic() + args.timeout
        barrier = threading.Barrier(args.connections)
        clients = [
            Client(smtp_port, batch[i :: args.connections], barrier, deadline)
            for i in range(args.connections)
        ]
        for client in clients:
            client.start()
        last_report = time.monotonic()
        while any(c.is_alive() for c in clients):
            time.sleep(0.05)
            if time.monotonic() - last_report > 5:
                accepted = sum(len(c.timings) for c in clients)
                print(
                    f"  accepted {accepted}, receipts at relay {relay.receipts} ({relay.total} mails)",
                    flush=True,
                )
                last_report = time.monotonic()
        timings = [t for c in clients for t in c.timings]
        failures = sum((c.failures for c in clients), Counter())
        sent_pairs = [pair for c in clients for pair in c.sent_ids]
        first_send = min(b for b, _ in timings) if timings else time.monotonic()
        last_accept = max(e for _, e in timings) if timings else first_send
        print(
            f"  all sent: {len(timings)} accepted in {last_accept - first_send:.1f} s;"
            " waiting for receipts ...",
            flush=True,
        )

        incomplete = ""
        try:
            wait_for(
                lambda: relay.receipts >= len(timings),
                max(1.0, deadline - time.monotonic()),
                f"{len(timings)} receipts at the relay",
                interval=0.01,
            )
        except TimeoutError as exc:
            incomplete = str(exc)
            print(f"  {exc}", flush=True)
        # Let the outbox finish the rest (other kinds of mail) and mark its last rows sent; the
        # end-to-end figure is still taken at the last receipt.
        drained = True
        try:
            wait_for(
                lambda: run_outbox(db, before["max_outbox_id"])["queued"] == 0,
                max(10.0, deadline - time.monotonic()),
                "the outbox to drain",
                interval=0.1,
            )
        except TimeoutError as exc:
            drained = False
            print(f"  {exc}", flush=True)

        tree.stop_sampling()
        tree.sample()  # the last figures of every worker, while they are all still alive
        relay_cpu = proc_cpu_seconds(relay.process.pid) - relay_cpu_before
        client_cpu = client_cpu_seconds() - client_cpu_before
        processes = tree.by_role()
        cpu = sum(p["cpu_seconds"] for p in processes.values())
        after = db_counts(db)
        outbox = run_outbox(db, before["max_outbox_id"])
        code = gateway.stop()
        relay_report = relay.stop()
        relay = None  # type: ignore[assignment]

        mails = relay_report.get("mails", [])
        arrivals = sorted(at for at, irt, _r in mails if irt.startswith("<bench."))
        all_arrivals = sorted(at for at, _i, _r in mails)
        got_receipt = {(irt, rcpt) for _a, irt, rcpts in mails for rcpt in rcpts}
        missing_receipts = [m for m, sender in sent_pairs if (m, sender) not in got_receipt]
        latencies = sorted((e - b) * 1000 for b, e in timings)
        accepted = len(timings)
        last_receipt = arrivals[-1] if arrivals else float("nan")
        e2e_seconds = last_receipt - first_send
        complete = bool(arrivals) and len(arrivals) >= accepted and not incomplete
        accept_seconds = last_accept - first_send
        new_cases = after["cases"] - before["cases"]
        log_text = (tmp / "gateway.log").read_text(errors="replace")
        checks = {
            "accepted == N": accepted == args.messages,
            "cases == N": new_cases == args.messages,
            "outbox sent to the requester == N": outbox["sent_to_requester"] == args.messages,
            "receipts at relay == N": len(arrivals) == args.messages,
            "every message got a receipt to its sender": not missing_receipts and bool(sent_pairs),
            "outbox drained, nothing failed": drained and outbox["queued"] == 0 and outbox["failed"] == 0,
        }
        results.update(
            {
                "accepted": accepted,
                "failures": dict(failures),
                "incomplete": incomplete,
                "receipts_at_relay": len(arrivals),
                "other_mail_at_relay": len(mails) - len(arrivals),
                "missing_receipts_sample": missing_receipts[:5],
                "e2e_seconds": round(e2e_seconds, 3),
                # Only meaningful when every receipt arrived; otherwise null and "incomplete" says why.
                "e2e_msgs_per_s": round(accepted / e2e_seconds, 1) if complete else None,
                "accept_seconds": round(accept_seconds, 3),
                "accept_msgs_per_s": round(accepted / accept_seconds, 1) if accept_seconds > 0 else 0.0,
                "outbox_drain_after_last_accept_s": round(last_receipt - last_accept, 3)
                if complete
                else None,
                "first_receipt_after_first_send_s": round(arrivals[0] - first_send, 3) if arrivals else None,
                "all_mail_at_relay_after_first_send_s": round(all_arrivals[-1] - first_send, 3)
                if all_arrivals
                else None,
                "latency_ms": {
                    "p50": round(percentile(latencies, 50), 2),
                    "p90": round(percentile(latencies, 90), 2),
                    "p99": round(percentile(latencies, 99), 2),
                    "max": round(latencies[-1], 2) if latencies else None,
                    "mean": round(sum(latencies) / len(latencies), 2) if latencies else None,
                },
                "gateway": {
                    # Totals over `gateway serve` and its worker processes (the per-process
                    # figures follow): CPU is the sum, peak_rss_mb the sum of each process's own
                    # peak (an upper bound, as the peaks need not coincide) and rss_end_mb the sum
                    # at the end.
                    "peak_rss_mb": round(sum(p["peak_rss_mb"] for p in processes.values()), 1),
                    "rss_end_mb": round(sum(p["rss_end_mb"] for p in processes.values()), 1),
                    "cpu_seconds": round(cpu, 2),
                    "cpu_utilisation": round(cpu / e2e_seconds, 2) if complete else None,
                    **processes,
                    "exit_code": code,
                    "log_errors": sum(1 for line in log_text.splitlines() if " ERROR " in line),
                    "log_warnings": sum(1 for line in log_text.splitlines() if " WARNING " in line),
                },
                "harness": {
                    "relay_cpu_seconds": round(relay_cpu, 2),
                    "client_cpu_seconds": round(client_cpu, 2),
                },
                "db": {
                    "before": before,
                    "after": after,
                    "new_cases": new_cases,
                    "run_outbox": outbox,
                    "db_bytes": db.stat().st_size,
                },
                "checks": checks,
                "ok": all(checks.values()) and not incomplete,
                "target_msgs_per_s": args.target,
                "wall_seconds": round(time.monotonic() - wall_started, 1),
                "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
            }
        )
        return results
    finally:
        if tree is not None:
            tree.stop_sampling()
        if gateway is not None:
            gateway.stop()
        if relay is not None:
            relay.stop()
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def scale(results: dict[str, Any], after: float) -> None:
    """The end-to-end figure in the issue's units: as if the sink ran at the issue's 1,600 msg/s."""
    ref = results["reference"]
    ref["sink_msgs_per_s_after"] = round(after, 1)
    ref["sink_msgs_per_s"] = round((ref["sink_msgs_per_s_before"] + after) / 2, 1)
    ref["issue_sink_msgs_per_s"] = reference.ISSUE_SINK_MSGS_PER_S
    e2e = results.get("e2e_msgs_per_s")
    ref["e2e_scaled_msgs_per_s"] = (
        round(e2e * reference.ISSUE_SINK_MSGS_PER_S / ref["sink_msgs_per_s"], 1) if e2e else None
    )


def summary(r: dict[str, Any]) -> str:
    lat = r["latency_ms"]
    gw = r["gateway"]
    harness = r["harness"]
    roles = [*ProcessTree.ROLES, *(["other"] if "other" in gw else [])]
    per_process = ", ".join(f"{role} {gw[role]['cpu_seconds']} s" for role in roles)
    lines = [
        "",
        f"gateway SMTP throughput: {r['accepted']}/{r['messages']} messages over {r['connections']}"
        f" connections, preload {r['preload']} cases, {r.get('relay', 'aiosmtpd')} relay",
        f"  code                {r['code']}",
        f"  mix                 {r['mix']}  ({r['mix_bytes'] / 1e6:.1f} MB)",
    ]
    if r.get("preload_stats"):
        p = r["preload_stats"]
        lines.append(
            f"  preload             {p['cases']} cases in {p['seconds']} s, DB {p['db_bytes'] / 1e6:.0f} MB"
        )
    e2e = r["e2e_msgs_per_s"]
    lag = r["outbox_drain_after_last_accept_s"]
    lines += [
        (
            f"  end to end          {e2e:>8.1f} msg/s  ({r['e2e_seconds']:.2f} s first send -> last receipt)"
            if e2e is not None
            else f"  end to end               n/a  (only {r['receipts_at_relay']} receipts arrived)"
        ),
        f"  accept only         {r['accept_msgs_per_s']:>8.1f} msg/s"
        f"  ({r['accept_seconds']:.2f} s first send -> last 250)",
        f"  outbox lag          {lag if lag is not None else 'n/a':>8} s after the last 250",
        f"  accept latency      p50 {lat['p50']:.1f} ms  p90 {lat['p90']:.1f} ms  p99 {lat['p99']:.1f} ms"
        f"  max {lat['max']} ms",
        f"  gateway             CPU {gw['cpu_seconds']} s in all ({gw['cpu_utilisation']} cores busy),"
        f" peak RSS {gw['peak_rss_mb']} MB summed, {gw['log_errors']} errors in log, exit {gw['exit_code']}",
        f"    CPU by process    {per_process}; harness: relay {harness['relay_cpu_seconds']} s,"
        f" client {harness['client_cpu_seconds']} s",
        f"  database            +{r['db']['new_cases']} cases, quarantine {r['db']['after']['quarantine']},"
        f" {r['db']['db_bytes'] / 1e6:.0f} MB; this run's outbox {r['db']['run_outbox']['by_kind']}",
        f"  relay               {r['receipts_at_relay']} receipts + {r['other_mail_at_relay']} other mails"
        f" (all in {r['all_mail_at_relay_after_first_send_s']} s)",
    ]
    if r["failures"]:
        lines.append(f"  send failures       {r['failures']}")
    if r["incomplete"]:
        lines.append(f"  INCOMPLETE          {r['incomplete']}")
    for name, passed in r["checks"].items():
        lines.append(f"  check {'ok  ' if passed else 'FAIL'}          {name}")
    verdict = "meets" if e2e is not None and e2e >= r["target_msgs_per_s"] else "BELOW"
    lines.append(f"  target              {verdict} the {r['target_msgs_per_s']} msg/s end-to-end target")
    if r.get("reference"):
        ref = r["reference"]
        scaled = ref["e2e_scaled_msgs_per_s"]
        lines.append(
            f"  yardstick           do-nothing aiosmtpd sink, one connection: {ref['sink_msgs_per_s_before']}"
            f" msg/s before, {ref['sink_msgs_per_s_after']} after (the issue's machine: ~"
            f"{ref['issue_sink_msgs_per_s']:.0f})"
        )
        if scaled is not None:
            verdict = "meets" if scaled >= r["target_msgs_per_s"] else "BELOW"
            lines.append(f"  scaled to it        {scaled:>8.1f} msg/s end to end: {verdict} the target")
    lines.append(
        f"  wall time           {r['wall_seconds']} s; load average {r['host']['loadavg_at_start']} at start,"
        f" {r['loadavg_at_end']} at end ({r['host']['cpus']} CPUs)"
    )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=5000, help="messages to send (default 5000)")
    parser.add_argument("--connections", type=int, default=8, help="concurrent SMTP sessions (default 8)")
    parser.add_argument(
        "--preload",
        type=int,
        default=0,
        metavar="CASES",
        help="fill the store with this many existing cases first",
    )
    parser.add_argument("--json", metavar="OUT", help="write the figures to this JSON file")
    parser.add_argument(
        "--timeout",
        type=float,
        default=150.0,
        help="seconds from the first send until every receipt must be in (default 150)",
    )
    parser.add_argument("--target", type=float, default=500.0, help="end-to-end msg/s to compare against")
    parser.add_argument(
        "--relay",
        choices=("lean", "aiosmtpd"),
        default="lean",
        help="the loopback relay: a minimal asyncio SMTP sink standing in for a C MTA (default), or"
        " aiosmtpd, whose CPU per mail is counted against the same 2 cores",
    )
    parser.add_argument(
        "--no-reference",
        dest="reference",
        action="store_false",
        help="skip measuring the do-nothing sink before and after (see reference.py)",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed for the message mix")
    parser.add_argument("--workdir", help="parent of the temp dir (default: the system temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (DB, gateway.log)")
    parser.add_argument(
        "--ref",
        help="benchmark this git ref (e.g. HEAD) exported to the temp dir, not the live working tree",
    )
    args = parser.parse_args()
    if args.messages < 1 or args.connections < 1:
        parser.error("--messages and --connections must be at least 1")
    if not GATEWAY_BIN.exists():  # `python -m gateway` below needs the project's dependencies
        parser.error(f"{GATEWAY_BIN} not found: run with the project's .venv/bin/python")
    try:
        results = run(args)
    except (RuntimeError, TimeoutError, subprocess.CalledProcessError) as exc:
        print(f"benchmark could not run: {exc}", file=sys.stderr)
        return 2
    if args.reference:
        scale(results, reference.sink_rate())
    print(summary(results))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
        print(f"  figures written to  {args.json}")
    return 0 if results["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
