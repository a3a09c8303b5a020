"""How fast does `gateway fetch` drain a backlog? N mixed messages in a private Dovecot, one cron run.

    .venv/bin/python bench/imap_drain.py [--messages 10000] [--batch-size 200] [--profile OUT.pstats]
                                         [--json OUT] [--keep]

What runs (all on loopback, in a temp dir removed afterwards unless --keep):
  * a private Dovecot from tests/imapserver.py, filled with N messages from mailmix.py (registered
    contact points, so every message opens a case and queues a receipt) using MULTIAPPEND;
  * the real `gateway --config <tmp>/gateway.toml fetch` as a subprocess, without a [relay], so
    receipts are written (and fsync'd) as .eml files under <tmp>/var/outgoing.
The clock starts when the subprocess is started. "drain" ends at the last imap_seen row (every
message processed, recorded and moved); "total" ends when the process exits, after its outbox
flush. Peak memory is the subprocess's VmHWM, read from /proc while it runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import pstats
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mailmix import REPO, SERVICE_ADDRESS, generate

from tests.imapserver import Dovecot, dovecot_available


def write_config(tmp: Path, server: Dovecot, batch_size: int) -> Path:
    def q(value: object) -> str:
        return json.dumps(str(value))  # a TOML basic string is a JSON string

    text = f"""\
[service]
address = "{SERVICE_ADDRESS}"
name = "Servicesenteret"
case_prefix = "SSC"
language = "nb"
timezone = "Europe/Oslo"
phone = "73557900"
# Thousands of mails per sender in one run: the loop brake would otherwise stop the receipts.
receipt_limit_per_hour = 1000000

[storage]
path = {q(tmp / "var")}

[registry]
file = {q(REPO / "data" / "contacts.toml")}

[paths]
rules = {q(REPO / "rules")}
templates = {q(REPO / "templates")}

[imap]
host = {q(server.host)}
port = {server.port}
ssl = "none"
username = {q(server.username)}
password = {q(server.password)}
batch_size = {batch_size}
timeout = 60
"""
    path = tmp / "gateway.toml"
    path.write_text(text, encoding="utf-8")
    return path


def fill(server: Dovecot, count: int, run_id: str) -> dict[str, Any]:
    """MULTIAPPEND the mix into INBOX, 200 at a time; returns what went in."""
    started = time.monotonic()
    batch = generate(count, run_id)
    kinds: dict[str, int] = {}
    total_bytes = 0
    with server.client() as client:
        for start in range(0, count, 200):
            chunk = [raw for _kind, _sender, raw, _mid in batch[start : start + 200]]
            client.multiappend("INBOX", chunk)
    for kind, _sender, raw, _mid in batch:
        kinds[kind] = kinds.get(kind, 0) + 1
        total_bytes += len(raw)
    return {"seconds": round(time.monotonic() - started, 1), "kinds": kinds, "bytes": total_bytes}


def vm_hwm_kb(pid: int) -> int:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def run_fetch(config: Path, log: Path, profile: Path | None) -> dict[str, Any]:
    command = [sys.executable]
    if profile is not None:
        command += ["-m", "cProfile", "-o", str(profile)]
    command += ["-m", "gateway", "--config", str(config), "fetch"]
    started_wall = time.time()
    started = time.monotonic()
    with log.open("wb") as stderr:
        process = subprocess.Popen(command, cwd=REPO, stdout=stderr, stderr=stderr)
        peak = 0
        while process.poll() is None:
            peak = max(peak, vm_hwm_kb(process.pid))
            time.sleep(0.05)
    return {
        "exit": process.returncode,
        "seconds": time.monotonic() - started,
        "started_wall": started_wall,
        "peak_kb": peak,
    }


def db_figures(database: Path) -> dict[str, Any]:
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        one = lambda sql: conn.execute(sql).fetchone()[0]  # noqa: E731
        return {
            "cases": one("SELECT count(*) FROM cases"),
            "messages_in": one("SELECT count(*) FROM messages WHERE direction = 'in'"),
            "imap_seen": dict(conn.execute("SELECT outcome, count(*) FROM imap_seen GROUP BY outcome")),
            "outbox": dict(conn.execute("SELECT kind || ':' || status, count(*) FROM outbox GROUP BY 1")),
            "last_seen_at": one("SELECT max(seen_at) FROM imap_seen"),
            "quarantine": one("SELECT count(*) FROM quarantine"),
        }
    finally:
        conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument("--profile", type=Path, help="run the fetch under cProfile, stats to this file")
    parser.add_argument("--json", type=Path, help="write the figures here as well")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = parser.parse_args()
    if not dovecot_available():
        print("Dovecot 2.3 is not installed (run .ci/install-dovecot as root)", file=sys.stderr)
        return 69
    tmp = Path(tempfile.mkdtemp(prefix="imap-drain-"))
    server = Dovecot(tmp / "dovecot")
    try:
        server.start()
        filled = fill(server, args.messages, run_id=f"{int(time.time())}")
        megabytes = filled["bytes"] / 1e6
        print(f"filled INBOX with {args.messages} messages ({megabytes:.1f} MB) in {filled['seconds']} s")
        config = write_config(tmp, server, args.batch_size)
        run = run_fetch(config, tmp / "fetch.log", args.profile)
        figures = db_figures(tmp / "var" / "gateway.db")
        drain_end = datetime.fromisoformat(figures["last_seen_at"]).timestamp()
        drain_seconds = drain_end - run["started_wall"]
        left = len(server.folder_uids("INBOX"))
        processed = len(server.folder_uids("Processed"))
        outgoing = len(list((tmp / "var" / "outgoing").glob("*.eml")))
        results = {
            "messages": args.messages,
            "batch_size": args.batch_size,
            "exit": run["exit"],
            "drain_seconds": round(drain_seconds, 2),
            "drain_msg_per_s": round(args.messages / drain_seconds, 1),
            "total_seconds": round(run["seconds"], 2),
            "total_msg_per_s": round(args.messages / run["seconds"], 1),
            "peak_rss_mb": round(run["peak_kb"] / 1024, 1),
            "inbox_left": left,
            "processed_folder": processed,
            "outgoing_files": outgoing,
            "mix": filled["kinds"],
            **{k: v for k, v in figures.items() if k != "last_seen_at"},
            "profiled": args.profile is not None,
        }
        report(results)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")
        if args.profile:
            stats = pstats.Stats(str(args.profile))
            stats.sort_stats("cumulative").print_stats(30)
            stats.sort_stats("tottime").print_stats(20)
        ok = run["exit"] == 0 and left == 0 and figures["cases"] == args.messages
        return 0 if ok else 1
    finally:
        server.close()
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def report(r: dict[str, Any]) -> None:
    print(
        f"\n`gateway fetch` of {r['messages']} messages (batch {r['batch_size']}, exit {r['exit']})\n"
        f"  drain (processed, recorded, moved)  {r['drain_seconds']:>8} s  {r['drain_msg_per_s']:>7} msg/s\n"
        f"  total (incl. outbox flush to files) {r['total_seconds']:>8} s  {r['total_msg_per_s']:>7} msg/s\n"
        f"  peak memory of the fetch (VmHWM)    {r['peak_rss_mb']:>8} MB\n"
        f"  INBOX left {r['inbox_left']}, Processed {r['processed_folder']}, cases {r['cases']},"
        f" inbound messages {r['messages_in']}, quarantine {r['quarantine']}\n"
        f"  imap_seen {r['imap_seen']}\n  outbox {r['outbox']}, .eml files {r['outgoing_files']}"
        + ("\n  (under cProfile: figures are slower than a plain run)" if r["profiled"] else "")
    )


if __name__ == "__main__":
    sys.exit(main())
