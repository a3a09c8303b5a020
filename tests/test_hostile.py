"""Hostile shapes: refused before the expensive parse, kept whole in quarantine; the worker lives on."""

from __future__ import annotations

import gc
import os
import socket
import sqlite3
import time
from pathlib import Path
from typing import BinaryIO

import pytest

from gateway.core.config import Config, load_config
from gateway.mail import limits
from gateway.mail.limits import MessageTooComplex
from gateway.mail.message import parse_unchecked
from gateway.ops.server import Server
from gateway.pipeline.process import process
from gateway.runtime import Runtime
from tests.corpus import config_for_corpus, ending, half_stored
from tests.support import mail, smtp_send

KARI = "kari.nordmann@nordby-skole.example"
HEAD = (
    f"From: Kari Nordmann <{KARI}>\r\nTo: kontakt@service.example\r\n"
    "Date: Tue, 24 Nov 2026 10:00:00 +0100\r\nMIME-Version: 1.0\r\n"
).encode()


def nested_multipart(depth: int) -> bytes:
    opening = b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i) for i in range(depth)
    )
    closing = b"".join(b"\r\n--b%d--\r\n" % i for i in reversed(range(depth)))
    return HEAD + b"Subject: deep\r\n" + opening + b"Content-Type: text/plain\r\n\r\nbunnen" + closing


def many_parts(count: int) -> bytes:
    body = b"--p\r\n\r\nx\r\n" * count + b"--p--\r\n"
    return HEAD + b'Subject: parts\r\nContent-Type: multipart/mixed; boundary="p"\r\n\r\n' + body


def many_encoded_words(count: int) -> bytes:
    subject = b"\r\n ".join([b"=?utf-8?q?nettet_er_nede_p=C3=A5_rom_204?="] * count)
    return HEAD + b"Subject: " + subject + b"\r\n\r\nHjelp!\r\n"


def many_addresses(count: int) -> bytes:
    to = b",\r\n ".join(b"bruker%d@nordby-skole.example" % i for i in range(count))
    head = HEAD.replace(b"To: kontakt@service.example\r\n", b"")
    return head + b"To: " + to + b"\r\nSubject: alle\r\n\r\nHjelp!\r\n"


def long_header_line(size: int) -> bytes:
    return HEAD + b"Subject: " + b"a" * size + b"\r\n\r\nHjelp!\r\n"


# name -> (message, what the quarantine reason names)
SHAPES = {
    "nesting-1000": (nested_multipart(1000), "MIME nesting depth: 1000"),
    "parts-50000": (many_parts(50_000), "MIME parts: 50000"),
    "encoded-words-20000": (many_encoded_words(20_000), "encoded-words in the header: 20000"),
    "addresses-20000": (many_addresses(20_000), "addresses in From/To/Cc: 20001"),
    "header-line-1mb": (long_header_line(1_000_000), "bytes in one header line: 1000009"),
}
SMUGGLING = {
    "lf-dot-lf": b"\n.\n",
    "cr-dot-crlf": b"\r.\r\n",
    "lf-dot-crlf": b"\n.\r\n",
    "crlf-dot-lf": b"\r\n.\n",
    "crlf-dot-cr": b"\r\n.\r",
}


@pytest.fixture
def config(tmp_path: Path) -> Config:
    """Relay-less, and taking messages up to 25 MB, so the shapes reach the gateway, not the size limit.

    Overrides conftest's `config`, so its `runtime` and `server` fixtures run on this one.
    """
    return load_config(config_for_corpus(tmp_path))


def _consistent(db: Path) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        return half_stored(conn)
    finally:
        conn.close()


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_hostile_shape_is_quarantined_with_its_reason(shape: str, runtime: Runtime) -> None:
    """Each hostile shape is refused by the pre-scan in under a second, quarantined whole with its reason."""
    raw, reason = SHAPES[shape]
    started = time.perf_counter()
    result = process(runtime, raw, "pipe")
    elapsed = time.perf_counter() - started
    assert result.outcome == "quarantined"
    assert result.reason.startswith(f"MessageTooComplex: {reason}")
    assert elapsed < 1.0, f"{shape} took {elapsed:.2f} s"
    conn = runtime.store.conn
    kept = ending(conn, raw)
    assert kept.stored == raw and kept.record == "quarantine" and reason in kept.reason
    assert half_stored(conn) == []


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_worker_survives_each_hostile_shape_over_smtp(shape: str, server: Server) -> None:
    """After each hostile message over SMTP (quarantined or 500), a normal mail still gets 250 and a case."""
    port = server.listener.address[1]
    raw, _ = SHAPES[shape]
    code, text = smtp_send(port, raw)
    if shape == "header-line-1mb":
        assert code == 500, text  # aiosmtpd enforces RFC 5321's 1,000 octets before we see it
    else:
        assert (code, text) == (250, b"2.0.0 Stored as quarantined")
    assert smtp_send(port, mail()) == (250, b"2.0.0 Stored as opened")
    assert server.runtime.store.one("SELECT count(*) AS n FROM cases")["n"] == 1
    assert _consistent(server.runtime.config.storage.database) == []


def test_nul_bytes_and_bare_line_feeds_are_ordinary_mail(runtime: Runtime) -> None:
    """NUL bytes in header and body and bare-LF line ends open a case; the NUL never reaches the subject."""
    raw = mail(subject="Nettet\x00er nede", body="Hei\x00,\n\ningen nett på rom 204.\n").replace(
        b"\r\n", b"\n"
    )
    result = process(runtime, raw, "pipe")
    assert result.outcome == "opened", result
    case = runtime.store.one("SELECT subject FROM cases")
    assert case["subject"] == "Nettet er nede"
    assert ending(runtime.store.conn, raw).stored == raw


def test_message_just_inside_every_limit_is_processed(runtime: Runtime) -> None:
    """A message at every limit at once is parsed to the end, no recursion error, and gets a case in time."""
    depth = limits.MAX_NESTING - 1
    parts = limits.MAX_MIME_PARTS - depth
    nested = nested_multipart(depth).replace(
        b"Content-Type: text/plain\r\n\r\nbunnen",
        b'Content-Type: multipart/mixed; boundary="p"\r\n\r\n' + b"--p\r\n\r\nx\r\n" * parts + b"--p--",
    )
    to = b", ".join(b"b%d@nordby-skole.example" % i for i in range(limits.MAX_ADDRESSES - 2))
    subject = b" ".join([b"=?utf-8?q?nede?="] * limits.MAX_ENCODED_WORDS)
    raw = nested.replace(b"Subject: deep", b"Subject: " + subject).replace(
        b"To: kontakt@service.example", b"To: kontakt@service.example, " + to
    )
    raw = raw.replace(
        b"MIME-Version", b"X-Long: " + b"x" * (limits.MAX_HEADER_LINE - 20) + b"\r\nMIME-Version"
    )
    shape = limits.check(raw)
    assert (shape.nesting, shape.parts) == (limits.MAX_NESTING, limits.MAX_MIME_PARTS)
    started = time.perf_counter()
    result = process(runtime, raw, "pipe")
    elapsed = time.perf_counter() - started
    assert result.outcome == "opened", result
    assert elapsed < 2.0, f"took {elapsed:.2f} s"


def test_recursion_in_the_parser_becomes_too_complex() -> None:
    """Past the pre-scan, a parse that runs out of recursion raises MessageTooComplex, not RecursionError."""
    with pytest.raises(MessageTooComplex, match="nested too deeply"):
        parse_unchecked(nested_multipart(1000))


def test_parse_past_its_time_limit_is_stopped_and_quarantined(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A big message whose parse outlives the time limit is stopped and quarantined; the next mail is fine."""
    monkeypatch.setattr(limits, "PARSE_TIMEOUT_SECONDS", 0.01)
    big = mail(body="Loggen følger.\n" + "linje med logg\n" * 80_000)
    assert len(big) > limits.ISOLATE_ABOVE_BYTES
    result = process(runtime, big, "pipe")
    assert result.outcome == "quarantined"
    assert "parsing took longer than 0.01 s" in result.reason
    assert ending(runtime.store.conn, big).stored == big
    monkeypatch.undo()
    assert process(runtime, mail(), "pipe").outcome == "opened"


def _read_reply(stream: BinaryIO) -> int:
    """One SMTP reply (possibly multi-line) from the server; returns its code."""
    while True:
        line = stream.readline()
        if not line:
            raise AssertionError("connection closed while waiting for a reply")
        if line[3:4] != b"-":
            return int(line[:3])


@pytest.mark.parametrize("sequence", sorted(SMUGGLING))
def test_smtp_smuggling_does_not_make_a_second_message(sequence: str, server: Server) -> None:
    """A fake end-of-data (bare LF or CR around the dot) stays inside the one message; nothing is smuggled."""
    smuggled = (
        b"MAIL FROM:<ceo@nordby-skole.example>\r\nRCPT TO:<kontakt@service.example>\r\nDATA\r\n"
        b"From: Rektor <ceo@nordby-skole.example>\r\nSubject: smuggled\r\n\r\nBetal fakturaen.\r\n"
    )
    payload = mail().rstrip(b"\r\n") + SMUGGLING[sequence] + smuggled + b".\r\n"
    host, port = server.listener.address
    with socket.create_connection((host, port), timeout=30) as sock, sock.makefile("rb") as stream:
        assert _read_reply(stream) == 220
        for command, code in (
            (b"EHLO client.example", 250),
            (f"MAIL FROM:<{KARI}>".encode(), 250),
            (b"RCPT TO:<kontakt@service.example>", 250),
            (b"DATA", 354),
        ):
            sock.sendall(command + b"\r\n")
            assert _read_reply(stream) == code, command
        sock.sendall(payload)
        after_data = [_read_reply(stream)]
        sock.sendall(b"QUIT\r\n")
        while line := stream.readline():
            if line[3:4] != b"-":
                after_data.append(int(line[:3]))
    assert after_data == [250, 221]
    rows = server.runtime.store.query("SELECT subject, sha256 FROM messages WHERE direction = 'in'")
    assert len(rows) == 1 and rows[0]["subject"] != "smuggled"
    stored = server.runtime.store.one("SELECT raw FROM raw_messages WHERE sha256 = ?", (rows[0]["sha256"],))
    assert b"Subject: smuggled" in bytes(stored["raw"])
    assert smtp_send(port, mail())[0] == 250


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _mixed(number: int) -> bytes:
    """Message `number` of a stress mix: cases, replies, strangers, auto-replies, orders, poison, DSNs."""
    mid = f"<stress-{number}@client.example>"
    kind = number % 7
    if kind == 0:
        return mail(message_id=mid)
    if kind == 1:
        return mail(sender="Ola <ola@ukjent.example>", message_id=mid)
    if kind == 2:
        return mail(subject="SV: [SSC#1] mer informasjon", message_id=mid)
    if kind == 3:
        return mail(headers={"Auto-Submitted": "auto-replied"}, subject="Fravær", message_id=mid)
    if kind == 4:
        # Its own subject: under the default "Nettet er nede" the order would be a fault report (issue 18).
        return mail(
            sender="Per <per.hansen@nordby-skole.example>",
            subject="Ny ruter",
            body="Vi vil bestille en ny ruter.",
        )
    if kind == 5:
        return nested_multipart(1000) + b"%d\r\n" % number
    return mail(sender="MAILER-DAEMON@mx.example", subject="Undelivered Mail", body=f"Message-ID: {mid}\n")


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs /proc to read the resident size")
def test_memory_stays_flat_over_two_thousand_messages(runtime: Runtime) -> None:
    """Two thousand mixed messages in one worker: memory after the second thousand stays near the first."""
    outcomes: set[str] = set()
    for number in range(250):  # warm-up: imports, SQLite's page cache, compiled templates
        process(runtime, _mixed(number), "pipe")
    resident = []
    for batch in (range(250, 1250), range(1250, 2250)):
        for number in batch:
            outcomes.add(process(runtime, _mixed(number), "pipe").outcome)
        gc.collect()
        resident.append(_rss())
    growth = resident[1] - resident[0]
    assert growth < 16 * 2**20, f"resident memory grew {growth / 2**20:.1f} MB over the second thousand"
    assert outcomes == {"opened", "appended", "held", "ignored", "refused", "quarantined"}
    assert half_stored(runtime.store.conn) == []


def test_structure_scan_finds_what_a_line_anchored_scan_finds() -> None:
    """The pre-scan jumps between newlines; it must see the same headers and delimiters as ^ under re.M."""
    import re

    from tests.corpus import corpus_files

    anchored = re.compile(
        rb"^content-type[ \t]*:(?P<ctype>.*(?:\r?\n[ \t].*)*)|^--(?P<delim>.*?)\r?$", re.I | re.M
    )
    samples = [p.read_bytes() for p in corpus_files()] + [
        b"Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\n\r\nx\r\n--a--\r\n",
        b"--a\nContent-type :\n text/plain\n--a--",
        b"",
        b"\n\n--\n",
    ]
    for raw in samples:
        expected = [(m.group("ctype"), m.group("delim")) for m in anchored.finditer(raw)]
        found = [(m.group("ctype"), m.group("delim")) for m in limits._STRUCTURE.finditer(b"\n" + raw)]
        assert found == expected
