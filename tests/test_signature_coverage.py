"""Property: no edit of the header fields of a signed mail makes the gateway trust more than was signed."""

from __future__ import annotations

import dkim
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.mail.auth import authenticate
from gateway.mail.message import parse
from tests.support import dkim_keypair, mail

KEY, RECORD = dkim_keypair()
SIGNED = [b"from", b"to", b"subject", b"date", b"message-id", b"content-type", b"x-ticket"]
NAMES = ["From", "To", "Subject", "Date", "Message-ID", "Content-Type", "X-Ticket", "Reply-To", "Comments"]
ORIGINAL = mail(
    sender="Kari Nordmann <kari.nordmann@nordby-skole.example>",
    subject="Ukesrapport",
    body="Alt i orden.\n",
    headers={"X-Ticket": "42"},
)
GENUINE = dkim.sign(ORIGINAL, b"sel1", b"nordby-skole.example", KEY, include_headers=SIGNED) + ORIGINAL


def lookup(name: bytes, timeout: float = 3) -> bytes | None:
    return RECORD if name == b"sel1._domainkey.nordby-skole.example." else None


def split(raw: bytes) -> tuple[list[bytes], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    fields: list[bytes] = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            fields[-1] += b"\r\n" + line  # a folded continuation belongs to the field above
        else:
            fields.append(line)
    return fields, body


def first_values(raw: bytes) -> dict[str, str]:
    """What the gateway reads of each signed field: the first instance."""
    headers = parse(raw).headers
    return {name.decode(): " ".join(headers.get(name.decode(), [""])[0].split()) for name in SIGNED}


EDIT = st.one_of(
    st.tuples(
        st.just("add"),
        st.sampled_from(NAMES),
        st.sampled_from(["Bestilling: port 3389", "x"]),
        st.integers(0, 20),
    ),
    st.tuples(st.just("duplicate"), st.integers(0, 20), st.integers(0, 20)),
    st.tuples(st.just("move"), st.integers(0, 20), st.integers(0, 20)),
)


def edited(edits: list[tuple[object, ...]]) -> bytes:
    fields, body = split(GENUINE)
    for edit in edits:
        if edit[0] == "add":
            _, name, value, at = edit
            fields.insert(int(at) % (len(fields) + 1), f"{name}: {value}".encode())  # type: ignore[call-overload]
        elif edit[0] == "duplicate":
            _, which, at = edit
            fields.insert(int(at) % (len(fields) + 1), fields[int(which) % len(fields)])  # type: ignore[call-overload]
        else:
            _, which, at = edit
            moved = fields.pop(int(which) % len(fields))  # type: ignore[call-overload]
            fields.insert(int(at) % (len(fields) + 1), moved)  # type: ignore[call-overload]
    return b"\r\n".join(fields) + b"\r\n\r\n" + body


def test_the_genuine_mail_is_authenticated() -> None:
    """The unedited signed mail is proof, so the property below has something to lose."""
    assert authenticate(parse(GENUINE), "smtp", "", True, lookup).authenticated


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(EDIT, min_size=1, max_size=4))
def test_edited_header_fields_never_widen_what_is_authenticated(edits: list[tuple[object, ...]]) -> None:
    """Added, duplicated or reordered fields: trusted only if every signed field the gateway reads is as signed."""
    raw = edited(edits)
    verdict = authenticate(parse(raw), "smtp", "", True, lookup)
    if verdict.authenticated:
        assert first_values(raw) == first_values(GENUINE), verdict.reason
