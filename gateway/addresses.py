"""Mail addresses in one canonical form: lower-case, IDNA domain, no display name."""

from __future__ import annotations

import re
from email.utils import getaddresses

# RFC 5322 atext plus any non-ASCII letter (SMTPUTF8 mailboxes such as "ås@bø.example").
_LOCAL_OK = re.compile(r"^[^\s@\"(),:;<>\[\]\\\x00-\x1f\x7f]+$")


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
    return f"{local.lower()}@{ascii_domain.lower()}"


def try_normalise(value: str) -> str | None:
    try:
        return normalise_address(value)
    except AddressError:
        return None


def domain_of(address: str) -> str:
    return address.rpartition("@")[2]


def parse_mailboxes(values: list[str]) -> list[tuple[str, str]]:
    """(display name, canonical address) for every valid mailbox in header values."""
    found: list[tuple[str, str]] = []
    for name, address in getaddresses([v for v in values if v]):
        canonical = try_normalise(address)
        if canonical is not None:
            found.append((name, canonical))
    return found
