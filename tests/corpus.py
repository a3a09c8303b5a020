"""The public corpus of odd and broken mail, what each file must end as, and the store's invariants.

Shared by the corpus sweeps (SMTP, pipe, in-process; IMAP can reuse the same helpers).
`python -m tests.corpus` runs the in-process sweep once and prints the figures quoted in
docs/reliability.md.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from aiosmtpd.smtp import SMTP

from tests.support import mail, smtp_send, write_config

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"

# Every way a message may end once it is stored: a case, a hold, an automated record,
# a refusal or the quarantine. "duplicate" is not an ending for a corpus file: each is
# delivered into an empty store.
ENDINGS = frozenset({"opened", "appended", "held", "refused", "ignored", "quarantined"})

# Machine reports (RFC 3464 delivery status, RFC 8098 read receipts, RFC 5965 abuse
# reports), several of them malformed: stored, never a case, never answered.
REPORTS = frozenset(
    {
        "mikel/spec__fixtures__emails__mime_emails__raw_email_with_mimepart_without_content_type.eml",
        "mikel/spec__fixtures__emails__multipart_report_emails__multi_address_bounce1.eml",
        "mikel/spec__fixtures__emails__multipart_report_emails__multi_address_bounce2.eml",
        "mikel/spec__fixtures__emails__multipart_report_emails__multipart_report_multiple_status.eml",
        "mikel/spec__fixtures__emails__multipart_report_emails__report_422.eml",
        "mikel/spec__fixtures__emails__multipart_report_emails__report_530.eml",
        "mimekit/messages__bounce.txt",
        "mimekit/messages__delivery-status-multiple-blank-lines.txt",
        "mimekit/messages__delivery-status-no-blank-line.txt",
        "mimekit/messages__delivery-status.anonymized.eml",
        "mimekit/messages__delivery-status.txt",
        "mimekit/messages__delivery-status2.txt",
        "mimekit/messages__disposition-notification.anonymized.eml",
        "mimekit/messages__disposition-notification.txt",
        "mimekit/messages__feedback-report.txt",
        "nodemailer/test__fixtures__delivery-status.eml",
        "spamscope/tests__mails__mail_malformed_2",
    }
)
# Shaped to exhaust a parser (2,710 encoded-words in To): refused by gateway/limits.py.
HOSTILE = frozenset({"mimekit/messages__stack-overflow.txt"})

# The pipe sweep starts a process per message, so it takes a sample of the odd ones:
# NUL bytes in headers, a report, a BOM before the first header, the hostile one, and
# the largest (1.5 MB: parsed in the time-limited child first).
PIPE_SAMPLE = (
    "mimekit/compliance__unexpected-null-bytes-in-headers.eml",
    "mimekit/messages__bounce.txt",
    "mimekit/messages__feedback-report.txt",
    "mimekit/messages__stack-overflow.txt",
    "spamscope/tests__mails__mail_test_2",
)

TIME_BUDGET_SECONDS = 2.0
MEMORY_BUDGET_BYTES = 200 * 1024 * 1024


def corpus_files() -> list[Path]:
    """Every message in the corpus, sorted; empty when the corpus is not checked out."""
    if not CORPUS.is_dir():
        return []
    return sorted(p for p in CORPUS.rglob("*") if p.is_file() and p.name != "README.md")


def name_of(path: Path) -> str:
    """The file's name as tests show it: `folder/file`."""
    return path.relative_to(CORPUS).as_posix()


def expected_outcomes(name: str) -> frozenset[str]:
    """The outcomes `process` may give for the corpus file `folder/file`."""
    if name in REPORTS:
        return frozenset({"ignored"})
    if name in HOSTILE:
        return frozenset({"quarantined"})
    return ENDINGS


def as_smtp(raw: bytes) -> bytes:
    """The bytes an SMTP client actually transmits: every line end CRLF, ending in CRLF."""
    crlf = re.sub(rb"\r\n|\r|\n", b"\r\n", raw)
    return crlf if crlf.endswith(b"\r\n") else crlf + b"\r\n"


def smtp_line_too_long(data: bytes) -> bool:
    """Whether aiosmtpd refuses this DATA with 500 (RFC 5321 4.5.3.1.6: 1,000 octets a line)."""
    return any(len(line) + 2 > SMTP.line_length_limit for line in data.split(b"\r\n"))


def config_for_corpus(tmp: Path) -> Path:
    """A relay-less gateway.toml in tmp that takes messages up to the default 25 MB."""
    path = write_config(tmp)
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("max_message_size = 1048576", "max_message_size = 26214400"), "utf-8")
    return path


@dataclass(frozen=True)
class Ending:
    """Where one message's bytes ended up in the store, and the reason recorded there."""

    stored: bytes | None
    record: str  # messages | quarantine | none
    reason: str


def ending(conn: sqlite3.Connection, raw: bytes) -> Ending:
    """Look up what the store kept for these bytes: the raw row and the message or quarantine row."""
    digest = hashlib.sha256(raw).hexdigest()
    row = conn.execute("SELECT raw FROM raw_messages WHERE sha256 = ?", (digest,)).fetchone()
    stored = bytes(row[0]) if row else None
    found = conn.execute(
        "SELECT reason FROM messages WHERE sha256 = ? AND direction = 'in'", (digest,)
    ).fetchone()
    if found is not None:
        return Ending(stored, "messages", str(found[0]))
    found = conn.execute("SELECT error FROM quarantine WHERE sha256 = ?", (digest,)).fetchone()
    if found is not None:
        return Ending(stored, "quarantine", str(found[0]))
    return Ending(stored, "none", "")


def half_stored(conn: sqlite3.Connection) -> list[str]:
    """Every broken invariant of the store: rows that point at raw bytes or messages that are not there."""
    checks = {
        "message without raw bytes": "SELECT count(*) FROM messages m WHERE m.direction = 'in'"
        " AND NOT EXISTS (SELECT 1 FROM raw_messages r WHERE r.sha256 = m.sha256)",
        "quarantine entry without raw bytes": "SELECT count(*) FROM quarantine q"
        " WHERE NOT EXISTS (SELECT 1 FROM raw_messages r WHERE r.sha256 = q.sha256)",
        "case without a message": "SELECT count(*) FROM cases c"
        " WHERE NOT EXISTS (SELECT 1 FROM messages m WHERE m.case_id = c.id)",
        "raw bytes whose size does not match": "SELECT count(*) FROM raw_messages WHERE length(raw) != size",
    }
    broken = [what for what, sql in checks.items() if conn.execute(sql).fetchone()[0]]
    for digest, raw in conn.execute("SELECT sha256, raw FROM raw_messages"):
        if hashlib.sha256(bytes(raw)).hexdigest() != digest:
            broken.append(f"raw bytes stored under the wrong hash {digest}")
    return broken


@dataclass
class SweepFigures:
    """What one sweep measured, for docs/reliability.md."""

    outcomes: Counter[str] = field(default_factory=Counter)
    slowest: tuple[str, float] = ("", 0.0)
    peak: tuple[str, int] = ("", 0)

    def note(self, name: str, outcome: str, elapsed: float, peak: int = 0) -> None:
        self.outcomes[outcome] += 1
        if elapsed > self.slowest[1]:
            self.slowest = (name, elapsed)
        if peak > self.peak[1]:
            self.peak = (name, peak)


def sweep() -> SweepFigures:
    """Process every corpus file in-process, each into an empty store; time and trace memory."""
    from gateway.core.config import load_config
    from gateway.pipeline.process import process
    from gateway.runtime import Runtime

    with tempfile.TemporaryDirectory() as tmp:  # imports and caches once, as a running gateway has them
        runtime = Runtime(load_config(config_for_corpus(Path(tmp))))
        process(runtime, mail(), "pipe")
        runtime.close()
    figures = SweepFigures()
    for path in corpus_files():
        with tempfile.TemporaryDirectory() as tmp:
            runtime = Runtime(load_config(config_for_corpus(Path(tmp))))
            tracemalloc.start()
            started = time.perf_counter()
            result = process(runtime, path.read_bytes(), "pipe")
            elapsed = time.perf_counter() - started
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            runtime.close()
        figures.note(name_of(path), result.outcome, elapsed, peak)
    return figures


def smtp_sweep() -> SweepFigures:
    """Send every corpus file over SMTP to a fresh `gateway serve`; outcome is the reply's last word."""
    from gateway.core.config import load_config
    from gateway.ops.server import Server

    figures = SweepFigures()
    for path in corpus_files():
        with tempfile.TemporaryDirectory() as tmp:
            server = Server(load_config(config_for_corpus(Path(tmp))))
            server.start()
            try:
                started = time.perf_counter()
                code, text = smtp_send(server.listener.address[1], as_smtp(path.read_bytes()))
                elapsed = time.perf_counter() - started
            finally:
                server.stop()
        outcome = text.decode().rpartition(" ")[2] if code == 250 else f"{code} {text.decode()}"
        figures.note(name_of(path), outcome, elapsed)
    return figures


def main() -> int:
    files = corpus_files()
    if not files:
        print(f"no corpus at {CORPUS}", file=sys.stderr)
        return 66
    for title, figures in (("in-process", sweep()), ("smtp", smtp_sweep())):
        counts = ", ".join(f"{k}: {v}" for k, v in sorted(figures.outcomes.items()))
        print(f"{title}: {len(files)} messages; {counts}")
        print(f"  slowest: {figures.slowest[0]} {figures.slowest[1]:.3f} s")
        if figures.peak[1]:
            print(f"  peak traced memory: {figures.peak[0]} {figures.peak[1] / 2**20:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
