"""Searching lower-cased text without re.I finds what re.I found, and falls back where it could not."""

from __future__ import annotations

import re

import pytest

from gateway.cases import escalation
from gateway.core import folding
from gateway.directory.who_wrote import Sender
from gateway.mail.message import parse
from gateway.rules.engine import compile_when
from gateway.rules.predicates import Facts

TEXTS = [
    "Trådløst nett (EDUROAM) er nede i BYGG 4, ROM B210, siden kl 08.15 I DAG",
    "WiFi virker ikke på MacBook, prøvd RESTART. MAC 00:1A:2B:3C:4D:5E",
    "Ingen ting her",
    "İstanbul-kontoret: Gjestenett ute, ring 912 34 567",  # İ grows when lower-cased
    "ÆØÅ æøå Skriveren på Kontoret",
]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (r"\b(trådløs\w*|wifi)\b", True),
        (r"rom\s*\d+|\Bx\S", True),
        (r"(a)\1", True),
        (r"[a-z]?\d+\.", True),
        (r"[A-Z]\d+", False),  # an upper-case class would never match folded text
        (r"\x41", False),  # a hex escape can name an upper-case letter
        (r"\N{LATIN SMALL LETTER A}", False),
        (r"(?-i:abc)", False),  # case-sensitive on purpose
        (r"(?s-i:ok)", False),
        (r"(?m-i:ok)", False),
        (r"\101", False),  # octal for "A", not a back-reference
        (r"\0", False),
        (r"(a)(b)\2\d", True),
        (r"\u00c6", False),
    ],
)
def test_foldable(source: str, expected: bool) -> None:
    assert folding.foldable(source) is expected


def test_escalation_patterns_are_all_foldable() -> None:
    """They are compiled without re.I and searched in folded text, so they must be lower case."""
    patterns = [v for k, v in vars(escalation).items() if k.isupper() and isinstance(v, re.Pattern)]
    assert len(patterns) >= 10
    for pattern in patterns:
        if pattern is escalation._CLIENT_SIGNATURE:
            continue  # runs on the original text, with re.I
        assert folding.foldable(pattern.pattern), pattern.pattern
        assert not pattern.flags & re.I, pattern.pattern


@pytest.mark.parametrize("text", TEXTS)
def test_escalation_finds_what_re_i_found(text: str) -> None:
    """Every word pattern, against the same pattern under re.I on the original text."""
    evidence = escalation.Evidence(text, [], Sender("kari@example.no", "Kari", "unknown"))
    for name in (
        "_WHEN",
        "_WIRELESS",
        "_WIRED",
        "_USERNAME",
        "_BUILDING",
        "_ROOM",
        "_NUMBERED_ROOM",
        "_DEVICE",
        "_TROUBLESHOOT",
        "_MAC",
    ):
        pattern = getattr(escalation, name)
        old = re.compile(pattern.pattern, pattern.flags | re.I).search(text)
        new = evidence.search(pattern)
        assert (old is None) == (new is None), (name, text)
        if old is not None and len(text) == len(text.lower()):
            assert new == old.group(0), (name, text)  # quoted in the writer's own letters


def test_quote_keeps_the_writers_letters() -> None:
    evidence = escalation.Evidence(
        "Problemer med WIFI i BYGG 4 ROM 210", [], Sender("a@b.no", "A", "unknown")
    )
    found = escalation.found_in(evidence)
    assert found["connection"] == "WIFI"
    assert found["location"] == "BYGG 4 ROM"
    grown = escalation.Evidence("İİ WIFI", [], Sender("a@b.no", "A", "unknown"))
    assert escalation.found_in(grown)["connection"] == "wifi"  # positions moved: quoted from folded text


def _facts(subject: str, body: str) -> Facts:
    raw = f"From: kari@example.no\r\nSubject: {subject}\r\n\r\n{body}\r\n".encode()
    sender = Sender("kari@example.no", "Kari", "unknown")
    return Facts(parse(raw), sender, "none", authenticated=False, automated=False, open_hours=True)


def test_rule_patterns_fold_or_keep_re_i() -> None:
    facts = _facts("HASTER: Nettet er NEDE", "Hele BYGG A")
    lower = compile_when({"subject": "nettet er nede"}, "t")
    upper = compile_when({"body": "BYGG [A-Z]"}, "t")  # not foldable: searched with re.I
    assert lower(facts) == "subject matches 'Nettet er NEDE'"
    assert upper(facts) == "body matches 'BYGG A'"
    assert compile_when({"subject": "ingen treff"}, "t")(facts) is None
