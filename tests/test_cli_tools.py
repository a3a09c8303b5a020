"""The command line as an operator and an agent use it: ids, exit codes, empty lists, JSON, pipes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gateway import __version__
from gateway.cli.main import main
from gateway.pipeline.process import process
from gateway.runtime import Runtime
from tests.support import REPO, mail

ENV = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}


def run(config_path: Path, *argv: str) -> int:
    return main(["--config", str(config_path), *argv])


def _case(runtime: Runtime, subject: str = "Nettet er nede i 2. etasje") -> int:
    result = process(runtime, mail(subject=subject), "pipe")
    assert result.case_id is not None
    return result.case_id


def test_version_is_printed(capsys: pytest.CaptureFixture[str]) -> None:
    """`gateway --version` prints the package version and exits 0."""
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"gateway {__version__}"


def test_config_after_the_subcommand(config_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--config` works after the command as well as before it."""
    assert main(["cases", "list", "--json", "--config", str(config_path)]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["status", "--config", str(config_path / "missing.toml")]) == 78


def test_case_ids_in_every_spelling(
    config_path: Path, runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    """`12`, `SSC#12` and `[SSC#12]` name the same case; another prefix is a usage error (64)."""
    case_id = _case(runtime)
    for spelling in (str(case_id), f"SSC#{case_id}", f"[SSC#{case_id}]", f"ssc#{case_id}"):
        assert run(config_path, "cases", "show", spelling, "--json") == 0
        assert json.loads(capsys.readouterr().out)["id"] == case_id
    with pytest.raises(SystemExit) as done:
        run(config_path, "cases", "show", f"ABC#{case_id}")
    assert done.value.code == 64
    assert "cases here are SSC#N" in capsys.readouterr().err


def test_invalid_choice_exits_64_naming_the_values(
    config_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`cases list --status bogus` exits 64 and lists the statuses there are."""
    with pytest.raises(SystemExit) as done:
        run(config_path, "cases", "list", "--status", "bogus")
    assert done.value.code == 64
    err = capsys.readouterr().err
    assert "'bogus'" in err and "'new', 'open', 'pending', 'resolved', 'closed'" in err


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (("held", "list"), "no held mail"),
        (("quarantine", "list"), "no quarantined mail"),
        (("outbox", "list"), "no outgoing mail"),
        (("cases", "list"), "no cases"),
    ],
)
def test_empty_lists_say_so_on_a_terminal(
    config_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: tuple[str, ...],
    said: str,
) -> None:
    """An empty list says so to a person, prints nothing into a pipe and `[]` with --json."""
    assert run(config_path, *argv, "--json") == 0
    assert json.loads(capsys.readouterr().out) == []
    assert run(config_path, *argv) == 0
    assert capsys.readouterr().out == ""
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert run(config_path, *argv) == 0
    assert capsys.readouterr().out.strip() == said


def test_a_closed_pipe_ends_quietly(config_path: Path, runtime: Runtime) -> None:
    """`gateway cases list | head -1` gives one line and no BrokenPipeError traceback."""
    for n in range(1500):
        runtime.store.conn.execute(
            "INSERT INTO cases (subject, status, category, priority, queue, language, created_at,"
            " updated_at, requester) VALUES (?, 'new', 'question', 'normal', 'first-line', 'nb',"
            " '2026-11-24T09:00:00Z', '2026-11-24T09:00:00Z', 'kari@nordby-skole.example')",
            (f"Sak {n} " + "x" * 50,),
        )
    gateway = subprocess.Popen(
        [sys.executable, "-m", "gateway", "--config", str(config_path), "cases", "list", "--limit", "2000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=ENV,
    )
    assert gateway.stdout is not None and gateway.stderr is not None
    first = gateway.stdout.readline()
    gateway.stdout.close()  # what head does after its lines
    err = gateway.stderr.read()
    assert gateway.wait(timeout=60) == 0
    assert first.startswith(b"SSC#1500")
    assert err == b""


def test_outbox_list_limit_and_whole_addresses(
    config_path: Path, runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    """`outbox list --limit N` gives the newest N, and an address is never cut off."""
    for n in range(3):
        _case(runtime, f"Skriveren virker ikke {n}")
    assert run(config_path, "outbox", "list", "--limit", "2", "--json") == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 2 and rows[0]["id"] > rows[1]["id"]
    assert run(config_path, "outbox", "list") == 0
    out = capsys.readouterr().out
    for row in rows:
        for address in row["recipients"]:
            assert f" {address}" in out


@pytest.mark.parametrize(
    ("argv", "key"),
    [
        (("outbox", "flush"), "sent"),
        (("rules", "check"), None),
        (("contacts", "check"), "organizations"),
        (("purge", "--dry-run"), "dry_run"),
    ],
)
def test_acting_commands_speak_json(
    config_path: Path, runtime: Runtime, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], key: str
) -> None:
    """Commands that act print one JSON document with --json."""
    _case(runtime)
    assert run(config_path, *argv, "--json") == 0
    data = json.loads(capsys.readouterr().out)
    if key is None:
        assert isinstance(data, list) and data and {"name", "source", "then"} <= set(data[0])
    else:
        assert key in data


def test_backup_and_digest_speak_json(
    tmp_path: Path, config_path: Path, runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    """`backup --json` gives the manifest and `digest --json` what was queued for whom."""
    _case(runtime)
    assert run(config_path, "backup", str(tmp_path / "copy"), "--json") == 0
    manifest = json.loads(capsys.readouterr().out)
    assert manifest["counts"]["cases"] == 1 and manifest["path"].endswith("copy")
    assert run(config_path, "digest", "--period", "daily", "--json") == 0
    first = json.loads(capsys.readouterr().out)
    assert first["digests"][0]["audience"] == "agents"
    assert first["digests"][0]["result"].startswith("agents: queued daily digest")
    assert run(config_path, "digest", "--period", "daily", "--json") == 0
    again = json.loads(capsys.readouterr().out)
    assert again["digests"] == [] and "already sent" in again["notes"][0]


@pytest.mark.parametrize("terminal", [True, False])
def test_long_commands_show_progress_only_on_a_terminal(
    tmp_path: Path,
    config_path: Path,
    runtime: Runtime,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    terminal: bool,
) -> None:
    """backup, search and purge draw a progress bar on a terminal and print nothing extra when piped."""
    _case(runtime)
    capsys.readouterr()
    monkeypatch.setenv("TTY_COMPATIBLE", "1" if terminal else "0")
    assert run(config_path, "backup", str(tmp_path / "copy")) == 0
    assert run(config_path, "cases", "search", "nettet") == 0
    assert run(config_path, "purge") == 0
    captured = capsys.readouterr()
    shown = [word for word in ("backing up", "indexing new mail", "purging") if word in captured.err]
    assert shown == (["backing up", "indexing new mail", "purging"] if terminal else [])
    assert captured.out.startswith("backup written to") and "backing up" not in captured.out
    if not terminal:
        assert captured.err == ""


def test_outbox_retry_speaks_json(
    config_path: Path, runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    """`outbox retry --json` lists the mail queued again; a mail that is not failed is refused with 65."""
    _case(runtime)
    first = runtime.store.one("SELECT id, kind FROM outbox ORDER BY id LIMIT 1")
    with runtime.store.write() as conn:
        conn.execute("UPDATE outbox SET status = 'failed' WHERE id = ?", (first["id"],))
    assert run(config_path, "outbox", "retry", str(first["id"]), "--json") == 0
    assert json.loads(capsys.readouterr().out) == [
        {"id": first["id"], "kind": first["kind"], "status": "queued"}
    ]
    assert run(config_path, "outbox", "retry", str(first["id"]), "--json") == 65
