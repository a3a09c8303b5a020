"""The parse probe (`python -m gateway.mail.parse_probe`): parse one message from stdin, memory capped."""

from __future__ import annotations

import contextlib
import resource
import sys

from gateway.mail.limits import EXIT_MEMORY, EXIT_TOO_COMPLEX, PARSE_MEMORY_BYTES, MessageTooComplex
from gateway.mail.message import parse_unchecked


def main() -> int:
    """The probe's child: read a message on stdin, parse it under a memory ceiling, exit."""
    # On a platform without RLIMIT_AS the time bound still holds.
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_AS, (PARSE_MEMORY_BYTES, PARSE_MEMORY_BYTES))
    raw = sys.stdin.buffer.read()
    try:
        parse_unchecked(raw)
    except MessageTooComplex as exc:
        print(exc.reason, file=sys.stderr)
        return EXIT_TOO_COMPLEX
    except MemoryError:
        return EXIT_MEMORY
    return 0


if __name__ == "__main__":
    sys.exit(main())
