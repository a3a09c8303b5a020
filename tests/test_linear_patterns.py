"""Every pattern run on text a stranger writes takes time in proportion to the text, never its square."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import pytest

from gateway.cases import escalation
from gateway.directory.who_wrote import Sender
from gateway.mail import header_repair, limits, screening
from gateway.notices.echo import echo

SMALL = 20_000  # characters; the large input is ten times this


def _evidence(text: str) -> escalation.Evidence:
    return escalation.Evidence(text, [], Sender("kari@nordby-skole.example", "Kari", "unknown"))


def _search(pattern: re.Pattern[str]) -> Callable[[str], object]:
    return lambda text: pattern.search(text)


def _search_bytes(pattern: re.Pattern[bytes]) -> Callable[[str], object]:
    return lambda text: pattern.search(text.encode())


def _all(pattern: re.Pattern[bytes]) -> Callable[[str], object]:
    return lambda text: list(pattern.finditer(text.encode()))


def _location(text: str) -> object:
    return escalation._location(_evidence(text))


def _repair(text: str) -> object:
    return header_repair.repair(text.encode() + b":\nSubject: Hei\n\nTekst\n")


def _signature(text: str) -> object:
    return escalation._CLIENT_SIGNATURE.sub("", text)


# (name, what runs on the text, a line that repeated is the worst case we know for it)
CASES: list[tuple[str, Callable[[str], object], str]] = [
    ("client signature, blank lines", _signature, "\n \n\n"),
    ("client signature, long blanks", _signature, "   \t  "),
    ("location, 'bygget' on every line", _location, "det gamle bygget\n"),
    ("location, room words without numbers", _location, "rom   room  klasserom \n"),
    ("username, dotted run", _search(escalation._USERNAME), "a.b-c."),
    ("username, many @", _search(escalation._USERNAME), "a@b@c."),
    ("phone, digits in pairs", _search(escalation._PHONE), "12 34 56 "),
    ("mac, colon pairs", _search(escalation._MAC), "aa:bb:cc:"),
    ("when, clock words", _search(escalation._WHEN), "kl 12. "),
    ("wireless", _search(escalation._WIRELESS), "guest guestwifi "),
    ("wired", _search(escalation._WIRED), "kabel"),
    ("device", _search(escalation._DEVICE), "mac macbookx "),
    ("troubleshooting", _search(escalation._TROUBLESHOOT), "startet aaaa "),
    ("eduroam and guest", _search(escalation._GUEST), "gjestgjest"),
    ("auto subject", _search(screening._AUTO_SUBJECT), "auto out of "),
    ("daemon sender", _search(screening._DAEMONS), "no-no-"),
    ("dsn message-id", _search(screening._MESSAGE_ID), "message-id: <aaaa\n"),
    ("dsn action and status", _search(screening._STATUS), "status: 9\naction: \n"),
    ("limits: header end", _search_bytes(limits._HEADER_END), "\r\n\r"),
    ("limits: encoded words", _all(limits._ENCODED_WORD), "=?utf-8?x=?"),
    ("limits: address fields", _all(limits._ADDRESS_FIELD), "from:a\r\n b\r\nto:"),
    ("limits: structure", _all(limits._STRUCTURE), "\n--b\n-"),
    ("limits: boundary", _all(limits._BOUNDARY), "boundary = "),
    ("limits: message type", _search_bytes(limits._MESSAGE_TYPE), "  \n message"),
    ("header repair, a first line of dashes", _repair, "-"),
    ("echoed subject, dotted run", echo, "a."),
    ("echoed subject, one long word", echo, "x"),
    ("all escalation fields", lambda text: escalation.found_in(_evidence(text)), "bygget \n \n a.b"),
]


def _seconds(run: Callable[[str], object], text: str) -> float:
    """The best of three runs: the machine is shared, and only the fastest is the pattern's own cost."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        run(text)
        best = min(best, time.perf_counter() - start)
    return best


@pytest.mark.parametrize(("name", "run", "unit"), CASES, ids=[case[0] for case in CASES])
def test_ten_times_the_text_takes_about_ten_times_as_long(
    name: str, run: Callable[[str], object], unit: str
) -> None:
    """200 KB of the worst text we know for a pattern takes at most about ten times 20 KB's time."""
    small = (unit * (SMALL // len(unit) + 1))[:SMALL]
    large = (unit * (10 * SMALL // len(unit) + 1))[: 10 * SMALL]
    small_time, large_time = _seconds(run, small), _seconds(run, large)
    # Quadratic would be a hundred times; 25 leaves room for a noisy neighbour, 20 ms for timers.
    assert large_time <= 25 * small_time + 0.02, (name, small_time, large_time)


def test_only_the_first_64_kb_of_a_message_is_analysed() -> None:
    """Evidence past the first 64 KB of text is not looked at, however much text follows."""
    padding = "tekst " * (escalation.ANALYSED_CHARS // 6 + 1)
    late = escalation.found_in(_evidence(padding + " wifi i bygg 3, rom 204"))
    early = escalation.found_in(_evidence("wifi i bygg 3, rom 204 " + padding))
    assert "connection" not in late and "location" not in late
    assert early["connection"] == "wifi" and early["location"].startswith("bygg 3, rom")
