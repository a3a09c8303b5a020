"""Mail addresses in one canonical form: lower-case, IDNA domain, no display name."""

from __future__ import annotations

import re
from email.utils import getaddresses

# RFC 5322 atext plus any non-ASCII letter (SMTPUTF8 mailboxes such as "ås@bø.example").
_LOCAL_OK = re.compile(r"^[^\s@\"(),:;<>\[\]\\\x00-\x1f\x7f]+$")
# RFC 5321 4.5.3.1.3: a path is at most 256 octets with its brackets. A longer "address" is no
# mailbox, and answering it put a To line past 998 octets that the relay refuses for good.
MAX_ADDRESS = 254


class AddressError(ValueError):
    """An address that cannot be a mailbox."""


def normalise_address(value: str) -> str:
    """Return `local@domain` lower-cased with an IDNA (punycode) domain, or raise."""
    address = value.strip().strip("<>").strip()
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        raise AddressError(f"{value!r} is not an address")
    if not _LOCAL_OK.match(local) or local.startswith(".") or ".." in local:
        raise AddressError(f"{value!r} has an invalid local part")
    try:
        ascii_domain = domain.rstrip(".").encode("idna").decode("ascii")
    except UnicodeError:
        raise AddressError(f"{value!r} has an invalid domain") from None
    if "." not in ascii_domain or not re.fullmatch(r"[A-Za-z0-9.\-]+", ascii_domain):
        raise AddressError(f"{value!r} has an invalid domain")
    address = f"{local.lower()}@{ascii_domain.lower()}"
    if len(address.encode()) > MAX_ADDRESS:
        raise AddressError(f"{value[:80]!r}… is longer than {MAX_ADDRESS} octets")
    return address


def try_normalise(value: str) -> str | None:
    try:
        return normalise_address(value)
    except AddressError:
        return None


def domain_of(address: str) -> str:
    return address.rpartition("@")[2]


# The shapes nearly every From and To has: "Kari Nordmann <kari@nordby-skole.example>" or a bare
# address. email.utils.getaddresses parses every header twice (strict mode) at about 16 µs; these
# get the same answer from one regex, and anything else (quotes, commas, dots or encoded words in
# the name, several addresses, folding) still goes to it (tests/test_intake_details.py compares).
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
# local@domain with dot-atoms only: no quoting, no comments, no address literal.
PLAIN_ADDRESS = rf"{_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
_NAME_WORD = r"[^\s\"(),.:;<>@\[\]\\\x00-\x1f\x7f]+"
_NAME = rf"{_NAME_WORD}(?: {_NAME_WORD})*"
_SIMPLE_MAILBOX = re.compile(
    rf"[ \t]*(?:(?:(?P<name>{_NAME}) ?)?<(?P<angle>{PLAIN_ADDRESS})>|(?P<bare>{PLAIN_ADDRESS}))[ \t]*"
)


def _mailboxes(values: list[str]) -> list[tuple[str, str]]:
    present = [v for v in values if v]
    simple = _SIMPLE_MAILBOX.fullmatch(present[0]) if len(present) == 1 else None
    if simple is None:
        return getaddresses(present)
    return [(simple.group("name") or "", simple.group("angle") or simple.group("bare"))]


def parse_mailboxes(values: list[str]) -> list[tuple[str, str]]:
    """(display name, canonical address) for every valid mailbox in header values."""
    found: list[tuple[str, str]] = []
    for name, address in _mailboxes(values):
        canonical = try_normalise(address)
        if canonical is not None:
            found.append((name, canonical))
    return found
