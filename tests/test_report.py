"""`gateway report` prints the digest's figures as a table, as JSON and as CSV that parse back."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from freezegun import freeze_time

from gateway.cli.main import main
from gateway.core.config import load_config
from gateway.store.database import open_store
from tests.digest_support import add_case, add_failed_mail, digest_config

OSLO = ZoneInfo("Europe/Oslo")
NOW = datetime(2026, 11, 24, 6, 0, tzinfo=OSLO)


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = digest_config(tmp_path)
    store = open_store(load_config(path).storage)
    add_case(store, "Nettet er nede", datetime(2026, 11, 23, 9, 0, tzinfo=OSLO))
    add_case(store, "Skriver får ikke IP", datetime(2026, 11, 23, 10, 0, tzinfo=OSLO), status="pending")
    add_case(
        store,
        "Løst i går",
        datetime(2026, 11, 23, 8, 0, tzinfo=OSLO),
        status="resolved",
        resolved=datetime(2026, 11, 23, 9, 0, tzinfo=OSLO),
    )
    add_case(store, "Gammel kritisk", datetime(2026, 11, 16, 9, 0, tzinfo=OSLO), priority="critical")
    add_failed_mail(store, datetime(2026, 11, 23, 12, 0, tzinfo=OSLO), "x@nordby-skole.example", "550 no")
    store.close()
    return path


def report(config_file: Path, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    capsys.readouterr()
    with freeze_time(NOW):
        assert main(["--config", str(config_file), "report", *args]) == 0
    return capsys.readouterr().out


def test_json_parses_back_with_the_figures(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--json is one JSON document with the period, the counts and the late cases."""
    data = json.loads(report(config_file, capsys, "--json"))
    assert data["period"]["first_day"] == "2026-11-23"
    assert (data["opened"], data["resolved"]) == (3, 1)
    assert data["totals"] == {"new": 0, "open": 2, "pending": 1}
    assert {(b["case"]["subject"], b["target"]) for b in data["breaches"]} >= {
        ("Gammel kritisk", "first-response"),
        ("Gammel kritisk", "resolution"),
    }
    assert data["failed"] == 1 and data["failed_mail"][0]["error"] == "550 no"
    assert data["changes"]["available"] is True and data["changes"]["unsent_notices"] == []


def test_csv_parses_back_one_figure_a_row(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--csv has a header and one figure a row that a spreadsheet can read."""
    rows = list(csv.DictReader(io.StringIO(report(config_file, capsys, "--csv"))))
    summary = {r["name"]: int(r["value"]) for r in rows if r["section"] == "summary"}
    assert summary["opened"] == 3 and summary["pending"] == 1 and summary["failed mail"] == 1
    per_day = [(r["day"], r["name"], r["value"]) for r in rows if r["section"] == "per-day"]
    assert per_day == [("2026-11-23", "opened", "3"), ("2026-11-23", "resolved", "1")]
    late = {(r["case"], r["name"]) for r in rows if r["section"] == "past-target"}
    assert ("SSC#4", "resolution") in late


def test_weekly_table_for_the_terminal(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without --json or --csv the figures come out as rich tables for last ISO week."""
    out = report(config_file, capsys, "--period", "weekly")
    assert "weekly report for 2026-W47 (2026-11-16..2026-11-22)" in out
    for heading in ("Summary", "Per day", "Open cases, oldest first", "Past target"):
        assert heading in out
    assert "SSC#4" in out


def test_json_and_csv_are_exclusive(config_file: Path) -> None:
    """Asking for both machine formats is a usage error, not a guess."""
    with pytest.raises(SystemExit) as exit_info:
        main(["--config", str(config_file), "report", "--json", "--csv"])
    assert exit_info.value.code == 64  # EX_USAGE, as every usage error of the CLI (issue 22)
