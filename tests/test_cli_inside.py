"""Agents change cases from a shell, and operators look inside: config, raw messages, attachments."""

from __future__ import annotations

import json
import uuid
from email.message import EmailMessage
from pathlib import Path

import pytest

from gateway.cli.main import main
from gateway.pipeline.process import process
from gateway.runtime import Runtime
from tests.support import mail

MONA = "mona@service.example"


def run(config_path: Path, *argv: str) -> int:
    return main(["--config", str(config_path), *argv])


def _case(runtime: Runtime) -> int:
    result = process(runtime, mail(), "pipe")
    assert result.case_id is not None
    return result.case_id


def _history(runtime: Runtime, case_id: int) -> list[tuple[str, str, str, str]]:
    return runtime.store.conn.execute(
        "SELECT actor, action, detail, reason FROM events WHERE case_id = ? ORDER BY id", (case_id,)
    ).fetchall()


def test_agent_sets_assigns_and_notes_from_the_shell(
    config_path: Path, runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    """assign, set and note change the case and write the agent's name into its history."""
    case_id = _case(runtime)
    assert (
        run(
            config_path,
            "cases",
            "set",
            f"SSC#{case_id}",
            "--status",
            "løst",
            "--priority",
            "høy",
            "--as",
            MONA,
        )
        == 0
    )
    assert run(config_path, "cases", "assign", str(case_id), "erik", "--as", MONA) == 0
    assert (
        run(config_path, "cases", "note", f"[SSC#{case_id}]", "--text", "Ringte kunden.", "--as", MONA) == 0
    )
    case = runtime.store.one(
        "SELECT status, priority, owner, resolved_at FROM cases WHERE id = ?", (case_id,)
    )
    assert case is not None
    assert (case["status"], case["priority"], case["owner"]) == ("resolved", "high", "erik@service.example")
    assert case["resolved_at"]
    mine = [e for e in _history(runtime, case_id) if e[0] == MONA]
    assert [e[1] for e in mine] == ["set-status", "set-priority", "set-owner", "internal-note"]
    assert mine[-1][2] == "Ringte kunden." and all("from the shell" in e[3] for e in mine)
    assert "status: new -> resolved" in capsys.readouterr().out


def test_agent_commands_refuse_what_mail_commands_refuse(
    config_path: Path, runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    """A stranger's --as, an unknown agent or status and a missing case change nothing."""
    case_id = _case(runtime)
    before = _history(runtime, case_id)
    assert run(config_path, "cases", "set", str(case_id), "--status", "ferdig", "--as", MONA) == 65
    assert "unknown value 'ferdig'" in capsys.readouterr().err
    assert run(config_path, "cases", "assign", str(case_id), "nobody", "--as", MONA) == 65
    assert "no agent called 'nobody'" in capsys.readouterr().err
    assert (
        run(config_path, "cases", "note", str(case_id), "--text", "hei", "--as", "kari@nordby-skole.example")
        == 65
    )
    assert "not an agent in the registry" in capsys.readouterr().err
    assert run(config_path, "cases", "note", "999", "--text", "hei", "--as", MONA) == 66
    assert _history(runtime, case_id) == before
    with pytest.raises(SystemExit) as done:
        run(config_path, "cases", "note", str(case_id), "--text", "hei")
    assert done.value.code == 64


def test_unauthenticated_agent_mail_is_held_saying_why(
    config_path: Path, runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    """An agent's mail without proof is held as 'agent mail not authenticated: …', not 'unknown sender'."""
    result = process(runtime, mail(sender=f"Mona <{MONA}>", subject="Hei"), "pipe")
    assert result.outcome == "held"
    assert result.reason == "agent mail not authenticated: auth.authserv_id is not set"
    assert run(config_path, "held", "list", "--json") == 0
    held = json.loads(capsys.readouterr().out)
    assert held[0]["reason"].startswith("agent mail not authenticated: auth.authserv_id is not set")


def test_config_show_masks_secrets(
    tmp_path: Path, config_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`config show` prints every setting with its default and never a secret."""
    text = (
        config_path.read_text(encoding="utf-8").replace(
            "[service]\n", "[service]\nsecret = 'hemmelig-nokkel'\n"
        )
        + "\n[imap]\nusername = 'gw'\npassword = 'passord123'\n"
    )
    config_path.write_text(text, encoding="utf-8")
    assert run(config_path, "config", "show") == 0
    out = capsys.readouterr().out
    assert "hemmelig" not in out and "passord123" not in out
    assert 'service.secret = "********"' in out and "relay.max_attempts = 20" in out
    assert "retention.raw_mail_days = 365" in out
    assert run(config_path, "config", "show", "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["imap"]["password"] == "********" and data["imap"]["username"] == "gw"
    assert data["smtp"]["max_message_size"] == 1048576 and data["paths"]["rules"].endswith("rules")


def _with_attachments() -> bytes:
    message = EmailMessage()
    message["From"] = "Kari Nordmann <kari.nordmann@nordby-skole.example>"
    message["To"] = "kontakt@service.example"
    message["Subject"] = "Logg fra svitsjen"
    message["Message-ID"] = f"<{uuid.uuid4().hex}@client.example>"
    message.set_content("Hei, loggen ligger ved.\n")
    message.add_attachment(b"port 12 down\n", maintype="text", subtype="plain", filename="svitsj-logg.txt")
    message.add_attachment(b"\x89PNG fake", maintype="image", subtype="png", filename="../../etc/passwd")
    message.add_attachment(
        b"second", maintype="application", subtype="octet-stream", filename="svitsj-logg.txt"
    )
    return message.as_bytes()


def test_raw_message_and_attachments(
    tmp_path: Path, config_path: Path, runtime: Runtime, capfdbinary: pytest.CaptureFixture[bytes]
) -> None:
    """`cases show` gives ids and attachment names; `messages raw` gives the bytes; `attachments save` writes safely."""
    raw = _with_attachments()
    result = process(runtime, raw, "pipe")
    assert result.case_id is not None
    assert run(config_path, "cases", "show", str(result.case_id), "--json") == 0
    case = json.loads(capfdbinary.readouterr().out)
    incoming = next(m for m in case["messages"] if m["direction"] == "in")
    assert incoming["attachments"] == ["svitsj-logg.txt", "../../etc/passwd", "svitsj-logg.txt"]
    outgoing = next(m for m in case["messages"] if m["direction"] == "out")
    assert str(outgoing["id"]).startswith("out-")
    for ref in (str(incoming["id"]), incoming["message_id"], incoming["message_id"].strip("<>")):
        assert run(config_path, "messages", "raw", ref) == 0
        assert capfdbinary.readouterr().out == raw
    assert run(config_path, "messages", "raw", outgoing["id"]) == 0
    assert b"Subject:" in capfdbinary.readouterr().out
    assert run(config_path, "messages", "raw", "<nothing@here>") == 66
    target = tmp_path / "vedlegg"
    assert run(config_path, "attachments", "save", str(incoming["id"]), str(target)) == 0
    assert sorted(p.name for p in target.iterdir()) == ["passwd", "svitsj-logg-2.txt", "svitsj-logg.txt"]
    assert (target / "svitsj-logg.txt").read_bytes() == b"port 12 down\n"
    assert (target / "svitsj-logg-2.txt").read_bytes() == b"second"
    assert not (tmp_path / "etc").exists()


def test_replay_several_or_all(
    config_path: Path, runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    """`quarantine replay` takes several ids or --all, and reports each with --json."""
    for n in range(3):
        process(runtime, mail(subject=f"Feil {n}"), "pipe")
    raws = runtime.store.conn.execute("SELECT sha256 FROM raw_messages ORDER BY rowid").fetchall()
    for (digest,) in raws:
        runtime.store.conn.execute(
            "INSERT INTO quarantine (sha256, source, error, created_at) VALUES (?, 'pipe', 'boom', '2026-11-24T09:00:00Z')",
            (digest,),
        )
    assert run(config_path, "quarantine", "replay", "1", "2", "--json") == 0
    done = json.loads(capsys.readouterr().out)
    assert [d["id"] for d in done] == [1, 2] and all(d["outcome"] == "duplicate" for d in done)
    assert run(config_path, "quarantine", "replay", "--all", "--json") == 0
    assert [d["id"] for d in json.loads(capsys.readouterr().out)] == [3]
    assert run(config_path, "quarantine", "replay", "77") == 66
    with pytest.raises(SystemExit) as usage:
        run(config_path, "quarantine", "replay")
    assert usage.value.code == 64
