"""Test-only crash points: `GATEWAY_TEST_CRASH_AT=<name>` makes the process die there, like kill -9.

The crash-matrix tests (tests/test_crash_matrix.py, tests/test_imap.py) set the variable for one
`gateway serve`, `deliver` or `fetch` process to stop it at an exact step with a real SIGKILL.
Never set it in production. Unset, a call costs one comparison of two strings; the variable is
read once, at import.

Points: "after-commit" (pipeline: the transaction committed; no SMTP 250, exit 0 or IMAP
move given yet) and "after-relay-250" (outbox: the relay took a mail, not yet noted as sent).
"after-relay-250@12" dies at the twelfth delivery instead, in the middle of a burst.

`GATEWAY_TEST_PAUSE_AT=<name>:<folder>` instead halts the process at a pause point: it creates
`<folder>/paused` and waits for the test to create `<folder>/resume`. Point: "analysis" (the
escalation analysis of a message's text, which must run before the write transaction opens).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

# "<point>" dies the first time the point is reached, "<point>@N" the N-th time in this process.
CRASH_AT, _, _NTH = os.environ.get("GATEWAY_TEST_CRASH_AT", "").partition("@")
_passes_left = int(_NTH or 1)
PAUSE_AT, _, PAUSE_FOLDER = os.environ.get("GATEWAY_TEST_PAUSE_AT", "").partition(":")
# A test that forgot to resume must not leave a process hanging for ever.
PAUSE_LIMIT_SECONDS = 60.0
# Set by gateway/child.py in the worker processes of serve: the pid of its `gateway serve`.
SERVE_PID = os.environ.get("GATEWAY_SERVE_PID", "")
# How subprocess reports a process that died of SIGKILL.
KILLED = -signal.SIGKILL


def crashpoint(name: str) -> None:
    """End the process at once, with no cleanup and no flush, when a test asked for this point."""
    global _passes_left
    if name == CRASH_AT:
        _passes_left -= 1
        if _passes_left > 0:
            return
        if SERVE_PID:
            # A worker process of `gateway serve`: a crash here takes the service down as a
            # power cut would, not just the child the parent would restart.
            os.kill(int(SERVE_PID), signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)


def pausepoint(name: str) -> None:
    """Wait here, holding whatever the process holds, until the test that asked for this point resumes it."""
    if name != PAUSE_AT:
        return
    folder = Path(PAUSE_FOLDER)
    (folder / "paused").touch()
    give_up = time.monotonic() + PAUSE_LIMIT_SECONDS
    while not (folder / "resume").exists() and time.monotonic() < give_up:
        time.sleep(0.01)
