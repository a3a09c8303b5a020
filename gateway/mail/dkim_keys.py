"""DKIM key records from a zone file named in config: the offline stand-in for DNS in tests."""

from __future__ import annotations

import shlex
from pathlib import Path

from gateway.core.config import ConfigError
from gateway.mail.auth import TxtLookup


class KeysFileError(ConfigError):
    """A line of the keys file that is not `name TXT "text" ...`."""


def read_keys(path: Path) -> dict[bytes, bytes]:
    """`selector._domainkey.domain TXT "v=DKIM1; ..."` per line; quoted strings join; # comments."""
    records: dict[bytes, bytes] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            name, kind, *texts = shlex.split(line)
        except ValueError as exc:
            raise KeysFileError(f"{path}:{number}: {exc}") from None
        if kind.upper() != "TXT" or not texts:
            raise KeysFileError(f'{path}:{number}: expected `name TXT "text"`')
        records[(name.lower().rstrip(".") + ".").encode("ascii")] = "".join(texts).encode("ascii")
    return records


def keys_file_lookup(path: Path) -> TxtLookup:
    """A TXT lookup answering only from the file; names it does not hold have no key."""
    records = read_keys(path)

    def lookup(name: bytes, timeout: float = 3) -> bytes | None:
        return records.get(name.lower().rstrip(b".") + b".")

    return lookup
