"""Backups are consistent while mail keeps arriving, and a restore never replaces a live store."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

import pytest

from gateway.cli.main import main
from gateway.core.config import Config, load_config
from gateway.ops.backup import BackupError, backup, restore
from gateway.ops.server import Server
from gateway.pipeline.process import process
from gateway.runtime import Runtime
from gateway.store.database import StorageUnavailable
from tests.support import mail, wait_for, write_config


def _rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(db)
    try:
        return list(conn.execute(sql))
    finally:
        conn.close()


class Writer(threading.Thread):
    """Keeps feeding new mail through the pipeline until told to stop (bounded, so it always ends)."""

    def __init__(self, runtime: Runtime, limit: int = 3000) -> None:
        super().__init__(name="writer")
        self.runtime = runtime
        self.limit = limit
        self.stored = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set() and self.stored < self.limit:
            result = process(
                self.runtime, mail(message_id=f"<load-{self.stored}@nordby-skole.example>"), "smtp"
            )
            assert result.outcome == "opened"
            self.stored += 1


def _restored_config(tmp_path: Path) -> Config:
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    return load_config(write_config(folder))


def test_backup_taken_under_load_restores_a_consistent_subset(
    tmp_path: Path, config: Config, runtime: Runtime
) -> None:
    """A backup taken while messages keep being stored restores to a whole, checked prefix of the store."""
    writer = Writer(runtime)
    writer.start()
    try:
        wait_for(lambda: writer.stored >= 20, what="the writer to get going")
        manifest = backup(config, tmp_path / "backup")
        taken = manifest["counts"]["messages"]
        wait_for(lambda: writer.stored > taken, what="writes after the backup")
    finally:
        writer.stopping.set()
        writer.join(timeout=60)
    assert manifest["check"] == "ok" and "m005_search" in manifest["migrations"]
    assert json.loads((tmp_path / "backup" / "manifest.json").read_text())["sha256"] == manifest["sha256"]

    target = _restored_config(tmp_path)
    restored = restore(target, tmp_path / "backup")
    assert restored["integrity"] == "ok"
    assert restored["counts"] == manifest["counts"]
    live, copy = config.storage.database, target.storage.database
    copied = _rows(copy, "SELECT message_id, case_id, sha256 FROM messages ORDER BY id")
    assert (
        copied == _rows(live, "SELECT message_id, case_id, sha256 FROM messages ORDER BY id")[: len(copied)]
    )
    assert len(copied) < writer.stored
    # Every restored message has its raw bytes, every case its messages: nothing half-copied.
    assert _rows(
        copy, "SELECT count(*) FROM messages WHERE sha256 NOT IN (SELECT sha256 FROM raw_messages)"
    ) == [(0,)]
    assert _rows(copy, "SELECT count(*) FROM cases WHERE id NOT IN (SELECT case_id FROM messages)") == [(0,)]
    # The restored store is a working one: it takes new mail.
    other = Runtime(target)
    try:
        assert process(other, mail(subject="Etter gjenoppretting"), "smtp").outcome == "opened"
    finally:
        other.close()


def test_restore_is_refused_while_serve_holds_the_store(
    tmp_path: Path, config_path: Path, server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    """While `gateway serve` runs, restore refuses even with --force, and a second serve will not start."""
    config = server.runtime.config
    assert main(["--config", str(config_path), "backup", str(tmp_path / "b")]) == 0
    assert "backup written" in capsys.readouterr().out
    with pytest.raises(BackupError) as refused:
        restore(config, tmp_path / "b", force=True)
    assert refused.value.code == 75 and "live store" in str(refused.value)
    assert main(["--config", str(config_path), "restore", "--force", str(tmp_path / "b")]) == 75
    assert "gateway serve pid" in capsys.readouterr().err
    with pytest.raises(StorageUnavailable, match="another gateway serve"):
        Server(config).start()


def test_restore_needs_force_over_an_existing_database(
    tmp_path: Path, config_path: Path, runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    """Restore replaces an existing database only with --force; a backup never writes into a used folder."""
    process(runtime, mail(message_id="<kept@nordby-skole.example>"), "smtp")
    args = ["--config", str(config_path)]
    assert main([*args, "backup", str(tmp_path / "b")]) == 0
    assert main([*args, "backup", str(tmp_path / "b")]) == 73
    process(runtime, mail(message_id="<after-backup@nordby-skole.example>"), "smtp")
    capsys.readouterr()
    assert main([*args, "restore", str(tmp_path / "b")]) == 73
    assert "--force" in capsys.readouterr().err
    assert main([*args, "restore", "--force", str(tmp_path / "b")]) == 0
    ids = [r["message_id"] for r in runtime.store.query("SELECT message_id FROM messages")]
    assert ids == ["<kept@nordby-skole.example>"]
    assert main([*args, "restore", str(tmp_path / "nothing-here")]) == 66
