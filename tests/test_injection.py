"""Header injection: whatever an inbound subject or name decodes to, our mail keeps headers and recipients."""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import Iterator
from email.header import decode_header, make_header
from email.utils import getaddresses

import pytest
from freezegun import freeze_time
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gateway.core.config import load_config
from gateway.pipeline.process import process
from gateway.runtime import Runtime
from tests.support import write_config

KARI = "kari.nordmann@nordby-skole.example"
CONTACTS = (KARI, "it@nordby-skole.example", "per.hansen@nordby-skole.example")
# Every header compose() may write; anything else in a header block was injected.
OUR_HEADERS = {
    "from",
    "to",
    "cc",
    "reply-to",
    "subject",
    "date",
    "message-id",
    "in-reply-to",
    "references",
    "auto-submitted",
    "x-gateway-loop",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
}
BREAKS = ("\r\n", "\r", "\n", "\x00", "\x0b", "\x0c", "\x1c", "\x1e", "\x85", "\u2028", "\u2029", "\r\n\r\n")
PAYLOADS = (
    "Bcc: victim@example.com",
    "Cc: victim@example.com",
    "To: victim@example.com",
    "Reply-To: thief@example.com",
    "Content-Type: text/html",
    "X-Gateway-Loop: kontakt@service.example",
    "<victim@example.com>, evil@example.com",
)
BODIES = (
    "Nettet er nede på rom 204.",  # an incident: a receipt
    "Kritisk: hele skolen er uten nett.",  # outside opening hours: also an alert to on-call
    "Vi vil bestille en ny ruter.",  # an order: a refusal pointing to the shop
)
MESSAGE_IDS = itertools.count(1)

hostile_text = st.lists(
    st.one_of(st.text(max_size=12), st.sampled_from(BREAKS), st.sampled_from(PAYLOADS)),
    min_size=1,
    max_size=6,
).map("".join)


def encoded_word(text: str, encoding: str) -> str:
    """`text` as one RFC 2047 encoded-word: CR, LF and NUL survive transport and appear only when decoded."""
    data = text.encode("utf-8", "surrogatepass")
    if encoding == "b":
        return f"=?utf-8?b?{base64.b64encode(data).decode()}?="
    return "=?utf-8?q?" + "".join(chr(b) if chr(b).isalnum() else f"={b:02X}" for b in data) + "?="


def inbound(subject: str, name: str, sender: str, body: str, encoding: str) -> bytes:
    lines = [
        f"From: {encoded_word(name, encoding)} <{sender}>",
        "To: kontakt@service.example",
        f"Subject: {encoded_word(subject, encoding)}",
        f"Message-ID: <injection-{next(MESSAGE_IDS)}@client.example>",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "",
        body,
        "",
    ]
    return "\r\n".join(lines).encode("utf-8")


@pytest.fixture(scope="module")
def injection_runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    """Relay-less (replies stay in the outbox to inspect), no hourly brake on replies, and a Sunday
    night, so critical mail alerts the on-call as well: every kind of mail we send is exercised."""
    path = write_config(tmp_path_factory.mktemp("injection"), receipt_limit_per_hour="1000000")
    with freeze_time("2026-11-29 22:00:00", ignore=["_pytest.timing"]):  # keep pytest's own clock
        runtime = Runtime(load_config(path))
        yield runtime
        runtime.close()


def _header_lines(raw: bytes) -> list[bytes]:
    head, separator, _ = raw.partition(b"\r\n\r\n")
    assert separator, "no end of header"
    return head.split(b"\r\n")


def ours(runtime: Runtime) -> set[str]:
    """Every address the gateway may legitimately write to: the registry and the configured staff."""
    registry = runtime.registry()
    service = runtime.config.service
    contacts = {c.email for org in registry.organizations.values() for c in org.contacts}
    agents = {agent.email for agent in registry.agents.values()}
    return contacts | agents | {service.address, service.on_call_address, service.second_line_address}


def assert_ours(runtime: Runtime, row: dict[str, object], sender: str) -> None:
    """One outgoing mail: our header names once each, only our recipients, a Subject with no line break."""
    raw = bytes(row["raw"])  # type: ignore[arg-type]
    fields: dict[str, list[str]] = {}
    current: list[str] = []
    for line in _header_lines(raw):
        assert b"\r" not in line and b"\n" not in line and b"\x00" not in line, line
        if line[:1] in (b" ", b"\t"):
            current[-1] += line.decode("ascii")  # a folded continuation of the field before
            continue
        name, colon, value = line.decode("ascii").partition(":")
        assert colon, f"not a header line: {line!r}"
        current = fields.setdefault(name.lower(), [])
        current.append(value)
    assert set(fields) <= OUR_HEADERS, set(fields) - OUR_HEADERS
    assert all(len(values) == 1 for values in fields.values()), fields.keys()
    recipients = json.loads(str(row["recipients"]))
    addressed = [a for _, a in getaddresses(fields["to"] + fields.get("cc", []))]
    assert sorted(set(addressed)) == recipients
    assert set(recipients) <= ours(runtime) | {sender}
    if row["kind"] in runtime.templates.events("customer"):
        assert recipients == [sender]
    service_local, _, service_domain = runtime.config.service.address.partition("@")
    for name in ("from", "reply-to"):
        for _, address in getaddresses(fields.get(name, [])):
            local, _, domain = address.partition("@")
            plus_address = domain == service_domain and local.startswith(f"{service_local}+")
            assert address in ours(runtime) or plus_address, address
    subject = str(make_header(decode_header(fields["subject"][0])))
    assert not any(ch in subject for ch in BREAKS), repr(subject)


def _new_outbox(runtime: Runtime, after: int) -> list[dict[str, object]]:
    return runtime.store.query("SELECT id, kind, recipients, raw FROM outbox WHERE id > ?", (after,))


def _last_outbox_id(runtime: Runtime) -> int:
    return int(runtime.store.one("SELECT coalesce(max(id), 0) AS n FROM outbox")["n"])


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    subject=hostile_text,
    name=hostile_text,
    sender=st.sampled_from(CONTACTS),
    body=st.sampled_from(BODIES),
    encoding=st.sampled_from("bq"),
)
@example(
    subject="hei\r\nBcc: victim@example.com",
    name="Kari\r\nBcc: victim@example.com",
    sender=KARI,
    body=BODIES[1],
    encoding="q",
)
def test_injected_line_breaks_never_reach_our_headers(
    injection_runtime: Runtime, subject: str, name: str, sender: str, body: str, encoding: str
) -> None:
    """Decoded CR/LF, NUL or Unicode line breaks in a Subject or name leave reply headers alone."""
    before = _last_outbox_id(injection_runtime)
    result = process(injection_runtime, inbound(subject, name, sender, body, encoding), "smtp")
    assert result.outcome in ("opened", "refused"), result
    sent = _new_outbox(injection_runtime, before)
    assert sent, "a reply was expected"
    for row in sent:
        assert_ours(injection_runtime, row, sender)


def test_the_documented_example_is_one_subject_line(injection_runtime: Runtime) -> None:
    """`=?utf-8?q?hei=0D=0ABcc:_victim@example.com?=` is one Subject line; the receipt goes to Kari alone."""
    before = _last_outbox_id(injection_runtime)
    raw = (
        f"From: =?utf-8?q?Kari=0D=0ABcc:_victim@example.com?= <{KARI}>\r\n"
        "To: kontakt@service.example\r\n"
        "Subject: =?utf-8?q?hei=0D=0ABcc:_victim@example.com?= nettet er nede\r\n"
        "Message-ID: <documented@client.example>\r\n\r\nNettet er nede.\r\n"
    ).encode()
    result = process(injection_runtime, raw, "smtp")
    assert result.outcome == "opened"
    case = injection_runtime.store.one(
        "SELECT subject, requester_name FROM cases WHERE id = ?", (result.case_id,)
    )
    assert case == {
        "subject": "hei Bcc: victim@example.com nettet er nede",
        "requester_name": "Kari Bcc: victim@example.com",
    }
    (receipt,) = [row for row in _new_outbox(injection_runtime, before) if row["kind"] == "receipt"]
    assert_ours(injection_runtime, receipt, KARI)
    subject_lines = [line for line in _header_lines(bytes(receipt["raw"])) if line.startswith(b"Subject:")]  # type: ignore[arg-type]
    assert len(subject_lines) == 1


def test_display_name_that_decodes_to_an_address_is_only_a_name(injection_runtime: Runtime) -> None:
    """An encoded display name spelling a contact's address never makes the message come from that contact."""
    for spoof in (
        f"=?utf-8?q?{KARI.replace('@', '=40')}?=",
        f"=?utf-8?q?=3C{KARI.replace('@', '=40')}=3E?= <stranger@elsewhere.example>",
        f"=?utf-8?b?{base64.b64encode(f'{KARI}, '.encode()).decode()}?= <stranger@elsewhere.example>",
    ):
        raw = (
            f"From: {spoof}\r\nTo: kontakt@service.example\r\nSubject: Nettet er nede\r\n"
            f"Message-ID: <spoof-{next(MESSAGE_IDS)}@client.example>\r\n\r\nHjelp.\r\n"
        ).encode()
        result = process(injection_runtime, raw, "smtp")
        assert result.outcome == "held", (spoof, result)
        row = injection_runtime.store.one(
            "SELECT from_addr FROM messages WHERE message_id = ?", (result.message_id,)
        )
        assert row["from_addr"] in ("", "stranger@elsewhere.example"), spoof
