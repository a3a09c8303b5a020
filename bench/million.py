"""A million cases in one sitting: intake against an empty and a preloaded store, search, digest,
backup, a Litestream restore and the bytes per case (not a test; about 20 minutes on 2 cores).

    .venv/bin/python bench/million.py [--cases 1000000] [--messages 5000] [--json OUT]

The store is filled by bench/preload.py (direct SQL into the gateway's own schema, with follow-up
messages), inside smtp_throughput.py's `--preload` run, whose temp dir is kept for the rest.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from gateway.core.config import load_config  # noqa: E402
from gateway.reports.digest import build  # noqa: E402
from gateway.reports.figures import latest_period  # noqa: E402
from gateway.runtime import Runtime  # noqa: E402

GATEWAY = Path(sys.executable).parent / "gateway"
LITESTREAM = shutil.which("litestream") or str(Path(sys.executable).with_name("litestream"))


def intake(messages: int, preload: int, workdir: Path) -> dict[str, Any]:
    """One smtp_throughput.py run (16 connections); its temp dir is kept for what follows."""
    out = workdir / f"intake-{preload}.json"
    command = [sys.executable, str(REPO / "bench" / "smtp_throughput.py"), "--messages", str(messages)]
    command += ["--connections", "16", "--no-reference", "--keep", "--workdir", str(workdir)]
    command += ["--preload", str(preload), "--json", str(out)]
    subprocess.run(command, check=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    return json.loads(out.read_text())


def timed(action: Any) -> tuple[float, Any]:
    began = time.perf_counter()
    result = action()
    return round(time.perf_counter() - began, 3), result


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([str(GATEWAY), "--config", str(config), *args], check=True, capture_output=True)


def search(config: Path) -> dict[str, Any]:
    """`gateway cases search` as an agent types it: a common word, a rare one, two words, per org."""
    figures = {}
    for label, args in (
        ("common word", ("ruter",)),
        ("rare word", ("brannmur", "--status", "open")),
        ("two words", ("skriver avdeling",)),
        ("word and org", ("fiber", "--org", "nordby-skole")),
    ):
        seconds, done = timed(lambda a=args: cli(config, "cases", "search", *a, "--json"))
        figures[label] = {"seconds": seconds, "rows": len(json.loads(done.stdout))}
    return figures


def digest(config_path: Path) -> dict[str, Any]:
    config = load_config(config_path)
    runtime = Runtime(config)
    try:
        now = datetime.now(UTC)
        period = latest_period("daily", now, runtime.calendar)
        seconds, _ = timed(lambda: build(runtime, period, "agents", now))
        weekly = latest_period("weekly", now, runtime.calendar)
        weekly_seconds, _ = timed(lambda: build(runtime, weekly, "agents", now))
    finally:
        runtime.close()
    return {"daily_seconds": seconds, "weekly_seconds": weekly_seconds}


def litestream(db: Path, work: Path) -> dict[str, Any]:
    """Replicate to a file replica until the first snapshot is shipped, then time a restore."""
    replica, yml = work / "replica", work / "litestream.yml"
    yml.write_text(f"dbs:\n  - path: {db}\n    replica:\n      type: file\n      path: {replica}\n")
    began = time.perf_counter()
    log = (work / "litestream.log").open("wb")
    proc = subprocess.Popen([LITESTREAM, "replicate", "-config", str(yml)], stdout=log, stderr=log)
    try:
        while not list((replica / "ltx").glob("*/*.ltx")):
            if proc.poll() is not None or time.perf_counter() - began > 3600:
                raise RuntimeError("litestream shipped no snapshot")
            time.sleep(1)
        snapshot = round(time.perf_counter() - began, 1)
    finally:
        proc.terminate()
        proc.wait()
        log.close()
    target = work / "restored" / "gateway.db"
    seconds, _ = timed(
        lambda: subprocess.run([LITESTREAM, "restore", "-o", str(target), f"file://{replica}"], check=True)
    )
    replica_bytes = sum(p.stat().st_size for p in replica.rglob("*") if p.is_file())
    return {"first_snapshot_seconds": snapshot, "restore_seconds": seconds, "replica_bytes": replica_bytes}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1_000_000)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "million-latest.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gw-million-"))
    try:
        results: dict[str, Any] = {"cases": args.cases, "loadavg_at_start": os.getloadavg()}
        empty = intake(args.messages, 0, work)
        shutil.rmtree(empty["host"]["workdir"], ignore_errors=True)
        full = intake(args.messages, args.cases, work)
        store = Path(full["host"]["workdir"])
        config, db = store / "gateway.toml", store / "var" / "gateway.db"
        results["intake"] = {
            "empty_msgs_per_s": empty["e2e_msgs_per_s"],
            "preloaded_msgs_per_s": full["e2e_msgs_per_s"],
            "ratio": round(full["e2e_msgs_per_s"] / empty["e2e_msgs_per_s"], 3),
            "latency_ms": {"empty": empty["latency_ms"], "preloaded": full["latency_ms"]},
            "ok": empty["ok"] and full["ok"],
        }
        results["preload"] = full["preload_stats"]
        results["search"] = search(config)
        results["digest"] = digest(config)
        seconds, _ = timed(lambda: cli(config, "backup", str(work / "backup")))
        results["backup_seconds"] = seconds
        results["litestream"] = litestream(db, work)
        size = sum(p.stat().st_size for p in db.parent.glob("gateway.db*"))
        results["db_bytes"] = size
        results["bytes_per_case"] = round(size / args.cases)
        results["loadavg_at_end"] = os.getloadavg()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
