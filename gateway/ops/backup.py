"""`gateway backup` and `gateway restore`: a consistent copy of a running store, and putting one back."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
from pathlib import Path
from typing import Any

from gateway.core import clock
from gateway.core.config import Config
from gateway.core.progress import Tick, quiet
from gateway.ops.lock import LockHeld, ServeLock
from gateway.store.database import open_store

MANIFEST = "manifest.json"
DATABASE = "gateway.db"
OUTGOING = "outgoing"
COUNTED = ("cases", "messages", "raw_messages", "outbox", "quarantine", "events")

# sysexits.h, as the rest of the CLI uses them.
EX_DATAERR, EX_NOINPUT, EX_CANTCREAT, EX_TEMPFAIL = 65, 66, 73, 75


class BackupError(Exception):
    """A backup or restore that cannot go ahead; `code` is the exit status to report."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def backup(config: Config, dest: Path, tick: Tick = quiet) -> dict[str, Any]:
    """Copy the database (raw mail included) and outgoing files into `dest`, with a manifest."""
    source = config.storage.database
    if not source.exists():
        raise BackupError(f"no database at {source}", EX_NOINPUT)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise BackupError(f"{dest} exists and is not empty", EX_CANTCREAT)
    dest.mkdir(parents=True, exist_ok=True)
    copy = dest / DATABASE
    live = sqlite3.connect(str(source), timeout=config.storage.busy_timeout_ms / 1000)
    target = sqlite3.connect(str(copy), isolation_level=None)
    tick(0, 0)  # the database is one step of unknown length
    try:
        # One step (pages=-1) reads the whole database in one read transaction: a consistent
        # snapshot, while WAL lets the running gateway go on writing.
        live.backup(target, pages=-1)
        # A backup is one self-contained file, not a database with a WAL beside it.
        target.execute("PRAGMA journal_mode = DELETE")
        manifest = describe_database(target)
    finally:
        target.close()
        live.close()
    manifest |= {"created_at": clock.iso(), "source": str(source), "sha256": _sha256(copy)}
    manifest["outgoing_files"] = _copy_outgoing(config.storage.outgoing, dest / OUTGOING, tick)
    _fsync(copy)
    _write_manifest(dest / MANIFEST, manifest)
    return manifest


def describe_database(conn: sqlite3.Connection) -> dict[str, Any]:
    """What a manifest says about a database: its check, migrations and row counts."""
    check = conn.execute("PRAGMA quick_check").fetchone()[0]
    migrations = [
        row[0]
        for row in conn.execute(
            "SELECT name FROM _sqlite_migrations WHERE migration_set = 'gateway' ORDER BY id"
        )
    ]
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    counts = {
        name: conn.execute(f"SELECT count(*) FROM {name}").fetchone()[0] for name in COUNTED if name in tables
    }
    return {"check": check, "migrations": migrations, "counts": counts}


def restore(config: Config, source: Path, force: bool = False) -> dict[str, Any]:
    """Put a backup back; never while a `gateway serve` holds the store, never over one without force."""
    manifest = _read_manifest(source)
    copy = source / DATABASE
    if manifest.get("sha256") and _sha256(copy) != manifest["sha256"]:
        raise BackupError(f"{copy}: checksum differs from the manifest", EX_DATAERR)
    lock = ServeLock(config.storage.path)
    try:
        # Holding the serve lock ourselves also keeps a `gateway serve` from starting mid-restore.
        lock.acquire("gateway restore")
    except LockHeld as exc:
        raise BackupError(f"refusing to restore over a live store: {exc}", EX_TEMPFAIL) from None
    try:
        target = config.storage.database
        if target.exists() and not force:
            raise BackupError(f"{target} exists; restore --force replaces it", EX_CANTCREAT)
        _copy_database(copy, target, config.storage.busy_timeout_ms)
        outgoing = _copy_outgoing(source / OUTGOING, config.storage.outgoing)
        # Opening the store applies any migrations newer than the backup.
        store = open_store(config.storage)
        try:
            restored = describe_database(store.conn)
            restored["integrity"] = store.conn.execute("PRAGMA integrity_check").fetchone()[0]
        finally:
            store.close()
    finally:
        lock.release()
    return restored | {"outgoing_files": outgoing, "backup_created_at": manifest.get("created_at")}


def _copy_database(copy: Path, target: Path, busy_timeout_ms: int) -> None:
    backup_conn = sqlite3.connect(f"{copy.resolve().as_uri()}?mode=ro", uri=True)
    try:
        if backup_conn.execute("PRAGMA quick_check").fetchone()[0] != "ok":
            raise BackupError(f"{copy} fails SQLite's quick_check", EX_DATAERR)
        target.parent.mkdir(parents=True, exist_ok=True)
        # The backup API writes through SQLite's own locking and WAL, so no stale -wal file
        # beside the target can ever be replayed over the restored pages.
        live = sqlite3.connect(str(target), timeout=busy_timeout_ms / 1000)
        try:
            backup_conn.backup(live, pages=-1)
        finally:
            live.close()
    finally:
        backup_conn.close()


def _copy_outgoing(source: Path, dest: Path, tick: Tick = quiet) -> int:
    """Copy .eml files not already there; the outbox writes them whole, so half files never exist."""
    if not source.is_dir():
        return 0
    dest.mkdir(parents=True, exist_ok=True)
    copied = 0
    files = sorted(source.glob("*.eml"))
    for done, path in enumerate(files, 1):
        if not (dest / path.name).exists():
            shutil.copy2(path, dest / path.name)
            copied += 1
        tick(done, len(files))
    return copied


def _read_manifest(source: Path) -> dict[str, Any]:
    try:
        manifest: dict[str, Any] = json.loads((source / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BackupError(f"{source}: no {MANIFEST}, not a gateway backup", EX_NOINPUT) from None
    except (OSError, ValueError) as exc:
        raise BackupError(f"{source / MANIFEST}: unreadable ({exc})", EX_DATAERR) from None
    if not (source / DATABASE).is_file():
        raise BackupError(f"{source}: no {DATABASE}", EX_NOINPUT)
    return manifest


def _write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    _fsync(tmp)
    os.replace(tmp, path)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())
