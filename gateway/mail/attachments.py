"""A stored message's attachments as files: names made safe, contents decoded, never outside the folder."""

from __future__ import annotations

import email
import re
from email.message import Message
from email.policy import compat32
from pathlib import Path

from gateway.mail.message import decode_text, parse

# Letters, digits and a few harmless marks; everything else in a stranger's file name becomes "_".
_UNSAFE = re.compile(r"[^\w.\- ()+,@]", re.UNICODE)
MAX_NAME = 120


def _is_attachment(part: Message) -> bool:
    return not part.is_multipart() and (
        bool(part.get_filename()) or part.get_content_disposition() == "attachment"
    )


def files(raw: bytes) -> list[tuple[str, bytes]]:
    """(name as the sender gave it, decoded bytes) for each attachment, in the message's order."""
    # parse() applies the limits first: a shape built to exhaust a parser is refused before the walk.
    parse(raw)
    msg = email.message_from_bytes(raw, policy=compat32)
    found = []
    for part in msg.walk():
        if _is_attachment(part):
            payload = part.get_payload(decode=True)
            name = decode_text(part.get_filename() or "")
            found.append((name or "(unnamed)", payload if isinstance(payload, bytes) else b""))
    return found


def safe_name(name: str, index: int) -> str:
    """A file name that names no folder, hides nothing (no leading dot) and fits any file system."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    base = _UNSAFE.sub("_", base).strip(" .")[:MAX_NAME]
    return base if base and base != "(unnamed)" else f"attachment-{index}"


def save(raw: bytes, folder: Path) -> list[Path]:
    """Write each attachment into `folder` (created if missing); an existing file is never replaced."""
    folder.mkdir(parents=True, exist_ok=True)
    root = folder.resolve()
    written = []
    for index, (name, data) in enumerate(files(raw), 1):
        candidate = safe_name(name, index)
        stem, dot, suffix = candidate.rpartition(".")
        stem, suffix = (stem, dot + suffix) if stem else (candidate, "")
        number = 1
        while True:
            target = root / candidate
            # safe_name has no separators; this holds the promise even if that ever changed.
            if target.parent != root:
                raise ValueError(f"unsafe attachment name {name!r}")
            try:
                with target.open("xb") as handle:
                    handle.write(data)
                break
            except FileExistsError:
                number += 1
                candidate = f"{stem}-{number}{suffix}"
        written.append(target)
    return written
