"""Worker processes of `gateway serve`: started with the Config on stdin, they die with serve."""

from __future__ import annotations

import contextlib
import ctypes
import os
import pickle
import signal
import subprocess
import sys
from typing import IO, Any

from gateway.core import memory
from gateway.core.config import Config

PR_SET_PDEATHSIG = 1  # linux/prctl.h
SERVE_PID = "GATEWAY_SERVE_PID"


def spawn(module: str, config: Config, *args: str, stdout: int | None = None) -> subprocess.Popen[bytes]:
    """`python -m module args` with the Config as its first frame on stdin."""
    child = subprocess.Popen(
        [sys.executable, "-m", module, *args],
        stdin=subprocess.PIPE,
        stdout=stdout,
        env={**os.environ, SERVE_PID: str(os.getpid())},
    )
    assert child.stdin is not None
    write_frame(child.stdin, config)
    return child


def stop(child: subprocess.Popen[bytes], timeout: float) -> bool:
    """End-of-file on the child's stdin, then wait for it to finish; killed (False) after `timeout`."""
    if child.stdin is not None:
        with contextlib.suppress(OSError):
            child.stdin.close()
    try:
        child.wait(timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
        return False
    return True


def write_frame(stream: IO[bytes], value: Any) -> None:
    payload = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(len(payload).to_bytes(8, "big"))
    stream.write(payload)  # not joined to the length: a 24 MB message is copied once less
    stream.flush()


def read_frame(fd: int) -> Any:
    """One frame from a file descriptor; EOFError when the other side has gone."""
    size = int.from_bytes(_exactly(fd, 8), "big")
    return pickle.loads(_exactly(fd, size))


def _exactly(fd: int, count: int) -> bytearray:
    """`count` bytes read straight into one buffer, which pickle reads without a copy."""
    buffer = bytearray(count)
    view, done = memoryview(buffer), 0
    while done < count:
        got = os.readv(fd, [view[done : done + (1 << 20)]])
        if not got:
            raise EOFError("the other end closed the pipe")
        done += got
    view.release()
    return buffer


def start_child() -> Config:
    """In the child: die with the parent, then read the Config the parent sent."""
    memory.map_big_buffers()
    # SIGKILL us when `gateway serve` dies: a killed service never leaves a worker behind that
    # could act beside the next serve's workers (deliver a row twice, say).
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if str(os.getppid()) != os.environ.get(SERVE_PID, str(os.getppid())):
        os._exit(1)  # the parent died before the line above took effect
    try:
        config = read_frame(sys.stdin.fileno())
    except EOFError:
        raise SystemExit("parent closed the pipe before sending the config") from None
    if not isinstance(config, Config):
        raise SystemExit("expected a Config on stdin")
    return config
