"""Memory under a burst of big mail: N clients each send one large message to `gateway serve` at once.

    .venv/bin/python bench/stress.py [--clients 8] [--megabytes 24] [--deadline 300] [--json OUT]

The real `gateway serve` runs as a subprocess (storage in a temp dir, a recording relay in this
process). Each client sends one message of the given size and, as an MTA would, sends it again
when the gateway answers 4xx, until it gets 250 or the deadline passes. A sampler adds up the
resident memory (VmRSS) of serve and its worker processes every 50 ms. Printed: the baseline
before the burst, the combined peak during it, what is held once every message is stored and
the outbox drained, and how often each client was asked to retry. Exit 0 when every message
was accepted within the deadline.
"""

from __future__ import annotations

import argparse
import json
import os
import smtplib
import sqlite3
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from smtp_throughput import Gateway, ProcessTree, child_pids, free_port, proc_status, wait_for, write_config

from tests.support import RecordingRelay

REPO = Path(__file__).resolve().parent.parent
SENDER = "kari.nordmann@nordby-skole.example"


def big_message(index: int, size: int) -> bytes:
    """A customer's mail with a base64-looking attachment of about `size` bytes."""
    head = (
        f"From: Kari Nordmann <{SENDER}>\r\nTo: kontakt@service.example\r\n"
        f"Subject: Logg fra ruteren {index}\r\n"
        f"Message-ID: <stress-{index}-{time.time_ns()}@nordby-skole.example>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
        "--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nNettet er nede, loggen ligger ved.\r\n"
        "--b\r\nContent-Type: application/octet-stream; name=logg.bin\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\n"
    ).encode()
    line = (bytes(range(65, 91)) * 3)[:76] + b"\r\n"
    return head + line * (size // len(line)) + b"--b--\r\n"


def combined_rss_mb(root: int) -> float:
    return sum(proc_status(pid).get("VmRSS", 0) for pid in [root, *child_pids(root)]) / 1024


class Sampler:
    """The combined VmRSS of serve's processes, every interval, keeping the peak."""

    def __init__(self, root: int, interval: float = 0.05) -> None:
        self.root, self.interval, self.peak = root, interval, 0.0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stopping.wait(self.interval):
            self.peak = max(self.peak, combined_rss_mb(self.root))

    def __enter__(self) -> Sampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.thread.join(timeout=5)


def send_until_accepted(port: int, raw: bytes, deadline: float) -> dict[str, Any]:
    """Send, and again after each 4xx, as an MTA would; the answers it got."""
    answers: list[int] = []
    while time.monotonic() < deadline:
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=120) as client:
                client.sendmail(SENDER, ["kontakt@service.example"], raw)
            answers.append(250)
            break
        except smtplib.SMTPResponseException as exc:
            answers.append(exc.smtp_code)
            if exc.smtp_code >= 500:
                break
        except smtplib.SMTPException as exc:  # refused connection, 421 at greeting and the like
            answers.append(getattr(exc, "smtp_code", 0) or 421)
        time.sleep(0.5)  # an MTA waits minutes; the bench waits a moment
    return {"answers": answers, "accepted": answers[-1:] == [250]}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--megabytes", type=float, default=24.0)
    parser.add_argument("--deadline", type=float, default=300.0, help="seconds for the whole burst")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--budget", type=int, help="smtp.max_bytes_in_flight (default: the gateway's)")
    args = parser.parse_args()
    relay = RecordingRelay().start()
    with tempfile.TemporaryDirectory(prefix="gateway-stress-") as tmp:
        port = free_port()
        config = write_config(Path(tmp), port, relay.port)
        if args.budget:
            text = config.read_text().replace("[smtp]\n", f"[smtp]\nmax_bytes_in_flight = {args.budget}\n", 1)
            config.write_text(text)
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        gateway = Gateway(config, port, Path(tmp) / "serve.log", env).start()
        try:
            results = burst(gateway, port, args, Path(tmp) / "var" / "gateway.db")
        finally:
            gateway.stop()
            relay.stop()
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0 if all(r["accepted"] for r in results["clients"]) else 1


def burst(gateway: Gateway, port: int, args: argparse.Namespace, db: Path) -> dict[str, Any]:
    size = int(args.megabytes * 1_000_000)
    messages = [big_message(i, size) for i in range(args.clients)]
    baseline = combined_rss_mb(gateway.pid)
    deadline = time.monotonic() + args.deadline
    started = time.monotonic()
    tree = ProcessTree(gateway.pid).start_sampling(0.2)
    with Sampler(gateway.pid) as sampler, ThreadPoolExecutor(args.clients) as pool:
        clients = list(pool.map(lambda raw: send_until_accepted(port, raw, deadline), messages))
        burst_seconds = time.monotonic() - started

        def drained() -> bool:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
                return conn.execute("SELECT count(*) FROM outbox WHERE status = 'queued'").fetchone()[0] == 0

        wait_for(drained, 120, "the outbox to drain")
    after = combined_rss_mb(gateway.pid)
    tree.sample()
    tree.stop_sampling()
    roles = {role: {k: f[k] for k in ("peak_rss_mb", "rss_end_mb")} for role, f in tree.by_role().items()}
    return {
        "clients": clients,
        "message_mb": args.megabytes,
        "burst_seconds": round(burst_seconds, 1),
        "baseline_rss_mb": round(baseline, 1),
        "peak_combined_rss_mb": round(sampler.peak, 1),
        "after_rss_mb": round(after, 1),
        "by_process": roles,
        "asked_to_retry": sum(a != 250 for c in clients for a in c["answers"]),
    }


if __name__ == "__main__":
    sys.exit(main())
