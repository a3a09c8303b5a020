"""The hand-made boundary matcher gives the feed parser exactly what its compiled regex gave."""

from __future__ import annotations

import email
import re
import sys
from email.message import Message
from email.policy import compat32
from pathlib import Path
from typing import Any

import pytest

from gateway import boundaries
from tests.corpus import corpus_files, name_of

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from mailmix import generate

_LINES = [
    "--b1\n",
    "--b1\r\n",
    "--b1\r",
    "--b1",
    "--b1--\n",
    "--b1--",
    "--b1-- \t\r\n",
    "--b1  \n",
    "--b1x\n",
    "--b1--x\n",
    "--b1\n\n",
    " --b1\n",
    "--B1\n",
    "--b2\n",
    "",
]


@pytest.mark.parametrize("boundary", ["b1", "=_alt_00000001", "a.b+c(d)?*[e]", "_000_AM0PR02MB$^|{}"])
def test_match_groups_equal_the_regex(boundary: str) -> None:
    separator = "--" + boundary
    pattern = "(?P<sep>" + re.escape(separator) + r")(?P<end>--)?(?P<ws>[ \t]*)(?P<linesep>\r\n|\r|\n)?$"
    real = re.compile(pattern)
    shim = boundaries._FeedParserRe().compile(pattern)
    assert isinstance(shim, boundaries.BoundaryPattern)
    for line in [ln.replace("b1", boundary) for ln in _LINES] + _LINES:
        expected, got = real.match(line), shim.match(line)
        assert (expected is None) == (got is None), line
        if expected and got:
            for group in (0, 1, 2, 3, 4, "sep", "end", "ws", "linesep"):
                assert got.group(group) == expected.group(group), (line, group)
            assert got.span() == expected.span() and got.groupdict() == expected.groupdict()


def test_other_patterns_are_compiled_as_before() -> None:
    shim = boundaries._FeedParserRe()
    assert boundaries.boundary_separator(r"(\r\n|\r|\n)") is None
    # A pattern that only looks like a boundary pattern (unescaped dot) is left to `re`.
    assert (
        boundaries.boundary_separator(r"(?P<sep>--a.b)(?P<end>--)?(?P<ws>[ \t]*)(?P<linesep>\r\n|\r|\n)?$")
        is None
    )
    assert isinstance(shim.compile(r"(\r\n|\r|\n)"), re.Pattern)
    assert shim.escape is re.escape


@pytest.mark.parametrize(
    "text",
    ["a\r\n", "a\n", "a\r", "\r\n", "\n", "\r", "", "ab", "a\n\n", "a\r\r\n", "a\n\r", "x" * 5000 + "\r\n"],
)
def test_line_end_equals_the_regex(text: str) -> None:
    real = re.compile(r"(\r\n|\r|\n)\Z").search(text)
    got = boundaries.LineEnd().search(text)
    assert (real and (real.span(), real.group(0))) == (got and (got.span(), got.group(0)))


def _shape(msg: Message) -> list[Any]:
    """Everything the parse produced that the pipeline can see, part by part."""
    shape: list[Any] = []
    for part in msg.walk():
        payload = part.get_payload()
        shape.append(
            (
                part.get_content_type(),
                part.items(),
                part.preamble,
                part.epilogue,
                [type(d).__name__ for d in part.defects],
                None if part.is_multipart() else payload,
            )
        )
    return shape


def _raw_messages() -> list[tuple[str, bytes]]:
    found = [(name_of(p), p.read_bytes()) for p in corpus_files()]
    mix = generate(
        200, "boundaries", seed=11, registry=Path(__file__).resolve().parents[1] / "data" / "contacts.toml"
    )
    return found + [(f"mix/{kind}/{i}", raw) for i, (kind, _s, raw, _m) in enumerate(mix)]


def test_corpus_and_mix_parse_identically() -> None:
    """The corpus's broken multiparts (missing ends, nested, odd endings) and the bench mix."""
    messages = _raw_messages()
    multipart = 0
    try:
        boundaries.uninstall()
        before = [_shape(email.message_from_bytes(raw, policy=compat32)) for _, raw in messages]
    finally:
        boundaries.install()
    for (name, raw), expected in zip(messages, before, strict=True):
        got = _shape(email.message_from_bytes(raw, policy=compat32))
        assert got == expected, name
        multipart += len(expected) > 1
    assert multipart >= 50  # the comparison covered real multipart structure, not only flat mail


def test_installed_by_the_parser() -> None:
    from gateway.mail.message import parse

    boundaries.uninstall()
    parse(b"From: kari@nordby-skole.example\r\n\r\nHei\r\n")
    assert isinstance(email.feedparser.re, boundaries._FeedParserRe)
    assert isinstance(email.feedparser.NLCRE_eol, boundaries.LineEnd)
