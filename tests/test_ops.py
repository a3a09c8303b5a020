"""Running it as a service: graceful SIGTERM, log lines per message, init, retention purge and search."""

from __future__ import annotations

import json
import signal
import smtplib
import sqlite3
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from freezegun import freeze_time

from gateway.cli.main import main
from gateway.core import clock
from gateway.core.config import Config, load_config
from gateway.pipeline.process import process, process_batch
from gateway.runtime import Runtime
from gateway.store.database import StorageUnavailable
from gateway.store.search import search_cases
from tests.support import REPO, RecordingRelay, free_port, mail, smtp_send, wait_for, write_config

GATEWAY = [sys.executable, "-m", "gateway"]


class Client(threading.Thread):
    """Sends new mail over fresh SMTP sessions until the server stops answering 250 (bounded)."""

    def __init__(self, name: str, port: int, limit: int = 500) -> None:
        super().__init__(name=name)
        self.port = port
        self.limit = limit
        self.answers: dict[str, int | None] = {}

    def run(self) -> None:
        for n in range(self.limit):
            message_id = f"<{self.name}-{n}@nordby-skole.example>"
            try:
                code, _ = smtp_send(self.port, mail(message_id=message_id))
            except (OSError, smtplib.SMTPException):
                code = None  # refused or cut off: the client never saw a 250
            self.answers[message_id] = code
            if code != 250:
                return

    @property
    def accepted(self) -> int:
        return sum(1 for code in self.answers.values() if code == 250)


def test_sigterm_mid_stream_keeps_every_250_and_half_stores_nothing(
    tmp_path: Path, relay: RecordingRelay
) -> None:
    """SIGTERM during a stream of mail: every 250 is stored whole, nothing else half-stored, and exit 0."""
    port = free_port()
    config_path = write_config(tmp_path, relay_port=relay.port, smtp_port=port)
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [*GATEWAY, "--config", str(config_path), "serve"], stdout=subprocess.PIPE, stderr=log, cwd=REPO
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().decode().startswith(f"gateway listening on 127.0.0.1:{port}")
        clients = [Client(f"client{i}", port) for i in range(4)]
        for client in clients:
            client.start()
        try:
            wait_for(lambda: sum(c.accepted for c in clients) >= 20, timeout=30, what="mail flowing")
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=120) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
            for client in clients:
                client.join(timeout=60)
    answers = {mid: code for c in clients for mid, code in c.answers.items()}
    assert any(code != 250 for code in answers.values()), "the stop came after the stream had ended"
    conn = sqlite3.connect(load_config(config_path).storage.database)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        stored = {
            row[0]: row[1:]
            for row in conn.execute(
                "SELECT m.message_id, m.case_id, r.sha256,"
                " (SELECT count(*) FROM events e WHERE e.message = m.id)"
                " FROM messages m LEFT JOIN raw_messages r ON r.sha256 = m.sha256"
            )
        }
        orphans = conn.execute(
            "SELECT count(*) FROM cases WHERE id NOT IN (SELECT case_id FROM messages)"
        ).fetchone()
    finally:
        conn.close()
    accepted = {mid for mid, code in answers.items() if code == 250}
    assert accepted <= set(stored), "a message that got 250 is missing"
    assert set(stored) <= set(answers)
    # Whatever is stored (with or without a 250 seen by the client) is whole: case, raw bytes, history.
    assert all(case_id and sha and events for case_id, sha, events in stored.values())
    assert orphans == (0,)
    log_text = log_path.read_text(encoding="utf-8")
    assert all(f"message_id={mid}" in log_text for mid in accepted)
    assert "stopping: no new mail" in log_text


def test_json_log_has_one_line_per_message_with_its_fields(config_path: Path) -> None:
    """With JSON logging, a delivered message logs one JSON line with Message-ID, case, outcome and reason."""
    config_path.write_text(config_path.read_text() + '\n[log]\nformat = "json"\n', encoding="utf-8")
    done = subprocess.run(
        [*GATEWAY, "--config", str(config_path), "deliver"],
        input=mail(message_id="<json-log@nordby-skole.example>"),
        capture_output=True,
        timeout=60,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stderr.decode().splitlines() if line.strip()]
    about = [line for line in lines if line.get("message_id") == "<json-log@nordby-skole.example>"]
    assert len(about) == 1
    assert about[0]["case"] == 1 and about[0]["outcome"] == "opened" and about[0]["source"] == "pipe"
    assert "receipt-for-new-case" in about[0]["reason"]
    assert {"time", "level", "logger"} <= set(about[0])


def test_init_writes_a_config_that_works(tmp_path: Path) -> None:
    """`gateway init DIR` gives a config whose registry and rules check out, and never overwrites it."""
    target = tmp_path / "etc-gateway"
    first = subprocess.run(
        [*GATEWAY, "init", str(target), "--storage", "state"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert first.returncode == 0, first.stderr
    config = str(target / "gateway.toml")
    for check in (["contacts", "check"], ["rules", "check"]):
        done = subprocess.run(
            [*GATEWAY, "--config", config, *check], capture_output=True, text=True, timeout=60, cwd=tmp_path
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines()[-1].startswith("ok: ")
    loaded = load_config(config)
    # Absolute, so the service, cron and a shell elsewhere all find the same store.
    assert loaded.storage.database == tmp_path / "state" / "gateway.db"
    text = (target / "gateway.toml").read_text(encoding="utf-8")
    assert f'path = "{tmp_path / "state"}"' in text and "copy to" not in text.lower()
    assert (target / "templates" / "nb" / "customer" / "receipt.txt.j2").is_file()
    (target / "rules" / "90-receipts.toml").write_text("# edited by the operator\n", encoding="utf-8")
    again = subprocess.run([*GATEWAY, "init", str(target)], capture_output=True, text=True, timeout=60)
    assert again.returncode == 73 and "never overwrites" in again.stderr
    assert (target / "rules" / "90-receipts.toml").read_text(encoding="utf-8") == "# edited by the operator\n"


def _ago(days: int) -> str:
    return clock.iso(clock.now() - timedelta(days=days))


def test_purge_dry_run_lists_and_purge_removes(
    config: Config, config_path: Path, runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    """Dry run counts old raw mail and long-closed cases, changing nothing; the purge removes and records."""
    with freeze_time(_ago(800)):
        closed = process(
            runtime,
            mail(subject="Gammel sak om svitsjen", body="Nettet er nede. Svitsjen på rom 101 er død.\n"),
            "smtp",
        )
    with freeze_time(_ago(400)):
        old = process(
            runtime, mail(subject="Trådløst nett i gymsalen", body="Ingen dekning i gymsalen.\n"), "smtp"
        )
    fresh = process(
        runtime, mail(subject="Projektoren i aulaen", body="Projektoren får ikke signal.\n"), "smtp"
    )
    with runtime.store.write() as conn:
        conn.execute(
            "UPDATE cases SET status = 'closed', closed_at = ? WHERE id = ?", (_ago(790), closed.case_id)
        )
        old_row = conn.execute("SELECT id FROM messages WHERE case_id = ?", (old.case_id,)).fetchone()[0]
        # A change-order code that never came back, and one that opened the closed case.
        conn.executemany(
            "INSERT INTO confirmations (token, message, address, created_at, used_at, case_id)"
            " VALUES (?, ?, 'kari.nordmann@nordby-skole.example', ?, ?, ?)",
            [
                ("1111-2222", old_row, _ago(400), None, None),
                ("3333-4444", old_row, _ago(800), _ago(800), closed.case_id),
            ],
        )
    evidence = runtime.store.query("SELECT evidence FROM case_fields WHERE case_id = ?", (closed.case_id,))
    assert any(row["evidence"] for row in evidence), evidence
    before = runtime.store.one("SELECT count(*) AS n FROM raw_messages")["n"]

    assert main(["--config", str(config_path), "purge", "--dry-run"]) == 0
    report = capsys.readouterr().out
    assert "would purge 2 messages" in report and "would anonymise 1 cases" in report
    assert "1 unused confirmation codes" in report
    assert runtime.store.one("SELECT count(*) AS n FROM raw_messages")["n"] == before

    assert main(["--config", str(config_path), "purge"]) == 0
    assert "purged 2 messages" in capsys.readouterr().out
    kept = runtime.store.query("SELECT case_id, sha256, from_addr, body FROM messages ORDER BY id")
    assert [(m["case_id"], m["sha256"] is None) for m in kept] == [
        (closed.case_id, True),
        (old.case_id, True),
        (fresh.case_id, False),
    ]
    assert kept[0]["from_addr"] == "" and kept[0]["body"] == ""
    assert "gymsalen" in kept[1]["body"]  # an open case keeps its text; only the raw bytes went
    case = runtime.store.one("SELECT subject, requester FROM cases WHERE id = ?", (closed.case_id,))
    assert case == {"subject": "(purged)", "requester": ""}
    assert search_cases(runtime.store, "svitsjen") == []
    evidence = runtime.store.query("SELECT evidence FROM case_fields WHERE case_id = ?", (closed.case_id,))
    assert evidence and all(row["evidence"] == "" for row in evidence)
    codes = runtime.store.query("SELECT token, address FROM confirmations")
    assert codes == [{"token": "3333-4444", "address": ""}]
    assert runtime.store.one("SELECT count(*) AS n FROM raw_messages")["n"] == 1
    records = runtime.store.query("SELECT case_id, detail FROM events WHERE actor = 'retention'")
    assert {r["case_id"] for r in records} == {closed.case_id, None}
    assert main(["--config", str(config_path), "purge", "--dry-run"]) == 0
    assert "would purge 0 messages" in capsys.readouterr().out


def _delete_messages(conn: sqlite3.Connection, case_id: int | None) -> None:
    conn.execute(
        "DELETE FROM events WHERE message IN (SELECT id FROM messages WHERE case_id = ?)", (case_id,)
    )
    conn.execute("DELETE FROM messages WHERE case_id = ?", (case_id,))


def test_search_index_follows_in_batches_and_stays_exact(runtime: Runtime) -> None:
    """Mail is indexed behind a watermark; edits and deletes before and after it keep the index exact."""
    from gateway.store import search

    store = runtime.store
    first = process(runtime, mail(subject="Ruteren i gymsalen", body="Ruteren blinker rødt.\n"), "smtp")
    second = process(runtime, mail(subject="Skriveren på biblioteket", body="Papirstopp igjen.\n"), "smtp")
    upto = store.one("SELECT indexed_upto FROM search_progress")["indexed_upto"]
    assert upto == 0  # below the intake's batch size nothing is indexed yet ...
    with store.write() as conn:  # ... and an edit must not touch the index (FTS5 would call it corrupt)
        conn.execute("UPDATE messages SET body = 'Papirstopp.' WHERE case_id = ?", (second.case_id,))
    assert [c["id"] for c in search_cases(store, "gymsalen")] == [first.case_id]  # ... but search catches up
    assert store.one("SELECT indexed_upto FROM search_progress")["indexed_upto"] >= 2
    third = process(runtime, mail(subject="Trådløst på lærerrommet", body="Eduroam faller ut.\n"), "smtp")
    with store.write() as conn:
        # An indexed row edited and one deleted; an unindexed row edited and one deleted.
        conn.execute("UPDATE messages SET body = 'Ruteren er byttet.' WHERE case_id = ?", (first.case_id,))
        _delete_messages(conn, second.case_id)
        conn.execute("UPDATE messages SET subject = 'Trådløst i kantina' WHERE case_id = ?", (third.case_id,))
        conn.execute("UPDATE messages SET disposition = disposition")  # touches no indexed column
    fourth = process(runtime, mail(subject="Svitsjen i kjelleren", body="Svitsjen er død.\n"), "smtp")
    with store.write() as conn:
        _delete_messages(conn, fourth.case_id)
    assert search_cases(store, "blinker") == [] and [c["id"] for c in search_cases(store, "byttet")] == [
        first.case_id
    ]
    assert search_cases(store, "papirstopp") == [] and search_cases(store, "svitsjen") == []
    assert search_cases(store, "lærerrommet") == [] and [c["id"] for c in search_cases(store, "kantina")] == [
        third.case_id
    ]
    with store.write() as conn:
        # rank 1: compare the index with the messages table itself; raises when they differ.
        conn.execute("INSERT INTO messages_fts (messages_fts, rank) VALUES ('integrity-check', 1)")
    hits = store.query("SELECT rowid FROM messages_fts WHERE messages_fts MATCH 'kantina OR byttet'")
    assert len(hits) == 2  # each edited message once: no row indexed twice
    # The intake indexes on its own once INTAKE_BACKLOG rows wait.
    items = [(mail(subject=f"Sak {n}", body="Tekst.\n"), "smtp", None, None) for n in range(search.INTAKE_BACKLOG)]
    process_batch(runtime, items)
    upto = store.one("SELECT indexed_upto FROM search_progress")["indexed_upto"]
    assert upto == store.one("SELECT max(id) AS n FROM messages")["n"]


def test_search_finds_norwegian_words_and_filters_by_organisation(
    config_path: Path, runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    """Search matches æøå words in any case, keeps "får" apart from "far", and narrows by organisation."""
    nordby = process(
        runtime, mail(subject="Strømbrudd på skolen", body="Vi får ikke nett etter strømbruddet.\n"), "smtp"
    )
    fjellvik = process(
        runtime,
        mail(
            sender="Servicetorget IT <it-varsling@fjellvik.kommune.example>",
            subject="Strømbrudd i rådhuset",
            body="Svitsjene i kjelleren gikk ned.\n",
        ),
        "smtp",
    )
    store = runtime.store
    assert {c["id"] for c in search_cases(store, "STRØMBRUDD")} == {nordby.case_id, fjellvik.case_id}
    assert [c["id"] for c in search_cases(store, "rådhuset")] == [fjellvik.case_id]
    assert [c["id"] for c in search_cases(store, "får nett")] == [nordby.case_id]
    assert search_cases(store, "far") == []
    assert [c["id"] for c in search_cases(store, "strøm", organization="nordby-skole")] == [nordby.case_id]
    args = [
        "--config",
        str(config_path),
        "cases",
        "search",
        "strømbrudd",
        "--org",
        "fjellvik-kommune",
        "--json",
    ]
    assert main(args) == 0
    found = json.loads(capsys.readouterr().out)
    assert [c["id"] for c in found] == [fjellvik.case_id] and "[Strømbrudd]" in found[0]["snippet"]
    assert main([*args[:-1], "--since", "2999-01-01"]) == 0
    assert capsys.readouterr().out == ""


def test_search_catches_up_across_deleted_ids_in_small_steps(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Catch-up goes on until the mark reaches the newest message, even over a step with no rows left."""
    from gateway.store import search

    monkeypatch.setattr(search, "MOST_AT_ONCE", 1)
    cases = [
        process(runtime, mail(subject=f"Ruter {n}", body="Ruteren i gymsalen.\n"), "smtp") for n in range(3)
    ]
    with runtime.store.write() as conn:
        _delete_messages(conn, cases[1].case_id)  # the middle id: a step that indexes nothing
    assert {c["id"] for c in search_cases(runtime.store, "gymsalen")} == {cases[0].case_id, cases[2].case_id}
    top = runtime.store.one("SELECT max(id) AS n FROM messages")["n"]
    assert runtime.store.one("SELECT indexed_upto FROM search_progress")["indexed_upto"] == top


def test_a_broken_search_index_never_stops_intake(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Indexing that fails as a corrupt index would is rolled back alone: the batch is still stored."""
    import sqlite3

    from gateway.store import search

    def corrupt(conn: sqlite3.Connection, at_least: int = 1) -> int:
        conn.execute("UPDATE search_progress SET indexed_upto = indexed_upto + 1000")  # must not stick
        raise sqlite3.DatabaseError("database disk image is malformed")

    monkeypatch.setattr(search, "index_backlog", corrupt)
    result = process(runtime, mail(subject="Nettet er nede"), "smtp")
    assert result.outcome == "opened"
    assert runtime.store.one("SELECT count(*) AS n FROM cases")["n"] == 1
    assert runtime.store.one("SELECT indexed_upto FROM search_progress")["indexed_upto"] == 0
    assert "search index not updated" in caplog.text

    def locked(conn: sqlite3.Connection, at_least: int = 1) -> int:
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(search, "index_backlog", locked)  # the store's own trouble stays temporary
    with pytest.raises(StorageUnavailable):
        process(runtime, mail(subject="Skriveren"), "smtp")
    assert runtime.store.one("SELECT count(*) AS n FROM cases")["n"] == 1
