"""The corpus sweep: every odd or broken public mail is kept byte for byte and ends with a reason."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest

from gateway.core.config import Config, load_config
from gateway.ops.server import Server
from gateway.pipeline.process import process
from gateway.runtime import Runtime
from tests.corpus import (
    MEMORY_BUDGET_BYTES,
    PIPE_SAMPLE,
    TIME_BUDGET_SECONDS,
    as_smtp,
    config_for_corpus,
    corpus_files,
    ending,
    expected_outcomes,
    half_stored,
    name_of,
    smtp_line_too_long,
)
from tests.support import mail, smtp_send

FILES = {name_of(path): path for path in corpus_files()}
pytestmark = pytest.mark.skipif(not FILES, reason="../shared/corpus is not checked out")
NAMES = sorted(FILES) or ["(no corpus)"]


@pytest.fixture(scope="module", autouse=True)
def warmed_up(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Imports and caches filled once (holidays, templates, rules), so budgets time messages, not start-up."""
    runtime = Runtime(load_config(config_for_corpus(tmp_path_factory.mktemp("warm-up"))))
    try:
        process(runtime, mail(), "pipe")
    finally:
        runtime.close()


@pytest.fixture
def config(tmp_path: Path) -> Config:
    """A relay-less store that takes corpus-sized mail; overrides conftest's `config` for this file."""
    return load_config(config_for_corpus(tmp_path))


def _check_stored(db: Path, sent: bytes, name: str, outcome: str) -> None:
    conn = sqlite3.connect(db)
    try:
        end = ending(conn, sent)
        assert end.stored == sent, f"{name}: raw bytes not stored exactly"
        assert end.record != "none" and end.reason, f"{name}: no message or quarantine row with a reason"
        assert (end.record == "quarantine") == (outcome == "quarantined")
        assert half_stored(conn) == []
    finally:
        conn.close()


@pytest.mark.parametrize("name", NAMES)
def test_corpus_in_process(name: str, runtime: Runtime) -> None:
    """Each corpus file through process() ends as expected, kept whole, within the time and memory budget."""
    raw = FILES[name].read_bytes()
    tracemalloc.start()
    try:
        started = time.perf_counter()
        result = process(runtime, raw, "pipe")
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.outcome in expected_outcomes(name), result
    assert result.reason
    assert elapsed < TIME_BUDGET_SECONDS, f"{name} took {elapsed:.2f} s"
    assert peak < MEMORY_BUDGET_BYTES, f"{name} peaked at {peak / 2**20:.0f} MB"
    _check_stored(runtime.config.storage.database, raw, name, result.outcome)


@pytest.mark.parametrize("name", NAMES)
def test_corpus_over_smtp(name: str, config: Config) -> None:
    """Each corpus file over SMTP: 250 and stored exactly as sent, or 500 for a too-long line, none stored."""
    sent = as_smtp(FILES[name].read_bytes())
    server = Server(config)
    server.start()
    try:
        started = time.perf_counter()
        code, text = smtp_send(server.listener.address[1], sent)
        elapsed = time.perf_counter() - started
    finally:
        server.stop()
    assert elapsed < TIME_BUDGET_SECONDS, f"{name} took {elapsed:.2f} s"
    if smtp_line_too_long(sent):
        assert code == 500, text
        conn = sqlite3.connect(config.storage.database)
        assert conn.execute("SELECT count(*) FROM raw_messages").fetchone()[0] == 0
        conn.close()
        return
    assert code == 250, text
    outcome = text.decode().rpartition(" ")[2]
    assert outcome in expected_outcomes(name), text
    _check_stored(config.storage.database, sent, name, outcome)


@pytest.mark.parametrize("name", PIPE_SAMPLE)
def test_corpus_through_the_pipe(name: str, tmp_path: Path) -> None:
    """A sample of the corpus through `gateway deliver`: exit 0, the bytes stored as read from stdin."""
    if name not in FILES:
        pytest.skip(f"{name} is not in the corpus")
    raw = FILES[name].read_bytes()
    config = config_for_corpus(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "--config", str(config), "deliver"],
        input=raw,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    outcome = json.loads(done.stdout.decode().strip().splitlines()[-1])["outcome"]
    assert outcome in expected_outcomes(name)
    _check_stored(load_config(config).storage.database, raw, name, outcome)
