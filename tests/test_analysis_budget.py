"""Reading a stranger's text happens before the write transaction, bounded in size and in time."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cases import escalation
from gateway.core.config import ConfigError, load_config
from gateway.directory.who_wrote import Sender
from gateway.pipeline.steps import prepare
from gateway.runtime import Runtime
from tests.support import REPO, mail, wait_for, write_config

GATEWAY = [sys.executable, "-m", "gateway"]
INCIDENT = "Hei,\n\nwifi er nede i bygg 3, rom 204 siden i morges. Ingen kommer på nett.\n\nHilsen Kari\n"


def _config(tmp_path: Path, busy_timeout_ms: int = 10000, **service: str) -> Path:
    path = write_config(tmp_path, **service)
    text = path.read_text(encoding="utf-8").replace(
        "[storage]\n", f"[storage]\nbusy_timeout_ms = {busy_timeout_ms}\n"
    )
    path.write_text(text, encoding="utf-8")
    return path


def _deliver(config_path: Path, raw: bytes) -> subprocess.CompletedProcess[bytes]:
    """`gateway deliver`, as an MTA's pipe runs it."""
    return subprocess.run(
        [*GATEWAY, "--config", str(config_path), "deliver"],
        input=raw,
        capture_output=True,
        timeout=60,
        cwd=REPO,
    )


def _rows(config_path: Path, sql: str, *args: object) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(f"file:{config_path.parent / 'var' / 'gateway.db'}?mode=ro", uri=True)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def _case_of(config_path: Path, message_id: str) -> int:
    ((case_id,),) = _rows(config_path, "SELECT case_id FROM messages WHERE message_id = ?", message_id)
    assert isinstance(case_id, int)
    return case_id


def test_a_delivery_is_stored_while_another_is_still_being_analysed(tmp_path: Path) -> None:
    """A message halted in the middle of its analysis holds no lock: another delivery is stored meanwhile."""
    # A held lock would give the other delivery exit 75 within 0.2 s; the halt stays within the budget.
    config_path = _config(tmp_path, busy_timeout_ms=200, analysis_seconds="120")
    pause = tmp_path / "pause"
    pause.mkdir()
    env = {**os.environ, "GATEWAY_TEST_PAUSE_AT": f"analysis:{pause}"}
    slow = subprocess.Popen(
        [*GATEWAY, "--config", str(config_path), "deliver"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
        env=env,
    )
    try:
        slow.stdin.write(mail(body=INCIDENT, message_id="<slow@client.example>"))  # type: ignore[union-attr]
        slow.stdin.close()  # type: ignore[union-attr]
        wait_for(lambda: (pause / "paused").exists(), what="the first delivery halted in its analysis")
        other = _deliver(
            config_path, mail(subject="Skriveren svarer ikke", message_id="<other@client.example>")
        )
        assert other.returncode == 0, other.stderr
        assert b'"outcome": "opened"' in other.stdout
        assert slow.poll() is None  # still halted in the analysis while the other was stored
    finally:
        (pause / "resume").touch()
        slow.wait(timeout=60)
    assert slow.returncode == 0, slow.stderr.read()  # type: ignore[union-attr]
    case_id = _case_of(config_path, "<slow@client.example>")
    fields = _rows(
        config_path, "SELECT field FROM case_fields WHERE case_id = ? AND state = 'present'", case_id
    )
    assert {"connection", "location", "when"} <= {f for (f,) in fields}


def test_over_the_budget_the_case_is_stored_and_its_history_says_analysis_skipped(tmp_path: Path) -> None:
    """Past service.analysis_seconds the mail still opens a case, and `cases show` says the analysis was skipped."""
    config_path = _config(tmp_path, analysis_seconds="0.000001")
    blank_lines = "\n".join(" " if i % 2 else "" for i in range(60_000))  # once 68 s inside the transaction
    done = _deliver(config_path, mail(body=INCIDENT + blank_lines, message_id="<budget@client.example>"))
    assert done.returncode == 0, done.stderr
    assert b'"outcome": "opened"' in done.stdout
    case_id = _case_of(config_path, "<budget@client.example>")
    shown = subprocess.run(
        [*GATEWAY, "--config", str(config_path), "cases", "show", str(case_id)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert shown.returncode == 0, shown.stderr
    assert "analysis-skipped" in shown.stdout
    # Unread, nothing is claimed present and the customer is not asked for what they may have written.
    assert _rows(config_path, "SELECT field, state FROM case_fields WHERE case_id = ?", case_id) == []
    assert _rows(config_path, "SELECT kind FROM outbox WHERE case_id = ? AND kind = 'receipt'", case_id)


def test_ordinary_mail_gets_its_fields_and_no_skipped_note(tmp_path: Path) -> None:
    """Within the budget an incident's fields are recorded and the missing ones asked, as before."""
    config_path = _config(tmp_path)
    done = _deliver(config_path, mail(body=INCIDENT, message_id="<plain@client.example>"))
    assert done.returncode == 0, done.stderr
    case_id = _case_of(config_path, "<plain@client.example>")
    states = dict(_rows(config_path, "SELECT field, state FROM case_fields WHERE case_id = ?", case_id))
    assert states["connection"] == states["location"] == states["when"] == "present"
    assert states["mac"] == "asked"
    assert not _rows(config_path, "SELECT 1 FROM events WHERE action = 'analysis-skipped'")


def test_quoted_history_is_not_read_as_the_customers_words(runtime: Runtime) -> None:
    """Words only in the quoted mail below a reply supply no field: the new text is what is read."""
    body = (
        "Fortsatt nede.\n\nDen 2. nov. 2026 skrev Servicesenteret:\n> Er det trådløst? Hvilket bygg og rom?\n"
    )
    ctx = prepare(runtime, mail(subject="SV: Nettet", body=body), "pipe", None)
    assert ctx.analysis is not None and not ctx.analysis.skipped
    assert "connection" not in ctx.analysis.present and "location" not in ctx.analysis.present
    whole = escalation.found_in(escalation.Evidence(body, [], ctx.sender))
    assert "connection" in whole  # read whole, the quote would have counted


def test_only_the_first_64_kb_of_the_new_text_is_read() -> None:
    """Evidence past the first 64 KB of the new text is not looked at by the analysis."""
    sender = Sender("kari@nordby-skole.example", "Kari", "unknown")
    padding = "tekst " * (escalation.ANALYSED_CHARS // 6 + 1)
    late = escalation.analyse("Nettet", padding + " wifi i bygg 3, rom 204", [], sender, 5.0)
    early = escalation.analyse("Nettet", "wifi i bygg 3, rom 204 " + padding, [], sender, 5.0)
    assert "connection" not in late.present and early.present["connection"] == "wifi"


def test_the_budget_must_be_positive(tmp_path: Path) -> None:
    """service.analysis_seconds of 0 is refused, naming the key."""
    with pytest.raises(ConfigError, match=r"service\.analysis_seconds"):
        load_config(_config(tmp_path, analysis_seconds="0"))
